"""Waste: how full each street bin is and which are due for collection (fill level at or above the
threshold chosen on the board), every sensor model's fields by role (fill_level in %, alarms by channel)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, choice, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-waste"
MEASUREMENT = "waste_bin"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'bin')}"
# A bin this full (%) is due for collection; the board's "threshold" variable chooses among these.
DUE_CHOICES = (60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)
DUE_PERCENT = 80.0
FILL_STEPS = ((None, OK), (DUE_PERCENT - 20, WARN), (DUE_PERCENT, BAD))


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()

    def of(wanted: dict[str, Wanted]) -> str:
        return sources(roles, MEASUREMENT, wanted, WHERE)

    fill = of({"fill_level": Role.FILL_LEVEL})
    newest_fill = f'SELECT last("fill_level") AS "fill_level" FROM {fill} GROUP BY "district", "device"'
    due = '"fill_level"::field >= $threshold'
    return (
        city_dashboard(
            UID,
            "Waste",
            "Fill level of the street waste bins from their ultrasonic sensors, and the bins due for "
            "collection: newest fill level at or above the chosen threshold.",
            [
                tag_values("district", "District", MEASUREMENT, "district"),
                tag_values("bin", "Bin", MEASUREMENT, "device", where=matches("district", "district")),
                choice("threshold", "Due at fill level (%)", DUE_CHOICES, DUE_PERCENT),
            ],
        )
        .with_panel(
            big_number(
                "Bins due for collection",
                InfluxQL(f'SELECT count("fill_level") AS "bins" FROM ({newest_fill}) WHERE {due}'),
                unit="none",
                steps=((None, OK), (1, WARN)),
                description="Bins whose newest fill level is at or above the threshold chosen above.",
            )
        )
        .with_panel(
            big_number(
                "Bins reporting",
                InfluxQL(f'SELECT count("fill_level") AS "bins" FROM ({newest_fill})'),
                unit="none",
            )
        )
        .with_panel(
            big_number(
                "Bins with an alarm",
                InfluxQL(
                    'SELECT count("alarm") AS "bins" FROM (SELECT max("alarm") AS "alarm" FROM '
                    f'{_alarms(roles)} GROUP BY "device") WHERE "alarm"::field > 0'
                ),
                unit="none",
                steps=((None, OK), (1, BAD)),
                description="Bins that raised an alarm flag (role alarm, any channel: knocked over, fire) "
                "in the time range.",
            )
        )
        .with_panel(
            time_series(
                "Fill level per bin",
                [
                    InfluxQL(
                        f'SELECT mean("fill_level") AS "fill_level" FROM {fill} '
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="percent",
                steps=FILL_STEPS,
                width=24,
            )
        )
        .with_panel(
            rows(
                "Bins to collect",
                InfluxQL(
                    f'SELECT "fill_level" AS "fill_level" FROM ({newest_fill}) WHERE {due} GROUP BY '
                    '"district", "device"'
                ),
                description="Per bin at or above the threshold: its newest fill level.",
                units={"fill_level": "percent"},
                column_steps={"fill_level": FILL_STEPS},
                width=12,
            )
        )
        .with_panel(
            rows(
                "Bins",
                InfluxQL(
                    'SELECT last("fill_level") AS "fill_level", last("temperature") AS "temperature", '
                    'last("battery_voltage") AS "battery_voltage" FROM '
                    + of(
                        {
                            "fill_level": Role.FILL_LEVEL,
                            "temperature": Role.TEMPERATURE,
                            "battery_voltage": Role.BATTERY_VOLTAGE,
                        }
                    )
                    + ' GROUP BY "district", "device"'
                ),
                units={"fill_level": "percent", "temperature": "celsius", "battery_voltage": "volt"},
                column_steps={
                    "fill_level": FILL_STEPS,
                    "battery_voltage": ((None, BAD), (3.3, WARN), (3.5, OK)),
                },
                width=12,
            )
        )
    )


def _alarms(roles: RoleCatalogue) -> str:
    """FROM sources: every alarm flag of the bins' profiles (each channel: tilt, fire), named ``alarm``."""
    channels = roles.channels(Role.ALARM, MEASUREMENT)
    if not channels:
        raise ValueError(f"no profile gives {MEASUREMENT} an alarm channel")
    return ", ".join(sources(roles, MEASUREMENT, {"alarm": (Role.ALARM, c)}, WHERE) for c in channels)
