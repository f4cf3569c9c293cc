"""Paging of the growing lists: ``limit`` (default 500) and an opaque ``cursor``, the next page in ``Link``.

A list is in a stable order (a sort key per item, unique within the list); the cursor is the key of
the last item served, base64url JSON, and the next page starts after it. A client that passes no
parameter gets the first page, as before; ``Link: <…?cursor=…>; rel="next"`` is set while more remain.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import HTTPException, Query, Request, Response, status

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
# Row ids of the registry are INTEGER columns: PostgreSQL refuses a larger number outright.
ID_MAX = 2**31 - 1

Key = tuple[str | int, ...]
T = TypeVar("T")

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=1024,
        pattern=r"^[A-Za-z0-9_-]+$",
        description='where the page starts: the cursor of the previous page\'s Link: <…>; rel="next"',
    ),
]


def encode_cursor(key: Key) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")
    )


def decode_cursor(cursor: str | None, like: Key) -> Key | None:
    """The key in ``cursor`` (None without one); 400 unless it has the types of ``like``."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(like)
        or any(type(part) is not type(sample) for part, sample in zip(key, like, strict=True))
        or any(isinstance(part, int) and not 0 <= part < 2**63 for part in key)  # ids: never negative
    ):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "cursor is not one this API gave; start again without it"
        )
    return tuple(key)


def link_next(request: Request, response: Response, last: Key | None, limit: int) -> None:
    """Point ``Link: rel=next`` past ``last`` (nothing when there is no next page)."""
    if last is None:
        return
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "limit")]
    query = urlencode([*params, ("limit", str(limit)), ("cursor", encode_cursor(last))])
    response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'


def page_of(
    items: Iterable[T],
    key: Callable[[T], Key],
    *,
    limit: int,
    cursor: str | None,
    like: Key,
    request: Request,
    response: Response,
    descending: bool = False,
) -> list[T]:
    """One page of ``items`` (in any order) sorted by ``key``, with the Link to the next page."""
    after = decode_cursor(cursor, like)
    ordered = sorted(items, key=key, reverse=descending)
    if after is not None:
        ordered = [item for item in ordered if (key(item) < after if descending else key(item) > after)]
    return trim(ordered, key, limit=limit, request=request, response=response)


def trim(
    found: Sequence[T], key: Callable[[T], Key], *, limit: int, request: Request, response: Response
) -> list[T]:
    """The first ``limit`` of ``found`` (read with ``limit + 1``), linking the next page if there is more."""
    served = list(found[:limit])
    link_next(request, response, key(served[-1]) if len(found) > limit and served else None, limit)
    return served
