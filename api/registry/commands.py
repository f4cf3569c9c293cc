"""Commands in the registry: checked, scheduled, sent when due, ended by the agent's result.

Lighting commands (on, off, dim a lamp, group or cabinet) go to lighting controllers; ``set_field``
(a LoRaWAN downlink, a Modbus register write) to any device whose profile says the field is settable
(``firmware_bridge.settable``, the check the agent makes too). A set_field command has no target:
its ``target`` column holds ``{}``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.database import Registry
from api.registry.models import Command
from citygw.contract import wire

log = logging.getLogger(__name__)

# Lighting controllers are the devices that take commands; a profile of another kind refuses them.
COMMANDABLE_MEASUREMENTS = frozenset({"lighting"})
GROUP_ADDRESSES = range(16)
LAMP_ADDRESSES = range(64)


def check_command(
    target: wire.CommandTarget | None,
    action: wire.CommandAction,
    level: int | None,
    field: str | None = None,
    value: wire.FieldValue | None = None,
) -> list[str]:
    """What is wrong with a command's target, level, field and value (an empty list when nothing is)."""
    if action is wire.CommandAction.SET_FIELD:
        problems = [
            f"{name}: set_field has no {name}; remove it"
            for name, v in (("target", target), ("level", level))
            if v is not None
        ]
        problems += [
            f"{name}: set_field needs a {name}"
            for name, v in (("field", field), ("value", value))
            if v is None
        ]
        return problems
    problems = [
        f"{name}: only set_field takes a {name}"
        for name, v in (("field", field), ("value", value))
        if v is not None
    ]
    if target is None:
        return [*problems, f"target: {action.value} needs a target (lamp, group or cabinet)"]
    if target.kind is wire.TargetKind.CABINET and target.address is not None:
        problems.append("target.address: a cabinet command has no address; remove it")
    if target.kind is wire.TargetKind.LAMP and target.address not in LAMP_ADDRESSES:
        problems.append("target.address: a lamp needs its DALI short address, 0-63")
    if target.kind is wire.TargetKind.GROUP and target.address not in GROUP_ADDRESSES:
        problems.append("target.address: a DALI group is 0-15")
    if action is wire.CommandAction.DIM and level is None:
        problems.append("level: dim needs a level, 0-100 %")
    if action is not wire.CommandAction.DIM and level is not None:
        problems.append(f"level: only dim takes a level, not {action.value}")
    return problems


def create_command(
    session: Session,
    *,
    agent_id: str,
    device_id: str,
    target: wire.CommandTarget | None,
    action: wire.CommandAction,
    level: int | None,
    field: str | None = None,
    value: wire.FieldValue | None = None,
    due_at: int,
    schedule: dict[str, Any] | None,
    now_ms: int,
    actor: str,
) -> Command:
    command = Command(
        id=str(uuid.uuid4()),
        agent_id=agent_id,
        device_id=device_id,
        target={} if target is None else target.model_dump(mode="json", exclude_none=True),
        action=action.value,
        level=level,
        field=field,
        value=value,
        schedule=schedule,
        due_at=due_at,
        created_at=now_ms,
        created_by=actor,
        status="scheduled",
    )
    session.add(command)
    return command


def due_commands(session: Session, now_ms: int, *, limit: int = 100) -> list[Command]:
    query = (
        select(Command)
        .where(Command.status == "scheduled", Command.due_at <= now_ms)
        .order_by(Command.due_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def to_wire(command: Command, *, now_ms: int, ttl_ms: int) -> wire.Command:
    return wire.Command(
        agent=command.agent_id,
        id=command.id,
        device=command.device_id,
        target=wire.CommandTarget.model_validate(command.target) if command.target else None,
        action=wire.CommandAction(command.action),
        level=command.level,
        field=command.field,
        value=command.value,
        issued_at=now_ms,
        expires_at=command.due_at + ttl_ms,
    )


def command_public(command: Command) -> dict[str, Any]:
    return {
        "id": command.id,
        "agent": command.agent_id,
        "device": command.device_id,
        "target": command.target,
        "action": command.action,
        "level": command.level,
        "field": command.field,
        "value": command.value,
        "due_at": command.due_at,
        "status": command.status,
    }


class CommandSender(Protocol):
    def send_command(self, command: wire.Command) -> None: ...


def send_due_commands(registry: Registry, sender: CommandSender, *, now_ms: int, ttl_ms: int) -> int:
    """Send the commands that are due; expire those overdue by more than ``ttl_ms``. Returns how many sent.

    A command the broker did not take stays scheduled and is tried again next time.
    """
    sent = 0
    with registry.session() as session:
        for command in due_commands(session, now_ms):
            if now_ms > command.due_at + ttl_ms:
                command.status, command.detail = "expired", "not sent before it expired"
                session.commit()
                continue
            try:
                sender.send_command(to_wire(command, now_ms=now_ms, ttl_ms=ttl_ms))
            except Exception as exc:  # the link's LinkUnavailable, or anything paho raises
                log.info("command %s not sent yet: %s", command.id, exc)
                break
            command.status, command.sent_at = "sent", now_ms
            session.commit()
            sent += 1
    return sent
