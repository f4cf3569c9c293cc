"""The FastAPI application: ``create_app(store)`` wires routes to the dependencies it is given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.alerts.delivery import AlertDelivery
from api.alerts.engine import evaluate
from api.deps import AppContext, Clock, wall_clock_ms
from api.mqtt_link import AgentLink
from api.oidc import OidcVerifier
from api.openapi import document_common_answers
from api.pages import add_pages
from api.rate_limit import ClientRateLimiter, rate_limited
from api.recorder import Recorder, StoreWriter
from api.refusals import RefusalAudit, audit_refusal
from api.registry import Registry, open_registry
from api.registry.commands import send_due_commands
from api.routes import (
    agents,
    air_quality,
    alerts,
    audit,
    commands,
    dead_letters,
    devices,
    exports,
    health,
    keys,
    open_data,
    releases,
    summary,
    telemetry,
    transit,
    transit_accuracy,
)
from api.security import Role, require_role, telemetry_reader
from api.settings import ApiSettings
from api.transit.feeds import TransitService
from collector.store.base import StoreError, TelemetryReader

log = logging.getLogger(__name__)
STORE_RETRY_AFTER_S = 5
COMMAND_TICK_S = 1.0


def _version() -> str:
    try:
        return version("citygw")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The store's message can name hosts or URLs: log it, answer without it.
    log.warning("%s %s: store error: %r", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the telemetry store is unavailable; try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


async def _send_commands(registry: Registry, link: AgentLink, clock: Clock, ttl_ms: int) -> None:
    """Send due commands (scheduled ones included) once a second, for as long as the app runs."""
    while True:
        try:
            await asyncio.to_thread(send_due_commands, registry, link, now_ms=clock(), ttl_ms=ttl_ms)
        except Exception:
            log.exception("sending due commands failed; trying again")
        await asyncio.sleep(COMMAND_TICK_S)


async def _every(interval_s: float, job: Callable[[], object], what: str, *, at_once: bool = False) -> None:
    """Run ``job`` in a worker thread every ``interval_s`` (and first at once if told), while the app runs."""
    while True:
        if not at_once:
            await asyncio.sleep(interval_s)
        at_once = False
        try:
            await asyncio.to_thread(job)
        except StoreError as exc:
            log.warning("%s failed, the store is unavailable (%s); trying again", what, exc)
        except Exception:
            log.exception("%s failed; trying again", what)


def _evaluate_alerts(context: AppContext, delivery: AlertDelivery) -> None:
    """Run the alert rules once and deliver what was raised or ended."""
    for event in evaluate(context.registry, context.store, context.settings, context.clock()):
        delivery.deliver(event)


def _transit(app: FastAPI, context: AppContext) -> TransitService:
    return transit.transit_of(app.state, context.settings)


def _learn_running_times(app: FastAPI, context: AppContext) -> None:
    """Learn running times from what the store got since the last time (api/transit/history.py)."""
    service = _transit(app, context)  # made here, not at startup: a service that cannot start fails alone
    published = service.source.current()
    if published is not None:
        service.history.refresh(context.store, published.timetable, now_ms=context.clock())


def _recorder(app: FastAPI, context: AppContext) -> Recorder | None:
    """The recorder of the app's derived series, when the store it was given can be written."""
    if not isinstance(context.store, StoreWriter):
        log.warning(
            "the API's store cannot be written: delays, occupancy and command outcomes are not recorded"
        )
        return None
    return Recorder(
        context.store,
        reader=context.store,
        registry=context.registry,
        transit=_transit(app, context),
        settings=context.settings,
    )


def create_app(
    store: TelemetryReader,
    *,
    settings: ApiSettings | None = None,
    clock: Clock = wall_clock_ms,
    registry: Registry | None = None,
) -> FastAPI:
    """The API over ``store``, which the caller opens and closes; settings from the environment if None.

    Without ``registry`` the app opens (and migrates) the one at ``settings.registry_url`` and closes
    it when its lifespan ends.
    """
    settings = settings if settings is not None else ApiSettings()
    owned_registry = registry is None
    registry = registry if registry is not None else open_registry(settings.registry_url)

    agent_link = None
    if settings.broker_url:
        agent_link = AgentLink(
            settings.broker_url,
            registry,
            clock,
            publish_timeout_s=settings.broker_publish_timeout_s,
            ca_file=settings.broker_ca_file,
            cert_file=settings.broker_cert_file,
            key_file=settings.broker_key_file,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            if agent_link is not None:
                agent_link.start()
            async with asyncio.TaskGroup() as tasks:
                background = []
                if agent_link is not None:
                    background.append(
                        tasks.create_task(
                            _send_commands(registry, agent_link, clock, settings.command_ttl_s * 1000),
                            name="command-dispatcher",
                        )
                    )
                context: AppContext = _app.state.context
                if settings.alert_interval_s > 0:
                    delivery = AlertDelivery(settings, agent_link)
                    background.append(
                        tasks.create_task(
                            _every(
                                settings.alert_interval_s,
                                lambda: _evaluate_alerts(context, delivery),
                                "evaluating alert rules",
                            ),
                            name="alert-rules",
                        )
                    )
                if settings.transit_history_refresh_s > 0:
                    background.append(
                        tasks.create_task(
                            _every(
                                settings.transit_history_refresh_s,
                                lambda: _learn_running_times(_app, context),
                                "learning transit running times",
                                at_once=True,
                            ),
                            name="transit-history",
                        )
                    )
                recorder = _recorder(_app, context) if settings.record_interval_s > 0 else None
                if recorder is not None:
                    background.append(
                        tasks.create_task(
                            _every(
                                settings.record_interval_s,
                                lambda: recorder.record(clock()),
                                "recording derived series into the store",
                            ),
                            name="recorder",
                        )
                    )
                try:
                    yield
                finally:
                    for task in background:
                        task.cancel()
        finally:
            if agent_link is not None:
                agent_link.stop()
            if owned_registry:
                registry.close()

    app = FastAPI(
        title="CityGW API",
        version=_version(),
        summary="Smart-city telemetry: GTFS-realtime vehicle positions, devices and their readings",
        lifespan=lifespan,
        docs_url=None,  # served by add_pages from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.oidc = OidcVerifier(settings) if settings.oidc_issuer else None
    app.state.context = AppContext(
        store=store, settings=settings, registry=registry, clock=clock, agent_link=agent_link
    )
    app.add_exception_handler(StoreError, _store_unavailable)
    app.add_exception_handler(StarletteHTTPException, audit_refusal)
    app.state.refusals = RefusalAudit(
        settings.refusal_audit_per_min, settings.refusal_audit_total_per_min, clock=lambda: clock() / 1000
    )
    if settings.rate_limit_per_s > 0:
        app.state.rate_limiter = ClientRateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    if settings.cors_origins:
        # Bearer keys travel in the Authorization header, never in cookies: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", "If-Modified-Since"],
            expose_headers=["ETag", "Last-Modified", "Retry-After", "Content-Disposition"],
            allow_credentials=False,
            max_age=600,
        )
    app.include_router(health.router)
    for module in (transit, transit_accuracy, air_quality, open_data):
        app.include_router(module.router, dependencies=[Depends(rate_limited)])
    for module in (devices, telemetry, summary):
        app.include_router(module.router, dependencies=[Depends(telemetry_reader)])
    # Never opened by CITYGW_OPEN_TELEMETRY: year-long bulk reads, and payloads as agents sent them.
    for module in (exports, dead_letters):
        app.include_router(module.router, dependencies=[Depends(require_role(Role.UTILITY, Role.ENGINEER))])
    for module in (agents, commands, keys, audit, alerts, releases):
        app.include_router(module.router)
    add_pages(app)
    document_common_answers(app)
    return app
