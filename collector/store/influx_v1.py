"""The InfluxDB 1.x store: ``POST /write`` with user and password, InfluxQL reads."""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence

import httpx

from collector.store.base import (
    Point,
    StoreError,
    StoreUnavailable,
)
from collector.store.influx_write import (
    DEFAULT_TIMEOUT,
    BadRequest,
    TooLarge,
    error_text,
    refused,
    write_bisecting,
    write_lines_bisecting,
)
from collector.store.influxql import InfluxQLReader, InfluxQLReads
from collector.store.line_protocol import LineEncoder

_DATABASE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class InfluxV1Store(InfluxQLReads):
    """InfluxDB 1.x API: POST /write (ms precision) with user/password, InfluxQL reads.

    Writes are gzip-compressed unless ``gzip=False``: for an InfluxDB on the same host, where
    compressing costs both sides CPU and saves no network (see collector/README.md, "Speed").
    """

    def __init__(
        self,
        base_url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        *,
        gzip: bool = True,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if not _DATABASE_RE.fullmatch(database):
            raise ValueError(f"InfluxDB database name {database!r} does not match {_DATABASE_RE.pattern}")
        self.database = database
        self.gzip = gzip
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._http = httpx.Client(base_url=base_url, auth=auth, timeout=timeout)
        self.encoder = LineEncoder()  # what the collector converts readings for this store with
        self.reader = InfluxQLReader(self._http, database)

    def ensure_database(self) -> None:
        """Create the database if this user cannot see it yet; call at start-up.

        With auth on, CREATE DATABASE needs an admin, while SHOW DATABASES lists to any user the
        databases it has a privilege on: a least-privilege writer or reader whose database exists
        carries on; one whose database is missing gets a StoreError naming the admin's step.
        """
        listed = self.reader.query("SHOW DATABASES")
        if any(row[0] == self.database for series in listed for row in series.get("values", [])):
            return
        try:
            self.reader.query(f'CREATE DATABASE "{self.database}"')
        except StoreUnavailable as exc:
            if "privilege" not in str(exc):
                raise
            raise StoreError(
                f"InfluxDB at {self._http.base_url}: database {self.database!r} does not exist or this "
                f"user has no privilege on it, and only an admin may create it: as an admin run "
                f'CREATE DATABASE "{self.database}" and GRANT WRITE (collector, API) or READ (Grafana) '
                f'ON "{self.database}" TO the user (docs/deploy.md, step 3); the server said: {exc}'
            ) from exc

    def write(self, points: Sequence[Point]) -> None:
        """Write all points or raise StoreUnavailable (retry later) or PointsRejected (the rest written)."""
        write_bisecting(points, self._send)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write all lines or raise StoreUnavailable (retry later) or LinesRejected (the rest written)."""
        write_lines_bisecting(lines, self._send)

    def _send(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._http.post(
                "/write", params={"db": self.database, "precision": "ms"}, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB at {self._http.base_url}: {exc!r}") from exc
        status = response.status_code
        if status == 204:
            return
        reason = error_text(response.content)
        if status == 400:
            raise BadRequest(reason)
        if status == 413:
            raise TooLarge(reason)
        if status in (401, 403):
            raise refused(self._http.base_url, status, reason)
        if status == 404:
            raise StoreUnavailable(
                f"InfluxDB at {self._http.base_url}: database {self.database!r} not found ({reason}); "
                "create it, e.g. with InfluxV1Store.ensure_database() at start-up"
            )
        raise StoreUnavailable(f"InfluxDB at {self._http.base_url}: HTTP {status} {reason}")

    def close(self) -> None:
        self._http.close()
