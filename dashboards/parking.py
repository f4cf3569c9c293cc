"""Parking: bays taken and free per zone from the in-ground bay sensors (role occupied, a boolean), and
the sensors gone quiet. A bay's zone is its ``zone`` tag, set per device in the agent's configuration."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.by_role import sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-parking"
MEASUREMENT = "parking"
ZONE = "zone"
WHERE = f"$timeFilter AND {matches(ZONE, 'zone')} AND {matches('device', 'bay')}"
STATES = (("occupied", "true"), ("free", "false"))


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()
    bays = sources(roles, MEASUREMENT, {"occupied": Role.OCCUPIED}, WHERE)

    def now(state: str) -> str:
        """Bays whose newest reading is ``state`` (true: taken), per zone."""
        return (
            f'SELECT count("occupied") AS "bays" FROM (SELECT last("occupied") AS "occupied" FROM {bays} '
            f'GROUP BY "{ZONE}", "device") WHERE "occupied"::field = {state}'
        )

    def per_interval(name: str, state: str, ref_id: str) -> InfluxQL:
        return (
            InfluxQL(
                f'SELECT count("occupied") AS "bays" FROM (SELECT last("occupied") AS "occupied" FROM {bays} '
                f'GROUP BY time($__interval), "{ZONE}", "device" fill(none)) WHERE $timeFilter AND '
                f'"occupied"::field = {state} GROUP BY time($__interval), "{ZONE}" fill(none)'
            )
            .ref_id(ref_id)
            .alias(f"$tag_{ZONE} {name}")
        )

    return (
        city_dashboard(
            UID,
            "Parking",
            "Occupancy of the sensed parking bays per zone (the bay's zone tag), and the bay sensors that "
            "stopped reporting.",
            [
                tag_values("zone", "Zone", MEASUREMENT, ZONE),
                tag_values("bay", "Bay", MEASUREMENT, "device", where=matches(ZONE, "zone")),
            ],
        )
        .with_panel(
            big_number("Bays occupied", InfluxQL(now("true")), unit="none", steps=((None, OK),), width=8)
        )
        .with_panel(
            big_number(
                "Bays free",
                InfluxQL(now("false")),
                unit="none",
                steps=((None, BAD), (1, WARN), (3, OK)),
                width=8,
            )
        )
        .with_panel(
            rows(
                "Occupied bays per zone",
                InfluxQL(now("true") + f' GROUP BY "{ZONE}"'),
                description="Per zone: the bays taken now (their newest reading); a zone with none taken is "
                "not listed (InfluxQL does no arithmetic on a boolean: free bays per zone are in the panel "
                "below).",
                width=8,
                height=5,
            )
        )
        .with_panel(
            time_series(
                "Bays occupied and free per zone",
                [per_interval(name, state, chr(ord("A") + i)) for i, (name, state) in enumerate(STATES)],
                unit="none",
                bars=True,
                stacked=True,
                width=24,
                description="Per zone and interval, the bays whose last reading in the interval was taken, "
                "and those free.",
            )
        )
        .with_panel(
            rows(
                "Bays",
                InfluxQL(
                    'SELECT last("occupied") AS "occupied", last("battery_voltage") AS "battery_voltage" '
                    "FROM "
                    + sources(
                        roles,
                        MEASUREMENT,
                        {"occupied": Role.OCCUPIED, "battery_voltage": Role.BATTERY_VOLTAGE},
                        WHERE,
                    )
                    + f' GROUP BY "{ZONE}", "device"'
                ),
                description="Each bay's newest state; a sensor that stopped reporting raises the "
                "parking_sensor_silent alert.",
                units={"battery_voltage": "volt"},
                column_steps={"battery_voltage": ((None, BAD), (3.3, WARN), (3.5, OK))},
            )
        )
    )
