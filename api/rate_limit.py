"""A token bucket per client address for public endpoints: ``rate`` requests a second, bursts up to ``burst``.

In-process: each API process counts on its own (behind N processes a client gets N times the rate).
The address is the socket peer's; behind a reverse proxy run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` so that it is the client's, not the proxy's.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from fastapi import HTTPException, Request, status

MAX_CLIENTS = 100_000


class ClientRateLimiter:
    """Buckets of recently seen clients; past ``max_clients`` the oldest is forgotten (it starts full)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = Lock()

    def take(self, client: str) -> float:
        """0 when ``client`` may go on (a token is spent), else the seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        return wait


async def rate_limited(request: Request) -> None:
    """429 with Retry-After when the caller's bucket is empty; nothing when limiting is off."""
    limiter: ClientRateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.take(request.client.host if request.client else "unknown")
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"more than {limiter.rate:g} requests a second (bursts of {limiter.burst}); slow down",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
