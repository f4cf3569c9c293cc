"""What agents say on MQTT, applied to the registry: status, health, config state, command results."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import Agent, Command, ConfigVersion
from citygw import wire

UNASSIGNED_SITE = ""
"""Site of an agent heard on the broker before anybody registered it: only admins manage it."""


def _agent(session: Session, agent_id: str, now_ms: int) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        agent = Agent(id=agent_id, site=UNASSIGNED_SITE, lines=[], created_at=now_ms)
        session.add(agent)
    return agent


def apply_status(session: Session, status: wire.Status, *, now_ms: int) -> None:
    agent = _agent(session, status.agent, now_ms)
    agent.state = status.state.value
    agent.last_seen = now_ms
    if status.version is not None:
        agent.version = status.version
    if status.config_version is not None:
        agent.applied_config_version = status.config_version


def apply_health(session: Session, health: wire.Health, *, now_ms: int) -> None:
    agent = _agent(session, health.agent, now_ms)
    agent.last_seen = now_ms
    agent.journal_backlog = health.journal.backlog
    agent.journal_dropped = health.journal.dropped
    agent.device_health = {
        device: state.model_dump(mode="json", exclude_none=True) for device, state in health.devices.items()
    }


def apply_config_state(session: Session, state: wire.ConfigState, *, now_ms: int) -> ConfigVersion | None:
    agent = _agent(session, state.agent, now_ms)
    agent.last_seen = now_ms
    if state.state is wire.ConfigOutcome.APPLIED:
        agent.applied_config_version = state.version
    version = session.scalars(
        select(ConfigVersion).where(
            ConfigVersion.agent_id == state.agent, ConfigVersion.version == state.version
        )
    ).first()
    if version is not None:
        version.state = state.state.value
        version.state_at = state.ts
        version.reason = "; ".join(state.reasons) or None
    return version


def apply_command_result(session: Session, result: wire.CommandResult, *, now_ms: int) -> Command | None:
    command = session.get(Command, result.id)
    if command is None or command.agent_id != result.agent:
        return None
    command.status = result.outcome.value
    command.result_at = result.ts
    parts = [result.detail] if result.detail else []
    if result.level is not None:
        parts.append(f"level read back: {result.level} %")
    if result.read:
        parts.append("read at the device: " + ", ".join(f"{k}={v}" for k, v in sorted(result.read.items())))
    command.detail = "; ".join(parts) or None
    return command
