"""The InfluxDB v2 API store (2.x, 3.x, Cloud, VictoriaMetrics): token, org and bucket."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from collector.store.base import (
    Point,
    Retention,
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
from collector.store.influxql import InfluxQLReader, InfluxQLReads, go_duration_ms
from collector.store.line_protocol import MS_PRECISION, LineEncoder


class InfluxV2Store(InfluxQLReads):
    """InfluxDB v2 API (2.x, 3.x, Cloud, VictoriaMetrics): token, org and bucket.

    Writes go through influxdb_client's synchronous WriteApi (gzip); reads through the
    v1-compatible ``/query`` with ``db`` = bucket.
    """

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retention: str | None = None,
    ) -> None:
        self.url = url
        self.org = org
        self.bucket = bucket
        # The bucket's retention as a duration (720h0m0s): its API is not every server's, so a setting.
        ms = None if retention is None else go_duration_ms(retention)
        self._retention = None if ms is None else Retention(f"bucket retention {retention} (store URL)", ms)
        read_timeout = timeout.read if timeout.read is not None else 10.0
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(read_timeout * 1000), enable_gzip=True
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=timeout)
        self.encoder = LineEncoder()  # what the collector converts readings for this store with
        self.reader = InfluxQLReader(self._http, bucket)

    def retention(self) -> Retention | None:
        """The ``retention`` given (None: for ever, or not said)."""
        return self._retention

    def field_types(self) -> dict[str, dict[str, str]]:
        """As the v1 store, if the server answers InfluxQL for the bucket; StoreError if it answers
        but cannot (VictoriaMetrics, an InfluxDB 2.x bucket without a DBRP mapping)."""
        try:
            return self.reader.field_types()
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, httpx.HTTPError):
                raise  # not reachable: ask again
            raise StoreError(f"{self.url} answers no InfluxQL for bucket {self.bucket!r}: {exc}") from exc

    def write(self, points: Sequence[Point]) -> None:
        """Write all points or raise StoreUnavailable (retry later) or PointsRejected (the rest written)."""
        write_bisecting(points, self._send)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write all lines or raise StoreUnavailable (retry later) or LinesRejected (the rest written)."""
        write_lines_bisecting(lines, self._send)

    def _send(self, lines: list[str]) -> None:
        try:
            self._write_api.write(
                bucket=self.bucket, org=self.org, record=lines, write_precision=MS_PRECISION
            )
        except ApiException as exc:
            status = exc.status or 0
            reason = error_text(exc.body) or str(exc.reason)
            # InfluxDB 2.x answers 422 for points it can never take (a field's type conflict, a time
            # outside the bucket's retention): dead letters, like 1.x's 400, not a retry for ever.
            if status in (400, 422):
                raise BadRequest(reason) from exc
            if status == 413:
                raise TooLarge(reason) from exc
            if status in (401, 403):
                raise refused(self.url, status, reason) from exc
            raise StoreUnavailable(f"InfluxDB at {self.url}: HTTP {status} {reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url}: {exc!r}") from exc

    def close(self) -> None:
        self._write_api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
        self._http.close()
