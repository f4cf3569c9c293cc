"""Commands: a lamp, group or cabinet on, off or dimmed, or a device's field set (``set_field``: a
LoRaWAN downlink, a Modbus register write), now, at a time, or at dusk/dawn.

A command is checked (device on the agent; a lighting controller with address and level in range,
or a field the device's profile says is settable, with a value it takes), stored and audited;
the app's dispatcher sends it on ``cmd`` when due, and the agent's ``cmd/result`` ends it (done,
failed, refused, expired).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.deps import NowMsDep, SessionDep
from api.registry import audit
from api.registry.commands import COMMANDABLE_MEASUREMENTS, check_command, command_public, create_command
from api.registry.fleet import active_devices
from api.registry.models import Agent, Command
from api.security import EngineerDep, ensure_site
from api.sun import SunEvent, next_sun_event
from api.timespec import iso, parse_instant
from citygw.contract import wire
from citygw.contract.wire import AGENT_ID_PATTERN, LABEL_PATTERN, NAME_PATTERN
from firmware_bridge.overlay import ProfileOverlay, apply_overlay
from firmware_bridge.profile import AnyProfile, Profile, ProfileError, load_any_profile
from firmware_bridge.settable import check_set_field

router = APIRouter(prefix="/v1/agents", tags=["commands"])

AgentPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="agent id")]


class SunSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: SunEvent
    offset_min: int = Field(default=0, ge=-180, le=180, description="minutes after (or before, negative)")


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(
        pattern=LABEL_PATTERN,
        description="the lighting controller (cabinet); for set_field, a device with that settable field",
    )
    target: wire.CommandTarget | None = Field(
        default=None, description="on, off and dim: the lamp, group or cabinet; none for set_field"
    )
    action: wire.CommandAction
    level: int | None = Field(default=None, ge=0, le=100, description="dim: the level in percent")
    field: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="set_field: a field the device's profile says is settable (a LoRaWAN profile's "
        "commands, a Modbus profile's writable registers)",
    )
    value: wire.FieldValue | None = Field(
        default=None, description="set_field: the engineering value, within the field's min..max"
    )
    at: str | None = Field(
        default=None, max_length=64, description="when: ISO 8601, epoch ms or +30m; default now"
    )
    sun: SunSchedule | None = Field(
        default=None, description="at the next dusk/dawn/sunrise/sunset of the site"
    )


class CommandPublic(BaseModel):
    id: str
    agent: str
    device: str
    target: dict[str, Any] | None = Field(description="none for set_field")
    action: str
    level: int | None
    field: str | None = Field(description="set_field: the field set")
    value: wire.FieldValue | None = Field(description="set_field: the value written")
    due_at: str
    created_by: str
    status: str = Field(
        description="scheduled, sent, done, done_but_dark (written, but the lamp reads dark), failed, "
        "refused or expired"
    )
    sent_at: str | None
    result_at: str | None
    detail: str | None


def _public(command: Command) -> CommandPublic:
    return CommandPublic(
        id=command.id,
        agent=command.agent_id,
        device=command.device_id,
        target=command.target or None,
        action=command.action,
        level=command.level,
        field=command.field,
        value=command.value,
        due_at=iso(command.due_at),
        created_by=command.created_by,
        status=command.status,
        sent_at=iso(command.sent_at) if command.sent_at is not None else None,
        result_at=iso(command.result_at) if command.result_at is not None else None,
        detail=command.detail,
    )


def _unprocessable(problems: list[str]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"message": "refused", "problems": problems})


def _due_at(body: CommandCreate, agent: Agent, now_ms: int) -> tuple[int, dict[str, Any] | None]:
    if body.at is not None and body.sun is not None:
        raise _unprocessable(["give either at or sun, not both"])
    if body.sun is not None:
        if agent.lat is None or agent.lon is None:
            raise _unprocessable([f"sun: agent {agent.id!r} has no location; register it with one"])
        after = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        offset = timedelta(minutes=body.sun.offset_min)
        moment = next_sun_event(after, body.sun.event, lat=agent.lat, lon=agent.lon, offset=offset)
        if moment is None:
            raise _unprocessable([f"sun: no {body.sun.event.value} at this site within a year"])
        return int(moment.timestamp() * 1000), body.sun.model_dump(mode="json")
    if body.at is not None:
        try:
            due = parse_instant(body.at, now_ms=now_ms)
        except ValueError as exc:
            raise _unprocessable([f"at: {exc}"]) from None
        return max(due, now_ms), {"at": iso(due)}
    return now_ms, None


def _profile(profile: object) -> AnyProfile | None:
    """A device's profile (of any protocol); None when it cannot be loaded."""
    try:
        return load_any_profile(str(profile))
    except ProfileError:
        return None


def _measurement(profile: object) -> str | None:
    """The measurement of a device's profile (a GPS receiver's, a LoRaWAN sensor's too); None: none."""
    loaded = _profile(profile)
    return None if loaded is None else loaded.measurement


def _device_problem(body: CommandCreate, device_id: str, spec: dict[str, Any]) -> str | None:
    """Why this device cannot take this command (None: it can): checked by the device's profile,
    with the device's overlay applied as the agent applies it (a register's scale changes what fits)."""
    profile = spec.get("profile")
    if body.action is not wire.CommandAction.SET_FIELD:
        if _measurement(profile) not in COMMANDABLE_MEASUREMENTS:
            return f"device: {device_id!r} is not a lighting controller"
        return None
    if body.field is None or body.value is None:
        return None  # check_command says what is missing
    loaded = _profile(profile)
    if loaded is None:
        return f"device: the profile {profile!r} of {device_id!r} cannot be loaded"
    try:
        if isinstance(loaded, Profile) and spec.get("overlay"):
            loaded = apply_overlay(loaded, ProfileOverlay.model_validate(spec["overlay"]))
        check_set_field(loaded, body.field, body.value)
    except ValueError as exc:
        return f"field: {exc}"
    return None


@router.post("/{agent_id}/commands", response_model=CommandPublic, status_code=status.HTTP_202_ACCEPTED)
def send_command(
    agent_id: AgentPath, body: CommandCreate, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> CommandPublic:
    """Queue a command: sent on ``cmd`` when due; follow it with GET .../commands/{id}.

    ``on``, ``off``, ``dim`` go to a lighting controller's lamp, group or cabinet (``target``).
    ``set_field`` sets ``field`` to ``value`` on a device whose profile says the field is settable
    (a LoRaWAN profile's commands: a downlink; a Modbus profile's writable registers), within its
    min..max; anything else is refused (422) naming the field and the settable ones, and audited.
    """
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r} in the registry")
    ensure_site(principal, agent.site)
    problems = check_command(body.target, body.action, body.level, body.field, body.value)
    device = next((d for d in active_devices(session, agent_id) if d.device_id == body.device), None)
    if device is None:
        problems.append(f"device: no device {body.device!r} on agent {agent_id!r}")
    elif (problem := _device_problem(body, body.device, device.spec)) is not None:
        problems.append(problem)
    target = f"device:{agent_id}/{body.device}"
    request = body.model_dump(mode="json", exclude_none=True)
    if problems:
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="command.send",
            target=target,
            after=request,
            result="refused",
            detail="; ".join(problems),
        )
        raise _unprocessable(problems)
    due_at, schedule = _due_at(body, agent, now_ms)
    command = create_command(
        session,
        agent_id=agent_id,
        device_id=body.device,
        target=body.target,
        action=body.action,
        level=body.level,
        field=body.field,
        value=body.value,
        due_at=due_at,
        schedule=schedule,
        now_ms=now_ms,
        actor=principal.actor,
    )
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action="command.send",
        target=target,
        after=command_public(command),
    )
    return _public(command)


@router.get("/{agent_id}/commands", response_model=list[CommandPublic])
def commands(agent_id: AgentPath, principal: EngineerDep, session: SessionDep) -> list[CommandPublic]:
    """The agent's newest 200 commands, newest first."""
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r} in the registry")
    ensure_site(principal, agent.site)
    query = select(Command).where(Command.agent_id == agent_id).order_by(Command.created_at.desc()).limit(200)
    return [_public(command) for command in session.scalars(query)]


@router.get("/{agent_id}/commands/{command_id}", response_model=CommandPublic)
def command_detail(
    agent_id: AgentPath,
    command_id: Annotated[str, Path(pattern=wire.COMMAND_ID_PATTERN)],
    principal: EngineerDep,
    session: SessionDep,
) -> CommandPublic:
    command = session.get(Command, command_id)
    agent = session.get(Agent, agent_id)
    if command is None or agent is None or command.agent_id != agent_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no command {command_id!r} of agent {agent_id!r}")
    ensure_site(principal, agent.site)
    return _public(command)
