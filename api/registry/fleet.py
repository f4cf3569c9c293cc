"""Agents and their devices in the registry, checked as the agent would check its config before a push.

A change is validated by the code the agent runs (the contract's ``validate_agent_config``: schema,
unique ids, unit id clashes on a line, profiles that load, the bus time an RS-485 line can carry),
so the API refuses exactly what the agent would, with every problem named; nothing is pushed then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import Agent, ConfigVersion, Device
from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig, AgentConfigError, Problem
from citygw.contract.agent_config_check import validate_agent_config

# The agent's broker and journal stay local to it; the check needs placeholders for them.
_LOCAL_SECTIONS = {"broker": {"url": "mqtt://agent.invalid"}, "journal": {"path": "journal.sqlite"}}


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


SETTINGS_SECTIONS = ("publish", "journal", "health")


def check_config(agent: Agent, devices: Sequence[dict[str, Any]]) -> AgentConfig:
    """The agent's config with ``devices``, or FleetProblems with everything the agent would refuse."""
    settings = agent.settings or {}
    if "path" in settings.get("journal", {}):
        raise FleetProblems(
            [Problem("journal.path", "the journal's path is the agent's own", "leave path out")]
        )
    raw: dict[str, Any] = {
        "agent_id": agent.id,
        "site": agent.site,
        **_LOCAL_SECTIONS,
        "lines": agent.lines,
        "devices": devices,
    }
    raw.update({section: settings[section] for section in SETTINGS_SECTIONS if section in settings})
    if "journal" in settings:
        raw["journal"] = {**settings["journal"], **_LOCAL_SECTIONS["journal"]}
    try:
        return validate_agent_config(raw, Path(f"registry:{agent.id}"))
    except AgentConfigError as exc:
        raise FleetProblems(exc.problems) from None


def desired_config(session: Session, agent: Agent, *, version: int, now_ms: int) -> wire.DesiredConfig:
    """What the agent should run: its lines and active devices, validated, as the ``config`` payload."""
    specs = [device.spec for device in active_devices(session, agent.id)]
    check_config(agent, specs)
    settings = agent.settings or {}
    return wire.DesiredConfig(
        agent=agent.id,
        version=version,
        issued_at=now_ms,
        site=agent.site,
        lines=agent.lines,
        devices=specs,
        publish=settings.get("publish"),
        journal=settings.get("journal"),
        health=settings.get("health"),
    )


def next_config_version(session: Session, agent_id: str) -> int:
    """The version after the agent's newest, with the agent's row locked until the session ends.

    On PostgreSQL the lock (``SELECT ... FOR UPDATE``) makes pushes to one agent wait for each other;
    SQLite has no row locks, so a push that commits first may take this version: the caller retries
    when ``UniqueConstraint(agent_id, version)`` refuses it.
    """
    session.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update())
    newest = session.scalars(
        select(ConfigVersion.version)
        .where(ConfigVersion.agent_id == agent_id)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()
    return (newest or 0) + 1
