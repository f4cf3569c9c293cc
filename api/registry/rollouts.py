"""Releases and the waves that roll them out: who is in a wave, and the orders sent to them.

A wave names its agents, or takes a percentage of the agents (of one site, or all): the same
agents for the same release whatever the percentage, ordered by a hash of release and agent id, so a
wave of 10 % grown to 50 % keeps its first agents. Agents already running the release, or a newer
one, are left out of a percentage (an agent named is always ordered, and refuses what is not newer
than its own version itself). Each agent of a wave gets a retained ``update`` order on its own topic, with a
download path holding the wave's token: only agents that can read that topic learn it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import Agent, Release, Rollout, RolloutAgent
from citygw.contract import release, wire


@dataclass(frozen=True)
class Wave:
    """Which agents a rollout takes: ``agents`` named, or ``percent`` of ``site``'s (of all, without)."""

    agents: tuple[str, ...] = ()
    percent: float | None = None
    site: str | None = None


def _order_key(version: str, agent_id: str) -> str:
    return hashlib.sha256(f"{version}:{agent_id}".encode()).hexdigest()


def select_agents(session: Session, version: str, wave: Wave) -> tuple[list[Agent], list[str]]:
    """The agents of the wave, and the ids left out as already running ``version`` or newer.

    Agents named one by one are all ordered: each refuses a version not newer than its own itself.
    """
    if wave.agents:
        return list(session.scalars(select(Agent).where(Agent.id.in_(wave.agents)).order_by(Agent.id))), []
    else:
        query = select(Agent)
        if wave.site is not None:
            query = query.where(Agent.site == wave.site)
        everyone = sorted(session.scalars(query), key=lambda a: _order_key(version, a.id))
        share = 100.0 if wave.percent is None else wave.percent
        chosen = everyone[: math.ceil(len(everyone) * share / 100.0)]
    current = [a.id for a in chosen if a.version is not None and not release.is_newer(version, a.version)]
    return sorted((a for a in chosen if a.id not in current), key=lambda a: a.id), sorted(current)


def create(
    session: Session, found: Release, agents: list[Agent], wave: Wave, *, by: str, now_ms: int
) -> Rollout:
    """The rollout and its agents (pending), added to ``session``; ids are set on flush."""
    rollout = Rollout(
        version=found.version,
        selector={"agents": list(wave.agents), "percent": wave.percent, "site": wave.site},
        token=secrets.token_urlsafe(24),
        created_at=now_ms,
        created_by=by,
    )
    session.add(rollout)
    session.flush()
    for agent in agents:
        session.add(RolloutAgent(rollout_id=rollout.id, agent_id=agent.id, state="pending", state_at=now_ms))
    session.flush()
    return rollout


def order(found: Release, rollout: Rollout, agent_id: str, *, now_ms: int) -> wire.UpdateOrder:
    return wire.UpdateOrder(
        agent=agent_id,
        rollout=rollout.id,
        version=found.version,
        manifest=found.manifest,
        signature=found.signature,
        path=f"/v1/releases/{found.version}/wheel?token={rollout.token}",
        issued_at=now_ms,
    )


def members(session: Session, rollout_id: int) -> list[RolloutAgent]:
    query = select(RolloutAgent).where(RolloutAgent.rollout_id == rollout_id).order_by(RolloutAgent.agent_id)
    return list(session.scalars(query))


def token_allows(session: Session, version: str, token: str) -> bool:
    """Whether ``token`` is a wave's of ``version`` (compared in constant time)."""
    tokens = session.scalars(select(Rollout.token).where(Rollout.version == version))
    return any(secrets.compare_digest(token, known) for known in tokens)
