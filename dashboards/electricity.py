"""Electricity: power and consumption per district and per meter, every meter model's fields by role."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-electricity"
MEASUREMENT = "electricity"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'meter')}"
# EN 50160: 230 V ± 10 %.
VOLTAGE_STEPS = ((None, BAD), (207.0, OK), (253.0, BAD))


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()

    def of(wanted: dict[str, Wanted]) -> str:
        return sources(roles, MEASUREMENT, wanted, WHERE)

    # Energy per meter per interval: the growth of the import counter (a reset counts as nothing).
    consumption = (
        f'SELECT non_negative_difference(last("kwh")) AS "kwh" FROM {of({"kwh": Role.ACTIVE_ENERGY_IMPORT})} '
        'WHERE $timeFilter GROUP BY time($__interval), "district", "device" fill(none)'
    )
    phases: dict[str, Wanted] = {"voltage": Role.VOLTAGE}
    phases |= {channel: (Role.VOLTAGE, channel) for channel in roles.channels(Role.VOLTAGE, MEASUREMENT)}
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
                    'SELECT sum("power") AS "active_power" FROM (SELECT last("power") AS "power" '
                    f'FROM {of({"power": Role.ACTIVE_POWER})} GROUP BY "device")'
                ),
                unit="watt",
                description="Sum of the newest total active power of the selected meters.",
            )
        )
        .with_panel(
            big_number(
                "Consumption in the time range",
                InfluxQL(f'SELECT sum("kwh") AS "consumption" FROM ({consumption})'),
                unit="kwatth",
            )
        )
        .with_panel(
            time_series(
                "Power per district",
                [
                    InfluxQL(
                        'SELECT sum("power") AS "active_power" FROM (SELECT mean("power") AS "power" '
                        f"FROM {of({'power': Role.ACTIVE_POWER})} WHERE $timeFilter "
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
                        f'SELECT sum("kwh") AS "consumption" FROM ({consumption}) '
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
                        "SELECT " + ", ".join(f'mean("{name}") AS "{name}"' for name in phases) + " "
                        f'FROM {of(phases)} WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
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
                        'SELECT mean("power_factor") AS "power_factor" '
                        f"FROM {of({'power_factor': Role.POWER_FACTOR})} WHERE $timeFilter "
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
                    'SELECT last("power") AS "power", last("import_energy") AS "import_energy", '
                    'last("frequency") AS "frequency" FROM '
                    + of(
                        {
                            "power": Role.ACTIVE_POWER,
                            "import_energy": Role.ACTIVE_ENERGY_IMPORT,
                            "frequency": Role.FREQUENCY,
                        }
                    )
                    + ' GROUP BY "district", "device"'
                ),
                units={"power": "watt", "import_energy": "kwatth", "frequency": "hertz"},
                column_steps={"frequency": ((None, BAD), (49.8, OK), (50.2, BAD))},
            )
        )
    )
