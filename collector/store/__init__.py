"""Stores for telemetry points, chosen by URL: embedded SQLite or an InfluxDB (v1 or v2 API)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from collector.store.base import (
    Aggregate,
    FieldValue,
    Point,
    PointsRejected,
    PointWriter,
    Row,
    Store,
    StoreError,
    StoreUnavailable,
    TelemetryReader,
)

TOKEN_ENV = "CITYGW_INFLUX_TOKEN"

_FORMS = {
    "sqlite": "sqlite:///relative/path.sqlite or sqlite:////absolute/path.sqlite (as SQLAlchemy), sqlite:///:memory:",
    "influxdb": "influxdb://[user:pass@]host:port/database[?gzip=false] (influxdb+https:// for TLS)",
    "influxdb2": "influxdb2://[:token@]host:port/?org=ORG&bucket=BUCKET[&retention=720h] (influxdb2+https:// "
    f"for TLS; token from the URL password or ${TOKEN_ENV}; retention: the bucket's, as 168h or 0s)",
}
_EXPECTED = "; ".join(_FORMS.values())


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=f"{user}:***@{host}").geturl()
    except ValueError:
        return "<unparseable URL>"


def open_store(url: str, *, token: str | None = None) -> Store:
    """The store named by ``url``; ValueError names the bad part and the expected form.

    ``token``: an InfluxDB v2 token for a URL without one (the services' ``influx_token`` setting);
    None: ``$CITYGW_INFLUX_TOKEN`` (tools such as ``citygw dashboards preview``).

    Opening does no network I/O; call ``InfluxV1Store.ensure_database()`` at start-up to create
    the database of a v1 store.
    """
    scheme, _, rest = url.partition("://")
    base, _, tls = scheme.partition("+")
    if not rest or base not in _FORMS or tls not in ("", "https") or (base == "sqlite" and tls):
        raise ValueError(
            f"store URL {redact(url)!r}: unknown scheme {scheme!r}; expected one of: {_EXPECTED}"
        )
    if base == "sqlite":
        return _open_sqlite(url, rest)
    try:
        parts = urlsplit(url)
        port = parts.port or 8086
    except ValueError as exc:
        raise ValueError(
            f"store URL {redact(url)!r}: bad host or port ({exc}); expected {_FORMS[base]}"
        ) from exc
    if not parts.hostname:
        raise ValueError(f"store URL {redact(url)!r}: missing host; expected {_FORMS[base]}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    http_url = f"{'https' if tls else 'http'}://{host}:{port}"
    if base == "influxdb":
        return _open_influx_v1(url, parts, http_url)
    return _open_influx_v2(url, parts, http_url, token)


def prepare(store: Store) -> None:
    """Start-up work a service does once: an InfluxDB v1 database is created if missing.

    A least-privilege InfluxDB user (not admin) whose database exists carries on; one whose database
    is missing gets a StoreError naming the admin's step (``InfluxV1Store.ensure_database``).
    """
    from collector.store.influx_v1 import InfluxV1Store

    if isinstance(store, InfluxV1Store):
        store.ensure_database()


def _open_sqlite(url: str, rest: str) -> Store:
    """SQLAlchemy's convention, as the API's registry URL: three slashes relative, four absolute."""
    from collector.store.sqlite import SqliteStore

    path = rest[1:] if rest.startswith("/") else ""
    if not path or path == "/" or "?" in path or "#" in path:
        raise ValueError(f"store URL {redact(url)!r}: bad file path {rest!r}; expected {_FORMS['sqlite']}")
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)


def _open_influx_v1(url: str, parts: SplitResult, http_url: str) -> Store:
    from collector.store.influx_v1 import InfluxV1Store

    database = unquote(parts.path.strip("/"))
    if not database or "/" in database:
        raise ValueError(
            f"store URL {redact(url)!r}: path must be one database name, not {parts.path!r}; "
            f"expected {_FORMS['influxdb']}"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    gzip = query.pop("gzip", ["true"])
    if query or len(gzip) != 1 or gzip[0] not in ("true", "false"):
        raise ValueError(
            f"store URL {redact(url)!r}: unexpected query {parts.query!r} (only gzip=true or gzip=false); "
            f"expected {_FORMS['influxdb']}"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return InfluxV1Store(http_url, database, username=username, password=password, gzip=gzip[0] == "true")


def _open_influx_v2(url: str, parts: SplitResult, http_url: str, given_token: str | None) -> Store:
    from collector.store.influx_v2 import InfluxV2Store

    if parts.path not in ("", "/"):
        raise ValueError(
            f"store URL {redact(url)!r}: unexpected path {parts.path!r} (org and bucket go in the query); "
            f"expected {_FORMS['influxdb2']}"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"org", "bucket", "retention"})
    if unknown:
        raise ValueError(
            f"store URL {redact(url)!r}: unknown parameter(s) {unknown}; expected {_FORMS['influxdb2']}"
        )
    values: dict[str, str] = {}
    for name in ("org", "bucket"):
        given = query.get(name, [""])
        if len(given) != 1 or not given[0]:
            raise ValueError(f"store URL {redact(url)!r}: missing {name}=; expected {_FORMS['influxdb2']}")
        values[name] = given[0]
    if parts.password:
        token = unquote(parts.password)
    else:
        token = given_token if given_token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ValueError(
            f"store URL {redact(url)!r}: no token; put it in the URL password or influx_token "
            f"(${TOKEN_ENV}); expected {_FORMS['influxdb2']}"
        )
    retention = query.get("retention", [None])
    if len(retention) != 1 or (retention[0] is not None and not _is_duration(retention[0])):
        raise ValueError(
            f"store URL {redact(url)!r}: retention= is a duration like 720h, 90m or 0s (for ever); "
            f"expected {_FORMS['influxdb2']}"
        )
    return InfluxV2Store(
        http_url, org=values["org"], bucket=values["bucket"], token=token, retention=retention[0]
    )


def _is_duration(text: str) -> bool:
    from collector.store.influxql import go_duration_ms

    try:
        go_duration_ms(text)
    except ValueError:
        return False
    return True


__all__ = [
    "TOKEN_ENV",
    "Aggregate",
    "FieldValue",
    "Point",
    "PointWriter",
    "PointsRejected",
    "Row",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TelemetryReader",
    "open_store",
    "redact",
]
