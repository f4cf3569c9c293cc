"""Street lighting: lamps lit, not lit and failed per cabinet from each lamp's status word (its bits
as the controller's profile names them: role lamp_status, flags), and whether the scheduled
switchings ran on time (the API's ``command`` series, api/recorder.py).
"""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, RoleField, catalogue
from firmware_bridge.roles import LAMP_FAULTS, LampBit, Role

UID = "citygw-street-lighting"
MEASUREMENT = "lighting"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'cabinet')}"
COMMANDS = "command"
# Switchings the API scheduled (at dusk/dawn or at a time), not an engineer's "now", per chosen cabinet.
SCHEDULED = f"""$timeFilter AND "scheduled"::tag =~ /^(sun|at)$/ AND {matches("cabinet", "cabinet")}"""
ON_TIME_S = 60  # a switching this late (or less) is on time
LATENESS_STEPS = ((None, OK), (ON_TIME_S, WARN), (300, BAD))
# Legend name → which ended switchings it counts.
SWITCHINGS = (
    ("on time", f""""outcome"::tag = 'done' AND "lateness_s"::field <= {ON_TIME_S}"""),
    ("late", f""""outcome"::tag = 'done' AND "lateness_s"::field > {ON_TIME_S}"""),
    ("failed", """"outcome"::tag != 'done'"""),
)


def _bit(status: str, mask: int) -> str:
    """1 when any bit of ``mask`` is set in ``status``, else 0 (for one bit: (s & m) / m)."""
    return f"({status} & {mask}) / {mask}"


def _lit(lamp: RoleField) -> str:
    return _bit(f'last("{lamp.field}")', lamp.bits(LampBit.LAMP_ON))


def _not_lit(lamp: RoleField) -> str:
    return f"(1 - {_lit(lamp)})"


def _failed(lamp: RoleField) -> str:
    # 1 when any failure bit is set: 1 - (1 - a)(1 - b)... over the failure bits.
    status = f'last("{lamp.field}")'
    bits = [lamp.bits(what) for what in LAMP_FAULTS if lamp.bits(what)]
    return "(1 - " + " * ".join(f"(1 - {_bit(status, bit)})" for bit in bits) + ")"


def _per_lamp(roles: RoleCatalogue, state: Callable[[RoleField], str], by_time: bool) -> str:
    """FROM sources: per lamp of every controller, 1 when its newest status is in ``state``, else 0."""
    group = 'time($__interval), "device" fill(none)' if by_time else '"device"'
    return ", ".join(
        f'(SELECT {state(lamp)} AS "lamps" FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY {group})'
        for channel in roles.channels(Role.LAMP_STATUS, MEASUREMENT)
        for lamp in roles.read(Role.LAMP_STATUS, MEASUREMENT, channel)
    )


def _switchings(name: str, condition: str, ref_id: str) -> InfluxQL:
    return (
        InfluxQL(
            f'SELECT count("command_id") AS "switchings" FROM "{COMMANDS}" WHERE {SCHEDULED} AND {condition} '
            'GROUP BY time($__interval), "cabinet" fill(none)'
        )
        .ref_id(ref_id)
        .alias(f"$tag_cabinet {name}")
    )


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()

    def of(wanted: dict[str, Wanted]) -> str:
        return sources(roles, MEASUREMENT, wanted, WHERE)

    circuits = f"""$timeFilter AND "circuit"::tag = 'street_lighting' AND {matches("district", "district")}"""
    return (
        city_dashboard(
            UID,
            "Street lighting",
            "Lamps from the DALI gateways in the lighting cabinets: lit, not lit, failed; DALI bus load; "
            "whether the switchings scheduled at dusk, dawn or a set time ran on time (written by the API, "
            "measurement command, when each command ends).",
            [
                tag_values("district", "District", MEASUREMENT, "district"),
                tag_values(
                    "cabinet", "Cabinet", MEASUREMENT, "device", where=matches("district", "district")
                ),
            ],
        )
        .with_panel(
            big_number(
                "Lamps lit",
                InfluxQL(f'SELECT sum("lamps") AS "lit" FROM {_per_lamp(roles, _lit, False)}'),
                unit="none",
            )
        )
        .with_panel(
            big_number(
                "Lamps not lit",
                InfluxQL(f'SELECT sum("lamps") AS "not_lit" FROM {_per_lamp(roles, _not_lit, False)}'),
                unit="none",
                steps=((None, OK), (1, WARN)),
                description="Off by schedule or not lit by a fault; compare with the schedule.",
            )
        )
        .with_panel(
            big_number(
                "Lamps failed",
                InfluxQL(f'SELECT sum("lamps") AS "failed" FROM {_per_lamp(roles, _failed, False)}'),
                unit="none",
                steps=((None, OK), (1, BAD)),
                description="A failure bit (lamp, ballast, power, limit) set in the lamp's status word.",
            )
        )
        .with_panel(
            big_number(
                "Cabinets with a gateway fault",
                InfluxQL(
                    'SELECT count("fault") AS "cabinets" FROM (SELECT last("fault") AS "fault" '
                    f'FROM {of({"fault": Role.ERROR_CODE})} GROUP BY "device") WHERE "fault"::field > 0'
                ),
                unit="none",
                steps=((None, OK), (1, BAD)),
            )
        )
        .with_panel(
            time_series(
                "Lamps lit per cabinet",
                [
                    InfluxQL(
                        f'SELECT sum("lamps") AS "lamps" FROM {_per_lamp(roles, _lit, True)} '
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="none",
                stacked=True,
                description="Lamps whose status word has the lamp-on bit, per lighting controller.",
            )
        )
        .with_panel(
            time_series(
                "DALI bus load",
                [
                    InfluxQL(
                        f'SELECT max("bus_load") AS "bus_load" FROM {of({"bus_load": Role.BUS_LOAD})} '
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="percent",
                steps=((None, OK), (70, WARN), (90, BAD)),
            )
        )
        .with_panel(
            time_series(
                "Energy of lighting circuits per interval",
                [
                    InfluxQL(
                        'SELECT non_negative_difference(last("energy")) AS "energy" FROM '
                        + sources(roles, "electricity", {"energy": Role.ACTIVE_ENERGY_IMPORT}, circuits)
                        + ' WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="kwatth",
                bars=True,
                stacked=True,
                description="Meters in lighting cabinets, tagged circuit: street_lighting in the agent's "
                "configuration.",
            )
        )
        .with_panel(
            rows(
                "Lamp commands the lamps did not follow",
                InfluxQL(
                    f'SELECT count("command_id") AS "commands" FROM "{COMMANDS}" WHERE $timeFilter AND '
                    f"""{matches("cabinet", "cabinet")} """
                    """AND ("outcome"::tag = 'done_but_dark' OR "outcome"::tag = 'failed') """
                    'GROUP BY "cabinet", "target", "outcome"'
                ),
                description="Per cabinet and target, the switch and dim commands after which the agent read "
                "the lamp and found it dark although it was asked to light (done_but_dark: a lamp or "
                "ballast fault, or level 0) or not at the level asked (failed). The gateway's brightness "
                "registers are write-only: the set point is known only from the commands.",
                column_steps={"commands": ((None, OK), (1, WARN))},
                width=12,
            )
        )
        .with_panel(
            time_series(
                "Scheduled switchings",
                [
                    _switchings(name, condition, chr(ord("A") + i))
                    for i, (name, condition) in enumerate(SWITCHINGS)
                ],
                unit="none",
                bars=True,
                stacked=True,
                description=f"Switchings scheduled at dusk, dawn or a set time, by how they ended: on time "
                f"(ran at most {ON_TIME_S} s after they were due), late, or failed (the controller failed or "
                "refused, or the command expired before it ran). Counted at their due time.",
            )
        )
        .with_panel(
            rows(
                "Schedule adherence per cabinet",
                InfluxQL(
                    'SELECT count("command_id") AS "switchings", mean("lateness_s") AS "mean_lateness", '
                    f'max("lateness_s") AS "worst_lateness" FROM "{COMMANDS}" WHERE {SCHEDULED} '
                    'GROUP BY "cabinet", "outcome"'
                ),
                description="Scheduled switchings in the time range per cabinet and outcome (done, failed, "
                "refused, expired); lateness: when the controller ran the command minus when it was due. "
                "Each command: GET /v1/agents/{agent}/commands.",
                units={"mean_lateness": "s", "worst_lateness": "s"},
                column_steps={"worst_lateness": LATENESS_STEPS},
                width=12,
            )
        )
        .with_panel(
            rows(
                "Cabinets",
                InfluxQL(
                    'SELECT last("bus_status") AS "bus_status", last("bus_load") AS "bus_load", '
                    'last("fault") AS "fault" FROM '
                    + of({"bus_status": Role.BUS_STATUS, "bus_load": Role.BUS_LOAD, "fault": Role.ERROR_CODE})
                    + ' GROUP BY "district", "device"'
                ),
                units={"bus_load": "percent"},
                column_steps={
                    "bus_status": ((None, OK), (1, BAD)),
                    "fault": ((None, OK), (1, BAD)),
                },
            )
        )
    )
