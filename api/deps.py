"""What route handlers depend on, as ``Annotated`` aliases resolved from ``app.state``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.air import RecentIndices
from api.mqtt_link import AgentLink
from api.registry import Registry
from api.security import VerifiedKeys
from api.settings import ApiSettings
from api.transit.vehicle_positions import HeaderClock
from collector.store.base import TelemetryReader

Clock = Callable[[], int]
"""Now, in milliseconds since the epoch."""


def wall_clock_ms() -> int:
    """The system clock in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppContext:
    """The app's dependencies, given to ``create_app`` and kept on ``app.state.context``."""

    store: TelemetryReader
    settings: ApiSettings
    registry: Registry
    clock: Clock = wall_clock_ms
    verified_keys: VerifiedKeys = field(default_factory=VerifiedKeys)
    agent_link: AgentLink | None = None
    vehicle_positions: HeaderClock = field(default_factory=HeaderClock)
    air_indices: RecentIndices = field(default_factory=RecentIndices)


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_store(context: ContextDep) -> TelemetryReader:
    return context.store


async def get_settings(context: ContextDep) -> ApiSettings:
    return context.settings


async def get_now_ms(context: ContextDep) -> int:
    """One reading of the clock per request, so every part of an answer agrees on 'now'."""
    return context.clock()


StoreDep = Annotated[TelemetryReader, Depends(get_store)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
NowMsDep = Annotated[int, Depends(get_now_ms)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """A registry session per request; handlers commit what they mean to keep."""
    with context.registry.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
