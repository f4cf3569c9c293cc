"""System health: agents and their journals, devices reporting, dead letters.

Agents' ``health`` messages are expected in the ``agent_health`` measurement, one point per
message: tag ``agent``; fields ``journal_backlog``, ``journal_dropped``, ``devices`` and
``devices_failing`` (integers). The collector's own lag and write latency are Prometheus
metrics (``/metrics``), not InfluxDB data; see docs/deploy.md.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series

UID = "citygw-system-health"
AGENT_HEALTH = "agent_health"
DEAD_LETTER = "dead_letter"
AGENTS = f"{matches('agent', 'agent')}"
# A field every point of the measurement carries, to count its points and devices.
ALWAYS_PRESENT = {
    "air_quality": "pm25",
    "electricity": "total_power",
    "water": "flow_rate",
    "lighting": "bus_load",
    "vehicle_position": "lat",
    "validator": "taps_resident",
}


def dashboard() -> Dashboard:
    readings = [
        InfluxQL(
            f'SELECT count("{field}") AS "readings" FROM "{measurement}" WHERE $timeFilter AND {AGENTS} '
            "GROUP BY time($__interval) fill(0)"
        )
        .ref_id(chr(ord("A") + i))
        .alias(measurement)
        for i, (measurement, field) in enumerate(ALWAYS_PRESENT.items())
    ]
    devices = [
        InfluxQL(
            f'SELECT count("value") AS "devices" FROM (SELECT last("{field}") AS "value" '
            f'FROM "{measurement}" WHERE $timeFilter AND {AGENTS} GROUP BY "device")'
        )
        .ref_id(chr(ord("A") + i))
        .alias(measurement)
        for i, (measurement, field) in enumerate(ALWAYS_PRESENT.items())
    ]
    return (
        city_dashboard(
            UID,
            "System health",
            "Edge agents, their journals and devices, what reaches the store, what the collector refused.",
            [tag_values("agent", "Agent", AGENT_HEALTH, "agent")],
        )
        .with_panel(
            big_number(
                "Agents online",
                InfluxQL(
                    'SELECT count("backlog") AS "agents" FROM (SELECT last("journal_backlog") AS "backlog" '
                    f'FROM "{AGENT_HEALTH}" WHERE time > now() - 5m AND {AGENTS} GROUP BY "agent")'
                ),
                unit="none",
                steps=((None, BAD), (1, OK)),
                description="Agents that sent a health message in the last 5 minutes.",
            )
        )
        .with_panel(
            big_number(
                "Readings waiting in journals",
                InfluxQL(
                    'SELECT sum("backlog") AS "backlog" FROM (SELECT last("journal_backlog") AS "backlog" '
                    f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} GROUP BY "agent")'
                ),
                unit="none",
                steps=((None, OK), (1000, WARN), (100_000, BAD)),
            )
        )
        .with_panel(
            big_number(
                "Devices failing",
                InfluxQL(
                    'SELECT sum("failing") AS "failing" FROM (SELECT last("devices_failing") AS "failing" '
                    f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} GROUP BY "agent")'
                ),
                unit="none",
                steps=((None, OK), (1, BAD)),
            )
        )
        .with_panel(
            big_number(
                "Dead letters",
                InfluxQL(f'SELECT count("topic") AS "dead_letters" FROM "{DEAD_LETTER}" WHERE $timeFilter'),
                unit="none",
                steps=((None, OK), (1, WARN)),
                description="Payloads and points the collector refused in the time range.",
            )
        )
        .with_panel(
            time_series(
                "Journal backlog per agent",
                [
                    InfluxQL(
                        f'SELECT max("journal_backlog") AS "backlog" FROM "{AGENT_HEALTH}" '
                        f'WHERE $timeFilter AND {AGENTS} GROUP BY time($__interval), "agent" fill(none)'
                    ).alias("$tag_agent")
                ],
                unit="none",
                description="Readings on the agent's disk not yet acknowledged by the broker.",
            )
        )
        .with_panel(
            time_series(
                "Readings dropped by journal quota",
                [
                    InfluxQL(
                        f'SELECT non_negative_difference(last("journal_dropped")) AS "dropped" '
                        f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} '
                        'GROUP BY time($__interval), "agent" fill(none)'
                    ).alias("$tag_agent")
                ],
                unit="none",
                bars=True,
                steps=((None, OK), (1, BAD)),
            )
        )
        .with_panel(time_series("Readings stored per interval", readings, unit="none", stacked=True))
        .with_panel(time_series("Devices reporting", devices, unit="none", bars=True))
        .with_panel(
            time_series(
                "Dead letters by reason",
                [
                    InfluxQL(
                        f'SELECT count("topic") AS "dead_letters" FROM "{DEAD_LETTER}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "reason" fill(none)'
                    ).alias("$tag_reason")
                ],
                unit="none",
                bars=True,
                stacked=True,
            )
        )
        .with_panel(
            rows(
                "Devices failing per agent",
                InfluxQL(
                    'SELECT last("devices") AS "devices", last("devices_failing") AS "failing", '
                    'last("journal_backlog") AS "backlog", last("journal_dropped") AS "dropped" '
                    f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} GROUP BY "agent"'
                ),
                column_steps={"failing": ((None, OK), (1, BAD)), "dropped": ((None, OK), (1, BAD))},
                width=12,
            )
        )
        .with_panel(
            rows(
                "Latest dead letters",
                InfluxQL(
                    'SELECT "topic" AS "topic", "error" AS "error" '
                    f'FROM "{DEAD_LETTER}" WHERE $timeFilter GROUP BY "reason", "agent" '
                    "ORDER BY time DESC LIMIT 50"
                ),
                width=12,
            )
        )
    )
