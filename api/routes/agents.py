"""Field engineers' registry: agents with live status, their devices, and config pushed as versions.

Every change is checked the way the agent checks its config (``api.registry.fleet``) before it is
stored, and audited; a push publishes the retained ``config`` and shows what the agent said.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import AppContext, ContextDep, NowMsDep, SessionDep
from api.mqtt_link import LinkUnavailable
from api.registry import audit
from api.registry.catalogue import device_profile, profile_provenance
from api.registry.fleet import (
    FleetProblems,
    active_devices,
    check_config,
    desired_config,
    next_config_version,
)
from api.registry.live import UNASSIGNED_SITE
from api.registry.models import Agent, ConfigVersion, Device
from api.routes.paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, decode_cursor, trim
from api.security import EngineerDep, Principal, Role, ensure_site
from api.timespec import iso
from citygw.contract.agent_config import DEFAULT_GPS_PROFILE, Line, Location
from citygw.contract.agent_config import Device as DeviceSpec
from citygw.contract.wire import AGENT_ID_PATTERN, LABEL_PATTERN, DesiredConfig

router = APIRouter(prefix="/v1/agents", tags=["agents"])

PUSH_ATTEMPTS = 100
"""Versions a push tries: on SQLite (no row locks) pushes at once may read the same newest version."""

AgentPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="agent id")]
DevicePath = Annotated[str, Path(pattern=LABEL_PATTERN, description="device id (may contain '/')")]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=AGENT_ID_PATTERN)
    site: str = Field(pattern=LABEL_PATTERN)
    location: Location | None = None
    lines: list[Line] = Field(default_factory=list, max_length=64)


class DeviceEntry(BaseModel):
    id: str
    line: str
    profile: str | None
    verified: str | None = Field(
        description="how far the profile's register map was checked: datasheet, capture or modelled "
        "(modelled: not a vendor's map)"
    )
    source: str | None = Field(description="the vendor document the profile's map comes from, or why none")
    effective_profile: dict[str, Any] | None = Field(
        default=None,
        description="agent detail only: the Modbus profile as this device runs it, its overlay applied",
    )
    overlaid: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="agent detail only: each value the device's overlay changes, by path "
        '(e.g. "registers.current.scale"), as {"profile": ..., "device": ...}',
    )


class UpdateResult(BaseModel):
    rollout: int
    version: str
    state: str = Field(description="staged, applied, refused, failed or rolled_back")
    at: str
    reason: str | None


class AgentPublic(BaseModel):
    id: str
    site: str
    location: Location | None
    lines: list[dict[str, Any]]
    settings: dict[str, Any] = Field(
        description="publish, journal and health settings pushed with the config"
    )
    state: str = Field(description="online, offline, or unknown (never heard)")
    last_seen: str | None
    version: str | None
    desired_config_version: int | None
    applied_config_version: int | None
    journal_backlog: int | None
    journal_dropped: int | None
    device_health: dict[str, Any]
    update: UpdateResult | None = Field(description="the last software update the agent spoke of")
    devices: list[DeviceEntry] = Field(description="active devices, with where their profile comes from")


class DeviceMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(pattern=LABEL_PATTERN)
    to_agent: str = Field(pattern=AGENT_ID_PATTERN)
    line: str = Field(pattern=LABEL_PATTERN)
    unit: int | None = Field(default=None, ge=1, le=247)


class DevicePublic(BaseModel):
    agent: str
    spec: dict[str, Any]
    created_at: str
    updated_at: str
    retired_at: str | None


class ConfigVersionPublic(BaseModel):
    agent: str
    version: int
    pushed_at: str
    pushed_by: str
    state: str = Field(description="pending, applied, refused or rolled_back")
    state_at: str | None
    reason: str | None
    body: dict[str, Any]


def _agent_public(session: Session, agent: Agent, *, detail: bool = False) -> AgentPublic:
    desired = session.scalars(
        select(ConfigVersion.version)
        .where(ConfigVersion.agent_id == agent.id)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()
    return AgentPublic(
        id=agent.id,
        site=agent.site,
        location=Location(lat=agent.lat, lon=agent.lon)
        if agent.lat is not None and agent.lon is not None
        else None,
        lines=agent.lines,
        settings=agent.settings or {},
        state=agent.state or "unknown",
        last_seen=iso(agent.last_seen) if agent.last_seen is not None else None,
        version=agent.version,
        desired_config_version=desired,
        applied_config_version=agent.applied_config_version,
        journal_backlog=agent.journal_backlog,
        journal_dropped=agent.journal_dropped,
        device_health=agent.device_health or {},
        update=UpdateResult(
            rollout=agent.update_rollout,
            version=agent.update_version or "",
            state=agent.update_state or "",
            at=iso(agent.update_at or 0),
            reason=agent.update_reason,
        )
        if agent.update_rollout is not None
        else None,
        devices=[_device_entry(agent, device.spec, detail) for device in active_devices(session, agent.id)],
    )


def _device_entry(agent: Agent, spec: dict[str, Any], detail: bool = False) -> DeviceEntry:
    profile = spec.get("profile")
    name = profile if isinstance(profile, str) else None
    if name is None and any(
        line.get("id") == spec.get("line") and line.get("kind") == "nmea" for line in agent.lines
    ):
        name = DEFAULT_GPS_PROFILE
    provenance = profile_provenance(name) if name is not None else None
    effective = device_profile(spec) if detail else None
    return DeviceEntry(
        id=str(spec.get("id")),
        line=str(spec.get("line")),
        profile=name,
        verified=provenance.verified if provenance is not None else None,
        source=provenance.source if provenance is not None else None,
        effective_profile=effective.profile.model_dump(mode="json") if effective is not None else None,
        overlaid=effective.overlaid if effective is not None else {},
    )


def _device_public(device: Device) -> DevicePublic:
    return DevicePublic(
        agent=device.agent_id,
        spec=device.spec,
        created_at=iso(device.created_at),
        updated_at=iso(device.updated_at),
        retired_at=iso(device.retired_at) if device.retired_at is not None else None,
    )


def _managed_agent(session: Session, principal: Principal, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r} in the registry")
    ensure_site(principal, agent.site)
    return agent


def _refused(
    session: Session, principal: Principal, now_ms: int, action: str, target: str, exc: FleetProblems
) -> HTTPException:
    """Roll the change back, audit the refusal, and answer 422 naming every problem."""
    session.rollback()
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action=action,
        target=target,
        result="refused",
        detail=str(exc),
    )
    problems = [{"field": p.field, "message": p.message, "fix": p.fix} for p in exc.problems]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"message": "refused", "problems": problems})


@contextmanager
def _conflict_on_duplicate(session: Session, message: str) -> Iterator[None]:
    """A unique id taken by a request that committed first is the client's conflict: 409 with ``message``."""
    try:
        yield
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, message) from None


def _spec(device: DeviceSpec) -> dict[str, Any]:
    return device.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


@router.get("", response_model=list[AgentPublic])
def agents(
    request: Request,
    response: Response,
    principal: EngineerDep,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> list[AgentPublic]:
    """Agents at the caller's sites (every agent for admins) with their live status, by id, paged."""
    query = select(Agent).order_by(Agent.id).limit(limit + 1)
    if principal.role is not Role.ADMIN:
        query = query.where(Agent.site.in_(sorted(principal.sites)))
    after = decode_cursor(cursor, ("agent",))
    if after is not None:
        query = query.where(Agent.id > after[0])
    found = trim(
        list(session.scalars(query)), lambda a: (a.id,), limit=limit, request=request, response=response
    )
    return [_agent_public(session, agent) for agent in found]


@router.post(
    "",
    response_model=AgentPublic,
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_409_CONFLICT: {"description": "an agent with this id is registered already"}},
)
def register_agent(
    body: AgentCreate, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> AgentPublic:
    """Register an agent at a site the caller manages, with its lines.

    An agent heard on the broker before it was registered has no site yet: only an admin assigns it.
    """
    ensure_site(principal, body.site)
    known = session.get(Agent, body.id)
    conflict = f"agent {body.id!r} is already registered"
    if known is not None and known.site != UNASSIGNED_SITE:
        raise HTTPException(status.HTTP_409_CONFLICT, conflict)
    if known is not None and principal.role is not Role.ADMIN:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"agent {body.id!r} was heard on the broker before it was registered;"
            " only an admin can assign it to a site",
        )
    lines = [line.model_dump(mode="json") for line in body.lines]
    agent = known or Agent(id=body.id, created_at=now_ms, lines=[], site=body.site)
    agent.site, agent.lines = body.site, lines
    agent.lat, agent.lon = (body.location.lat, body.location.lon) if body.location else (None, None)
    session.add(agent)
    try:
        check_config(agent, [])
    except FleetProblems as exc:
        raise _refused(session, principal, now_ms, "agent.register", f"agent:{body.id}", exc) from None
    with _conflict_on_duplicate(session, conflict):
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="agent.register",
            target=f"agent:{body.id}",
            before={"site": UNASSIGNED_SITE} if known is not None else None,
            after=body.model_dump(mode="json"),
        )
    return _agent_public(session, agent)


@router.get("/{agent_id}", response_model=AgentPublic)
def agent_detail(agent_id: AgentPath, principal: EngineerDep, session: SessionDep) -> AgentPublic:
    """The agent with its live status and, per Modbus device, its profile as it runs (overlay applied)."""
    return _agent_public(session, _managed_agent(session, principal, agent_id), detail=True)


@router.get("/{agent_id}/devices", response_model=list[DevicePublic])
def agent_devices(
    agent_id: AgentPath, principal: EngineerDep, session: SessionDep, include_retired: bool = False
) -> list[DevicePublic]:
    _managed_agent(session, principal, agent_id)
    query = select(Device).where(Device.agent_id == agent_id).order_by(Device.created_at, Device.id)
    if not include_retired:
        query = query.where(Device.retired_at.is_(None))
    return [_device_public(device) for device in session.scalars(query)]


def _active_device(session: Session, agent_id: str, device_id: str) -> Device | None:
    """The device on the agent now; retired ones are history and leave the id free to be added again."""
    return session.scalars(
        select(Device).where(
            Device.agent_id == agent_id, Device.device_id == device_id, Device.retired_at.is_(None)
        )
    ).first()


def _find_device(session: Session, agent_id: str, device_id: str) -> Device:
    device = _active_device(session, agent_id, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r} on agent {agent_id!r}")
    return device


def _check_agent(session: Session, agent: Agent) -> None:
    session.flush()
    check_config(agent, [device.spec for device in active_devices(session, agent.id)])


def _commit_checked(
    session: Session,
    principal: Principal,
    now_ms: int,
    action: str,
    target: str,
    agents: Sequence[Agent],
    **change: Any,
) -> None:
    """Check each agent's config with the pending change; refuse it (audited, 422) or commit it."""
    try:
        for agent in agents:
            _check_agent(session, agent)
    except FleetProblems as exc:
        raise _refused(session, principal, now_ms, action, target, exc) from None
    audit.commit(session, by=principal, ts_ms=now_ms, action=action, target=target, **change)


@router.post(
    "/{agent_id}/devices",
    response_model=DevicePublic,
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_409_CONFLICT: {"description": "a device with this id is on the agent already"}},
)
def add_device(
    agent_id: AgentPath, body: DeviceSpec, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> DevicePublic:
    """Add a device to an agent's config (validated; pushed with the next config push)."""
    agent = _managed_agent(session, principal, agent_id)
    target, conflict = f"device:{agent_id}/{body.id}", f"device {body.id!r} is already on agent {agent_id!r}"
    if _active_device(session, agent_id, body.id) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, conflict)
    device = Device(
        agent_id=agent_id, device_id=body.id, spec=_spec(body), created_at=now_ms, updated_at=now_ms
    )
    session.add(device)
    with _conflict_on_duplicate(session, conflict):
        _commit_checked(session, principal, now_ms, "device.create", target, [agent], after=device.spec)
    return _device_public(device)


@router.put("/{agent_id}/devices/{device_id:path}", response_model=DevicePublic)
def update_device(
    agent_id: AgentPath,
    device_id: DevicePath,
    body: DeviceSpec,
    principal: EngineerDep,
    session: SessionDep,
    now_ms: NowMsDep,
) -> DevicePublic:
    """Replace a device's settings (line, unit, profile, poll period, tags), validated."""
    agent = _managed_agent(session, principal, agent_id)
    if body.id != device_id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "the body's id must be the device in the path"
        )
    device = _find_device(session, agent_id, device_id)
    before, target = device.spec, f"device:{agent_id}/{device_id}"
    device.spec, device.updated_at = _spec(body), now_ms
    _commit_checked(
        session, principal, now_ms, "device.update", target, [agent], before=before, after=device.spec
    )
    return _device_public(device)


@router.delete("/{agent_id}/devices/{device_id:path}", response_model=DevicePublic)
def retire_device(
    agent_id: AgentPath, device_id: DevicePath, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> DevicePublic:
    """Retire a device: it leaves the agent's config at the next push and stays on record."""
    _managed_agent(session, principal, agent_id)
    device = _find_device(session, agent_id, device_id)
    device.retired_at = now_ms
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action="device.retire",
        target=f"device:{agent_id}/{device_id}",
        before=device.spec,
    )
    return _device_public(device)


@router.post(
    "/{agent_id}/device-moves",
    response_model=DevicePublic,
    responses={status.HTTP_409_CONFLICT: {"description": "a device with this id is on the target already"}},
)
def move_device(
    agent_id: AgentPath, body: DeviceMove, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> DevicePublic:
    """Move a device to another line or agent (both must be managed by the caller), validated on both."""
    source = _managed_agent(session, principal, agent_id)
    destination = _managed_agent(session, principal, body.to_agent)
    device = _find_device(session, agent_id, body.device)
    before, target = {"agent": agent_id, **device.spec}, f"device:{agent_id}/{body.device}"
    conflict = f"agent {destination.id!r} already has {body.device!r}"
    spec = {**device.spec, "line": body.line}
    if body.unit is not None:
        spec["unit"] = body.unit
    if destination.id == source.id:
        device.spec, device.updated_at = spec, now_ms
        moved = device
    else:
        if _active_device(session, destination.id, body.device) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, conflict)
        device.retired_at = now_ms
        moved = Device(
            agent_id=destination.id, device_id=body.device, spec=spec, created_at=now_ms, updated_at=now_ms
        )
        session.add(moved)
    after = {"agent": destination.id, **spec}
    with _conflict_on_duplicate(session, conflict):
        _commit_checked(
            session,
            principal,
            now_ms,
            "device.move",
            target,
            [source, destination],
            before=before,
            after=after,
        )
    return _device_public(moved)


class AgentSettings(BaseModel):
    """Sections of the agent's file replaced by the next config push; a section left out: the file's."""

    model_config = ConfigDict(extra="forbid")

    publish: dict[str, Any] | None = Field(default=None, description="as the agent file's publish section")
    journal: dict[str, Any] | None = Field(
        default=None,
        description="as the agent file's journal section, without path (fsync, quota_mb, on_full...)",
    )
    health: dict[str, Any] | None = Field(default=None, description="as the agent file's health section")


@router.put("/{agent_id}/settings", response_model=AgentPublic)
def set_settings(
    agent_id: AgentPath, body: AgentSettings, principal: EngineerDep, session: SessionDep, now_ms: NowMsDep
) -> AgentPublic:
    """Set the publish, journal and health settings the next config push carries, checked as the agent
    would check them; the agent rolls them back itself if its readings stop reaching the broker."""
    agent = _managed_agent(session, principal, agent_id)
    before = agent.settings
    agent.settings = body.model_dump(exclude_none=True) or None
    _commit_checked(
        session,
        principal,
        now_ms,
        "agent.settings",
        f"agent:{agent_id}",
        [agent],
        before=before,
        after=agent.settings,
    )
    return _agent_public(session, agent)


def _version_public(version: ConfigVersion) -> ConfigVersionPublic:
    return ConfigVersionPublic(
        agent=version.agent_id,
        version=version.version,
        pushed_at=iso(version.pushed_at),
        pushed_by=version.pushed_by,
        state=version.state,
        state_at=iso(version.state_at) if version.state_at is not None else None,
        reason=version.reason,
        body=version.body,
    )


def _store_push(
    session: Session, principal: Principal, agent: Agent, now_ms: int
) -> tuple[ConfigVersion, DesiredConfig]:
    """Store the agent's config as its next version, before it is published (so that the agent's
    answer always finds its version); a version another push committed first is not taken twice."""
    for _ in range(PUSH_ATTEMPTS):
        version = next_config_version(session, agent.id)
        desired = desired_config(session, agent, version=version, now_ms=now_ms)
        pushed = ConfigVersion(
            agent_id=agent.id,
            version=version,
            body=desired.model_dump(mode="json", by_alias=True),
            pushed_at=now_ms,
            pushed_by=principal.actor,
            state="pending",
        )
        session.add(pushed)
        try:
            session.commit()
        except IntegrityError:  # SQLite: another push committed this version first; take the next
            session.rollback()
            continue
        return pushed, desired
    raise HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"too many config pushes to {agent.id!r} at once; try again",
        headers={"Retry-After": "1"},
    )


class ConfigPush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remove: list[Annotated[str, Field(pattern=LABEL_PATTERN)]] = Field(
        default_factory=list,
        max_length=10_000,
        description="devices the agent runs now that this push stops: each must be named here",
    )


def _running_devices(session: Session, agent: Agent) -> set[str]:
    """Devices the agent runs now: those its health reports and those of its last applied version."""
    running = set(agent.device_health or {})
    applied = session.scalars(
        select(ConfigVersion)
        .where(ConfigVersion.agent_id == agent.id, ConfigVersion.state == "applied")
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()
    if applied is not None:
        running.update(str(device.get("id")) for device in applied.body.get("devices", []))
    return running


def _sent_late(
    context: AppContext, principal: Principal, agent_id: str, version: int, body: dict[str, Any]
) -> None:
    """The broker acknowledged a push answered 503: it is sent (the agent will get it); say so.

    Runs on the MQTT link's thread. When a newer version was pushed meanwhile, that one is published
    again, so that the broker's retained config is the newest for agents that connect later.
    """
    now_ms = context.clock()
    with context.registry.session() as session:
        late = session.scalars(
            select(ConfigVersion).where(ConfigVersion.agent_id == agent_id, ConfigVersion.version == version)
        ).first()
        if late is None or late.state != "unsent":
            return
        late.state, late.reason = (
            "pending",
            f"sent: the broker acknowledged it at {iso(now_ms)}, after the 503",
        )
        audit.record(
            session,
            ts_ms=now_ms,
            actor=principal.actor,
            role=principal.role.value,
            action="config.push",
            target=f"agent:{agent_id}",
            after=body,
            detail="acknowledged by the broker after the request was answered 503: sent",
        )
        newer = session.scalars(
            select(ConfigVersion)
            .where(
                ConfigVersion.agent_id == agent_id,
                ConfigVersion.version > version,
                ConfigVersion.state != "unsent",
            )
            .order_by(ConfigVersion.version.desc())
        ).first()
        newest = DesiredConfig.model_validate(newer.body) if newer is not None else None
        session.commit()
    if newest is not None and context.agent_link is not None:
        context.agent_link.restore_config(newest)


@router.get("/{agent_id}/config", response_model=list[ConfigVersionPublic])
def config_versions(
    agent_id: AgentPath, principal: EngineerDep, session: SessionDep
) -> list[ConfigVersionPublic]:
    """Config versions pushed to the agent, newest first, each with what the agent said."""
    _managed_agent(session, principal, agent_id)
    query = (
        select(ConfigVersion)
        .where(ConfigVersion.agent_id == agent_id)
        .order_by(ConfigVersion.version.desc())
        .limit(100)
    )
    return [_version_public(version) for version in session.scalars(query)]


@router.post(
    "/{agent_id}/config",
    response_model=ConfigVersionPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "description": "the broker did not take it, or too many pushes to the agent at once"
        },
        status.HTTP_409_CONFLICT: {"description": "the push stops running devices not named in remove"},
    },
)
def push_config(
    agent_id: AgentPath,
    principal: EngineerDep,
    session: SessionDep,
    context: ContextDep,
    now_ms: NowMsDep,
    push: Annotated[ConfigPush | None, Body()] = None,
) -> ConfigVersionPublic:
    """Push the agent's lines and active devices as a new config version (retained ``config``).

    A push that would stop devices the agent runs now is 409 unless the request names each of them in
    ``remove``: a device retired by mistake (or a registry that never knew the agent's devices) must
    not silently stop a meter.
    """
    agent = _managed_agent(session, principal, agent_id)
    target = f"agent:{agent_id}"
    stopping = _running_devices(session, agent) - {d.device_id for d in active_devices(session, agent_id)}
    unconfirmed = sorted(stopping - set(push.remove if push is not None else ()))
    if unconfirmed:
        detail = (
            f"this push stops devices agent {agent_id!r} runs now: {', '.join(unconfirmed)};"
            ' to stop them, send {"remove": [those ids]} with the push, or add them back first'
        )
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="config.push",
            target=target,
            result="refused",
            detail=detail,
        )
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": detail, "stopping": unconfirmed})
    try:
        pushed, desired = _store_push(session, principal, agent, now_ms)
    except FleetProblems as exc:
        raise _refused(session, principal, now_ms, "config.push", target, exc) from None
    body = pushed.body
    try:
        if context.agent_link is None:
            raise LinkUnavailable("the API has no MQTT link (set CITYGW_BROKER_URL)")
        late = partial(_sent_late, context, principal, agent_id, pushed.version, body)
        context.agent_link.push_config(desired, on_late_ack=late)
    except LinkUnavailable as exc:
        pushed.state, pushed.reason = "unsent", str(exc)
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="config.push",
            target=target,
            after=body,
            result="failed",
            detail=str(exc),
        )
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action="config.push",
        target=target,
        after=body,
    )
    return _version_public(pushed)
