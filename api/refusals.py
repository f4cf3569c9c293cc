"""Refused requests (401, 403) in the audit log, at a bounded rate: who tried what, from where, and why not.

A key probing for what it may do, or a stolen token, shows in ``GET /v1/audit?action=access.refused``.
An address gets ``refusal_audit_per_min`` entries a minute and all addresses together
``refusal_audit_total_per_min``, so a flood of refusals cannot flood the log (or its database);
what is left out is counted and named in the next entry written for that address.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import AppContext
from api.rate_limit import MAX_CLIENTS, ClientRateLimiter
from api.registry import audit
from api.security import ANONYMOUS, Principal

log = logging.getLogger(__name__)
ACTION = "access.refused"
REFUSED = frozenset({401, 403})
_ALL = "*"  # the bucket every address shares


class RefusalAudit:
    """Which refusals are written: a bucket per address and one for all; the rest are counted."""

    def __init__(self, per_min: int, total_per_min: int, *, clock: Callable[[], float]) -> None:
        self._per_address = ClientRateLimiter(per_min / 60, per_min, clock=clock)
        self._total = ClientRateLimiter(total_per_min / 60, total_per_min, clock=clock)
        self._unlogged: OrderedDict[str, int] = OrderedDict()
        self._lock = Lock()

    def admit(self, address: str) -> int | None:
        """The refusals of ``address`` left out before this one when this one is written, else None."""
        if self._per_address.take(address) > 0 or self._total.take(_ALL) > 0:
            with self._lock:
                self._unlogged[address] = self._unlogged.pop(address, 0) + 1
                while len(self._unlogged) > MAX_CLIENTS:
                    self._unlogged.popitem(last=False)
            return None
        with self._lock:
            return self._unlogged.pop(address, 0)


def _caller(request: Request) -> tuple[str, str]:
    """(actor, role) of the refused request: its principal, or the key id it claimed, or anonymous."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and principal != ANONYMOUS:
        return principal.actor, principal.role.value
    claimed: str | None = getattr(request.state, "claimed_key", None)
    return (f"key:{claimed} (refused)" if claimed else ANONYMOUS.actor), ANONYMOUS.role.value


def _record(request: Request, exc: StarletteHTTPException) -> None:
    refusals: RefusalAudit = request.app.state.refusals
    address = request.client.host if request.client else "unknown"
    unlogged = refusals.admit(address)
    if unlogged is None:
        return
    context: AppContext = request.app.state.context
    actor, role = _caller(request)
    after: dict[str, object] = {"status": exc.status_code, "client": address}
    if unlogged:
        after["unlogged_before"] = unlogged
    try:
        with context.registry.session() as session:
            audit.record(
                session,
                ts_ms=context.clock(),
                actor=actor[:256],
                role=role,
                action=ACTION,
                target=f"{request.method} {request.url.path}"[:256],
                after=after,
                result="refused",
                detail=str(exc.detail)[:1000],
            )
            session.commit()
    except SQLAlchemyError as exc_db:  # the refusal still goes out; the log says why it is not audited
        log.warning(
            "refusal of %s %s not audited: %s", request.method, request.url.path, type(exc_db).__name__
        )


async def audit_refusal(request: Request, exc: Exception) -> Response:
    """The app's HTTPException handler: 401s and 403s to the audit log, then FastAPI's own answer."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in REFUSED:
        await run_in_threadpool(_record, request, exc)
    return await http_exception_handler(request, exc)
