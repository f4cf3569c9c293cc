"""Electricity: power and consumption per district and per meter (Eastron SDM120 / SDM630 fields)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series

UID = "citygw-electricity"
MEASUREMENT = "electricity"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'meter')}"
# Energy per meter per interval: the growth of the import counter (a reset counts as nothing).
CONSUMPTION = (
    f'SELECT non_negative_difference(last("import_energy_kwh")) AS "kwh" FROM "{MEASUREMENT}" '
    f'WHERE {WHERE} GROUP BY time($__interval), "district", "device" fill(none)'
)
# EN 50160: 230 V ± 10 %.
VOLTAGE_STEPS = ((None, BAD), (207.0, OK), (253.0, BAD))


def dashboard() -> Dashboard:
    return (
        city_dashboard(
            UID,
            "Electricity",
            "Active power and energy from the city's meters, per district and per meter.",
            [
                tag_values("district", "District", MEASUREMENT, "district"),
                tag_values("meter", "Meter", MEASUREMENT, "device", where=matches("district", "district")),
            ],
        )
        .with_panel(
            big_number(
                "Power now",
                InfluxQL(
                    'SELECT sum("total_power") AS "total_power" FROM (SELECT last("total_power") AS '
                    f'"total_power" FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY "device")'
                ),
                unit="watt",
                description="Sum of the newest total active power of the selected meters.",
            )
        )
        .with_panel(
            big_number(
                "Consumption in the time range",
                InfluxQL(f'SELECT sum("kwh") AS "consumption" FROM ({CONSUMPTION})'),
                unit="kwatth",
            )
        )
        .with_panel(
            time_series(
                "Power per district",
                [
                    InfluxQL(
                        'SELECT sum("power") AS "total_power" FROM (SELECT mean("total_power") AS "power" '
                        f'FROM "{MEASUREMENT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "district", "device" fill(none)) '
                        'WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)'
                    ).alias("$tag_district")
                ],
                unit="watt",
                stacked=True,
            )
        )
        .with_panel(
            time_series(
                "Consumption per interval, per district",
                [
                    InfluxQL(
                        f'SELECT sum("kwh") AS "consumption" FROM ({CONSUMPTION}) '
                        'WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)'
                    ).alias("$tag_district")
                ],
                unit="kwatth",
                bars=True,
                stacked=True,
                description="Growth of the meters' import energy counters in each interval.",
            )
        )
        .with_panel(
            time_series(
                "Voltage",
                [
                    InfluxQL(
                        'SELECT mean("voltage") AS "voltage", mean("voltage_l1") AS "l1", '
                        'mean("voltage_l2") AS "l2", mean("voltage_l3") AS "l3" '
                        f'FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device $col")
                ],
                unit="volt",
                steps=VOLTAGE_STEPS,
                description="Phase voltages; outside 207 to 253 V (EN 50160) is red.",
            )
        )
        .with_panel(
            time_series(
                "Power factor",
                [
                    InfluxQL(
                        f'SELECT mean("power_factor") AS "power_factor" FROM "{MEASUREMENT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="none",
                steps=((None, BAD), (0.85, WARN), (0.92, OK)),
            )
        )
        .with_panel(
            rows(
                "Meters",
                InfluxQL(
                    'SELECT last("total_power") AS "power", last("import_energy_kwh") AS "import_energy", '
                    f'last("frequency") AS "frequency" FROM "{MEASUREMENT}" WHERE {WHERE} '
                    'GROUP BY "district", "device"'
                ),
                units={"power": "watt", "import_energy": "kwatth", "frequency": "hertz"},
                column_steps={"frequency": ((None, BAD), (49.8, OK), (50.2, BAD))},
            )
        )
    )
