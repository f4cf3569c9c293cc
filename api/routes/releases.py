"""Agent software updates, for admins: upload a signed release, roll it out in waves, watch each wave.

The agents download the wheel from ``GET /v1/releases/{version}/wheel?token=...`` with the token of
their wave (it came on their own MQTT topic), in Range requests, so a cellular link that drops
resumes instead of starting over. Every upload and wave is audited; so is what each agent did
(``update.result``, api/registry/live.py).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from api.deps import ContextDep, NowMsDep, SessionDep
from api.mqtt_link import LinkUnavailable
from api.registry import audit, rollouts
from api.registry.models import Release, Rollout
from api.routes.paging import ID_MAX
from api.security import AdminDep
from api.timespec import iso
from citygw.contract import release
from citygw.contract.wire import AGENT_ID_PATTERN, LABEL_PATTERN

router = APIRouter(tags=["releases"])

VersionPath = Annotated[str, Path(pattern=r"^[0-9][0-9A-Za-z.+!-]{0,63}$", description="release version")]
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
MAX_WAVE_AGENTS = 10_000


class ReleasePublic(BaseModel):
    version: str
    sha256: str
    size: int
    created: str
    min_agent_version: str
    uploaded_at: str
    uploaded_by: str


class WaveCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(max_length=64)
    agents: list[Annotated[str, Field(pattern=AGENT_ID_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_WAVE_AGENTS, description="these agents; or percent (and site)"
    )
    percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="this share of the agents (of site), the same ones as it grows",
    )
    site: str | None = Field(default=None, pattern=LABEL_PATTERN, description="only this site's agents")

    @model_validator(mode="after")
    def _one_selector(self) -> WaveCreate:
        if self.agents and (self.percent is not None or self.site is not None):
            raise ValueError("name agents, or give percent and/or site: not both")
        if not self.agents and self.percent is None and self.site is None:
            raise ValueError("a wave needs agents, a percent or a site")
        return self


class WaveAgent(BaseModel):
    agent: str
    state: str = Field(description="pending, unsent, refused, failed, staged, applied or rolled_back")
    state_at: str
    reason: str | None


class WavePublic(BaseModel):
    id: int
    version: str
    selector: dict[str, Any]
    created_at: str
    created_by: str
    counts: dict[str, int] = Field(description="agents by state")
    skipped: list[str] = Field(default_factory=list, description="left out: already on this version or newer")
    agents: list[WaveAgent]


def _release_public(found: Release) -> ReleasePublic:
    manifest = release.Manifest.model_validate_json(found.manifest)
    return ReleasePublic(
        version=found.version,
        sha256=found.sha256,
        size=found.size,
        created=iso(manifest.created),
        min_agent_version=manifest.min_agent_version,
        uploaded_at=iso(found.uploaded_at),
        uploaded_by=found.uploaded_by,
    )


def _wave_public(session: SessionDep, rollout: Rollout, skipped: list[str] | None = None) -> WavePublic:
    agents = [
        WaveAgent(agent=m.agent_id, state=m.state, state_at=iso(m.state_at), reason=m.reason)
        for m in rollouts.members(session, rollout.id)
    ]
    counts: dict[str, int] = {}
    for agent in agents:
        counts[agent.state] = counts.get(agent.state, 0) + 1
    return WavePublic(
        id=rollout.id,
        version=rollout.version,
        selector=rollout.selector,
        created_at=iso(rollout.created_at),
        created_by=rollout.created_by,
        counts=counts,
        skipped=skipped or [],
        agents=agents,
    )


@router.post(
    "/v1/releases",
    response_model=ReleasePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_409_CONFLICT: {"description": "this version was uploaded already"},
        status.HTTP_413_CONTENT_TOO_LARGE: {"description": "over CITYGW_RELEASE_MAX_MB"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_release(
    request: Request, principal: AdminDep, session: SessionDep, context: ContextDep, now_ms: NowMsDep
) -> ReleasePublic:
    """Upload a release bundle (``citygw release build``), checked before it is kept: its wheel's size
    and hash, and its signature when ``CITYGW_RELEASE_PUBLIC_KEYS`` pins keys (agents always check)."""
    limit = int(context.settings.release_max_mb * 1_000_000)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"a release is at most {limit} bytes")
    keys = [release.parse_public_key(k) for k in context.settings.release_public_keys] or None
    try:
        bundle = release.Bundle.decode(bytes(body))
        manifest = bundle.checked(keys)
    except release.ReleaseError as exc:
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="release.upload",
            target="release:?",
            result="refused",
            detail=str(exc),
        )
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if session.get(Release, manifest.version) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"release {manifest.version} was uploaded already")
    found = Release(
        version=manifest.version,
        manifest=bundle.manifest_bytes.decode(),
        signature=bundle.signature,
        wheel=bundle.wheel,
        size=manifest.size,
        sha256=manifest.sha256,
        uploaded_at=now_ms,
        uploaded_by=principal.actor,
    )
    session.add(found)
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action="release.upload",
        target=f"release:{manifest.version}",
        after=json.loads(found.manifest),
        detail="signature checked" if keys else "signature not checked here (no CITYGW_RELEASE_PUBLIC_KEYS)",
    )
    return _release_public(found)


@router.get("/v1/releases", response_model=list[ReleasePublic])
def releases(principal: AdminDep, session: SessionDep) -> list[ReleasePublic]:
    """Releases uploaded, newest upload first."""
    return [_release_public(r) for r in session.scalars(select(Release).order_by(Release.uploaded_at.desc()))]


@router.get(
    "/v1/releases/{version}/wheel",
    response_class=Response,
    responses={
        status.HTTP_200_OK: {"content": {"application/octet-stream": {}}},
        status.HTTP_206_PARTIAL_CONTENT: {"content": {"application/octet-stream": {}}},
        status.HTTP_403_FORBIDDEN: {"description": "the token is no wave's of this release"},
        status.HTTP_416_RANGE_NOT_SATISFIABLE: {"description": "the range starts past the end"},
    },
)
def release_wheel(
    version: VersionPath,
    session: SessionDep,
    token: Annotated[str, Query(max_length=64, description="the wave's token, from the agent's order")],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The release's wheel for the agents of its waves; ``Range: bytes=N-`` resumes a download."""
    if not rollouts.token_allows(session, version, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token is no wave's of this release")
    found = session.get(Release, version)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no release {version}")
    data, size = found.wheel, found.size
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{found.sha256}"'}
    match = _RANGE.match(range_header or "")
    if match is None:
        return Response(data, media_type="application/octet-stream", headers=headers)
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    if start >= size or end < start:
        raise HTTPException(
            status.HTTP_416_RANGE_NOT_SATISFIABLE,
            "range past the end",
            headers={"Content-Range": f"bytes */{size}"},
        )
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(
        data[start : end + 1],
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.post(
    "/v1/rollouts",
    response_model=WavePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_404_NOT_FOUND: {"description": "no such release"},
        status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "the API has no MQTT link"},
    },
)
def roll_out(
    body: WaveCreate, principal: AdminDep, session: SessionDep, context: ContextDep, now_ms: NowMsDep
) -> WavePublic:
    """Roll a release out to a wave: a retained ``update`` order to each agent, audited."""
    found = session.get(Release, body.version)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no release {body.version}: upload it first")
    if context.agent_link is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the API has no MQTT link (set CITYGW_BROKER_URL)"
        )
    wave = rollouts.Wave(agents=tuple(body.agents), percent=body.percent, site=body.site)
    agents, skipped = rollouts.select_agents(session, found.version, wave)
    unknown = sorted(set(body.agents) - {a.id for a in agents} - set(skipped))
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no such agents: {', '.join(unknown)}")
    rollout = rollouts.create(session, found, agents, wave, by=principal.actor, now_ms=now_ms)
    audit.commit(
        session,
        by=principal,
        ts_ms=now_ms,
        action="rollout.create",
        target=f"rollout:{rollout.id}",
        after={"version": found.version, "selector": rollout.selector, "agents": [a.id for a in agents]},
        detail=f"skipped, already on {found.version} or newer: {', '.join(skipped)}" if skipped else None,
    )
    for member in rollouts.members(session, rollout.id):
        try:
            context.agent_link.order_update(rollouts.order(found, rollout, member.agent_id, now_ms=now_ms))
        except LinkUnavailable as exc:
            member.state, member.reason = "unsent", str(exc)
    session.commit()
    return _wave_public(session, rollout, skipped)


@router.get("/v1/rollouts", response_model=list[WavePublic])
def waves(
    principal: AdminDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[WavePublic]:
    """The newest waves first, each with its agents' states."""
    found = session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit))
    return [_wave_public(session, rollout) for rollout in found]


@router.get("/v1/rollouts/{rollout_id}", response_model=WavePublic)
def wave(
    rollout_id: Annotated[int, Path(ge=1, le=ID_MAX)], principal: AdminDep, session: SessionDep
) -> WavePublic:
    """One wave: how many agents are where, and each agent's state and reason."""
    found = session.get(Rollout, rollout_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rollout {rollout_id}")
    return _wave_public(session, found)
