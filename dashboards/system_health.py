"""System health: agents online, their journals and devices, what is stored, dead letters.

Reads ``agent_health`` as the collector writes it (collector/health.py, collector/README.md):
per agent (tag ``agent``) ``journal_backlog``, ``journal_dropped``, ``devices_total``,
``devices_failing`` at each health message and ``online`` at each status message; per device
(tags ``agent``, ``device``) ``state``, ``ok``, ``quarantined``, ``failures``, ``last_ok_age_s``,
``last_published_age_s``, ``suppressed``.
The collector's own lag and write latency are Prometheus metrics (``/metrics``), not InfluxDB
data; see docs/deploy.md.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from collector.dead_letter import DEAD_LETTER
from collector.health import AGENT_HEALTH
from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-system-health"
AGENTS = f"{matches('agent', 'agent')}"
# What every reading of the measurement carries (a fast-polled role), to count its points and devices.
ALWAYS_PRESENT: dict[str, Wanted] = {
    "air_quality": Role.PM2_5,
    "electricity": Role.ACTIVE_POWER,
    "water": Role.FLOW_RATE,
    "lighting": Role.BUS_LOAD,
    "vehicle_position": "lat",  # the wire contract's
    "validator": (Role.TAPS, "resident"),
}


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()
    chosen = {
        measurement: sources(roles, measurement, {"value": wanted}, f"$timeFilter AND {AGENTS}")
        for measurement, wanted in ALWAYS_PRESENT.items()
    }
    readings = [
        InfluxQL(
            f'SELECT count("value") AS "readings" FROM {source} WHERE $timeFilter '
            "GROUP BY time($__interval) fill(0)"
        )
        .ref_id(chr(ord("A") + i))
        .alias(measurement)
        for i, (measurement, source) in enumerate(chosen.items())
    ]
    devices = [
        InfluxQL(
            f'SELECT count("value") AS "devices" FROM (SELECT last("value") AS "value" '
            f'FROM {source} GROUP BY "device")'
        )
        .ref_id(chr(ord("A") + i))
        .alias(measurement)
        for i, (measurement, source) in enumerate(chosen.items())
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
                    'SELECT sum("online") AS "agents" FROM (SELECT last("online") AS "online" '
                    f'FROM "{AGENT_HEALTH}" WHERE time > now() - 7d AND {AGENTS} GROUP BY "agent")'
                ),
                unit="none",
                steps=((None, BAD), (1, OK)),
                description="Agents whose latest status (birth message or last will, as the broker "
                "delivered it) in the last 7 days says online. Stored when it changes and at every "
                "collector start, hence the long look-back, independent of the time range.",
            )
        )
        .with_panel(
            big_number(
                "Agents sending health",
                InfluxQL(
                    'SELECT count("backlog") AS "agents" FROM (SELECT last("journal_backlog") AS "backlog" '
                    f'FROM "{AGENT_HEALTH}" WHERE time > now() - 5m AND {AGENTS} GROUP BY "agent")'
                ),
                unit="none",
                steps=((None, BAD), (1, OK)),
                description="Agents that sent a health message in the last 5 minutes "
                "(every 10 s by default).",
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
                "Devices failing per agent",
                [
                    InfluxQL(
                        f'SELECT max("devices_failing") AS "failing" FROM "{AGENT_HEALTH}" '
                        f'WHERE $timeFilter AND {AGENTS} GROUP BY time($__interval), "agent" fill(none)'
                    ).alias("$tag_agent")
                ],
                unit="none",
                steps=((None, OK), (1, BAD)),
                description="Devices whose last read failed "
                "(timeout, Modbus exception, CRC, decode, no fix).",
            )
        )
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
                "Agents",
                InfluxQL(
                    'SELECT last("online") AS "online", last("devices_total") AS "devices", '
                    'last("devices_failing") AS "failing", last("journal_backlog") AS "backlog", '
                    'last("journal_dropped") AS "dropped" '
                    f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} GROUP BY "agent"'
                ),
                description="Latest values in the time range; online is empty when no status came in it.",
                column_steps={
                    "online": ((None, BAD), (1, OK)),
                    "failing": ((None, OK), (1, BAD)),
                    "dropped": ((None, OK), (1, BAD)),
                },
                width=12,
            )
        )
        .with_panel(
            rows(
                "Devices",
                InfluxQL(
                    'SELECT last("state") AS "state", last("ok") AS "ok", '
                    'last("quarantined") AS "quarantined", last("failures") AS "failures", '
                    'last("last_ok_age_s") AS "last_ok_age", '
                    'last("last_published_age_s") AS "published_age", last("suppressed") AS "suppressed" '
                    f'FROM "{AGENT_HEALTH}" WHERE $timeFilter AND {AGENTS} GROUP BY "agent", "device"'
                ),
                description="Each device's latest health: state of the last read, failures since the agent "
                "started, time since its last good read and since its newest published reading at that "
                "moment, good reads not published (reporting by exception). A steady device: a recent read, "
                "an older publication (at most its heartbeat_s); a silent one: no recent read. Quarantined "
                "devices are tried once per backoff period.",
                units={"last_ok_age": "s", "published_age": "s"},
                column_steps={
                    "ok": ((None, BAD), (1, OK)),
                    "quarantined": ((None, OK), (1, WARN)),
                    "last_ok_age": ((None, OK), (300, WARN), (3600, BAD)),
                    # heartbeat_s is at most 3600 s (agent_config.MAX_HEARTBEAT_S), plus a poll.
                    "published_age": ((None, OK), (3900, WARN)),
                },
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
