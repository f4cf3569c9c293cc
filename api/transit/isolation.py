"""One vehicle's trouble stays with that vehicle: whatever is computed per bus for the feeds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def vehicle_extra(
    vehicle_id: str, what: str, make: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """``make(*args, **kwargs)``, or None (logged) when it fails: one vehicle's extra never fails a feed."""
    try:
        return make(*args, **kwargs)
    except Exception:
        log.exception("vehicle %s: %s left out of the feeds", vehicle_id, what)
        return None
