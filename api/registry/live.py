"""What agents say on MQTT, applied to the registry: status, health, config state, command results,
update results (audited: a release applied, refused or rolled back is a change to the fleet)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry import audit
from api.registry.models import Agent, Command, ConfigVersion, Device, RolloutAgent
from citygw.contract import wire

UNASSIGNED_SITE = ""
"""Site of an agent heard on the broker before anybody registered it: only admins manage it."""

UNKNOWN_DEVICES_KEPT = 100
"""Devices of one health message kept beyond the agent's config (registered, or in its applied version):
enough to show what a locally configured agent runs, too few for one message to flood the registry."""


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


def configured_devices(session: Session, agent_id: str) -> set[str]:
    """Device ids the agent's config names: its active registered devices and its last applied version's."""
    active = session.scalars(
        select(Device.device_id).where(Device.agent_id == agent_id, Device.retired_at.is_(None))
    )
    applied = session.scalars(
        select(ConfigVersion.body)
        .where(ConfigVersion.agent_id == agent_id, ConfigVersion.state == wire.ConfigOutcome.APPLIED.value)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()
    return set(active) | {str(device.get("id")) for device in (applied or {}).get("devices", [])}


def apply_health(session: Session, health: wire.Health, *, now_ms: int) -> int:
    """Record the agent's health; returns how many devices were left out (beyond its config and the cap).

    Devices the agent's config names are all kept; of the others the first ``UNKNOWN_DEVICES_KEPT``
    by id, so a message naming thousands of devices writes a bounded row.
    """
    agent = _agent(session, health.agent, now_ms)
    agent.last_seen = now_ms
    agent.journal_backlog = health.journal.backlog
    agent.journal_dropped = health.journal.dropped
    configured = configured_devices(session, health.agent)
    unknown = sorted(device for device in health.devices if device not in configured)
    left_out = set(unknown[UNKNOWN_DEVICES_KEPT:])
    agent.device_health = {
        device: state.model_dump(mode="json", exclude_none=True)
        for device, state in health.devices.items()
        if device not in left_out
    }
    return len(left_out)


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


_UPDATE_RESULTS: dict[wire.UpdateOutcome, audit.Result] = {
    wire.UpdateOutcome.STAGED: "ok",
    wire.UpdateOutcome.APPLIED: "ok",
    wire.UpdateOutcome.REFUSED: "refused",
    wire.UpdateOutcome.FAILED: "failed",
    wire.UpdateOutcome.ROLLED_BACK: "failed",
}


def apply_update_state(session: Session, state: wire.UpdateState, *, now_ms: int) -> bool:
    """Record what the agent did with a rollout; audited once per change (a retained repeat is not one).

    Returns whether anything changed.
    """
    agent = _agent(session, state.agent, now_ms)
    agent.last_seen = now_ms
    reason = "; ".join(state.reasons) or None
    if (agent.update_rollout, agent.update_state) == (state.rollout, state.state.value):
        return False
    if agent.update_rollout is not None and state.rollout < agent.update_rollout:
        return False  # an older rollout's word, heard late: the newer one stands
    agent.update_rollout, agent.update_version = state.rollout, state.version
    agent.update_state, agent.update_at, agent.update_reason = state.state.value, state.ts, reason
    if state.running is not None:
        agent.version = state.running
    member = session.scalars(
        select(RolloutAgent).where(
            RolloutAgent.rollout_id == state.rollout, RolloutAgent.agent_id == state.agent
        )
    ).first()
    if member is not None:
        member.state, member.state_at, member.reason = state.state.value, state.ts, reason
    audit.record(
        session,
        ts_ms=now_ms,
        actor=f"agent:{state.agent}",
        role="agent",
        action="update.result",
        target=f"agent:{state.agent}",
        after={"rollout": state.rollout, "version": state.version, "state": state.state.value},
        result=_UPDATE_RESULTS[state.state],
        detail=reason,
    )
    return True
