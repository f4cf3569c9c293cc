"""Agents and their devices in the registry, checked as the agent would check its config before a push.

A change is validated against the edge agent's own rules (``edge.config``: schema, unique ids,
unit id clashes on a line, profiles that load) and against what an RS-485 line can carry (the
poll plan's wire time per second), and refused with every problem named; nothing is pushed then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import Agent, ConfigVersion, Device
from citygw import wire
from edge.config import AgentConfig, Problem, RtuLine, check_references
from firmware_bridge.planner import fewest_reads
from firmware_bridge.profile import Profile, load_profile
from firmware_bridge.timing import SerialLine

# The agent's broker and journal stay local to it; the check needs placeholders for them.
_LOCAL_SECTIONS = {"broker": {"url": "mqtt://agent.invalid"}, "journal": {"path": "journal.sqlite"}}
# Device turnaround and guard time per Modbus transaction on a serial line, seconds (typical meters).
TURNAROUND_S = 0.02
# Share of a line's time the poll plan may take; the rest absorbs retries and commands.
LINE_BUDGET = 0.8


class FleetProblems(ValueError):
    """A change the agent would refuse, or a line could not carry; ``problems`` says each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def active_devices(session: Session, agent_id: str) -> list[Device]:
    query = (
        select(Device)
        .where(Device.agent_id == agent_id, Device.retired_at.is_(None))
        .order_by(Device.created_at, Device.id)
    )
    return list(session.scalars(query))


def _field(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(config)"


def _line_load(config: AgentConfig, profiles: dict[str, Profile]) -> list[Problem]:
    """Serial lines whose poll plan needs more wire time per second than LINE_BUDGET of it."""
    problems = []
    for line in config.lines:
        if not isinstance(line, RtuLine):
            continue
        serial = SerialLine(line.baudrate, line.parity, line.stopbits, line.bytesize)
        busy = 0.0
        for device in config.devices_on(line.id):
            profile = profiles.get(device.profile or "")
            if profile is not None:
                reads = fewest_reads(profile)
                busy += sum(serial.read_time(read) + TURNAROUND_S for read in reads) / device.poll_s
        if busy > LINE_BUDGET:
            problems.append(
                Problem(
                    f"lines[{line.id}]",
                    f"the poll plan needs {busy:.2f} s of every second at {line.baudrate} baud"
                    f" (at most {LINE_BUDGET:.2f})",
                    "poll less often (poll_s), move devices to another line, or raise the baud rate",
                )
            )
    return problems


def check_config(agent: Agent, devices: Sequence[dict[str, Any]]) -> AgentConfig:
    """The agent's config with ``devices``, or FleetProblems with everything that is wrong."""
    raw = {
        "agent_id": agent.id,
        "site": agent.site,
        **_LOCAL_SECTIONS,
        "lines": agent.lines,
        "devices": devices,
    }
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise FleetProblems(
            [Problem(_field(error["loc"]), error["msg"], "correct the value") for error in exc.errors()]
        ) from None
    profiles: dict[str, Profile] = {}

    def load(name: str) -> Profile:
        profiles[name] = load_profile(name)
        return profiles[name]

    problems = check_references(config, load)
    problems += _line_load(config, profiles)
    if problems:
        raise FleetProblems(problems)
    return config


def desired_config(session: Session, agent: Agent, *, version: int, now_ms: int) -> wire.DesiredConfig:
    """What the agent should run: its lines and active devices, validated, as the ``config`` payload."""
    specs = [device.spec for device in active_devices(session, agent.id)]
    check_config(agent, specs)
    return wire.DesiredConfig(
        agent=agent.id, version=version, issued_at=now_ms, site=agent.site, lines=agent.lines, devices=specs
    )


def next_config_version(session: Session, agent_id: str) -> int:
    newest = session.scalars(
        select(ConfigVersion.version)
        .where(ConfigVersion.agent_id == agent_id)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()
    return (newest or 0) + 1
