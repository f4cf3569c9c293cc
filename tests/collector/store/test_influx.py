"""InfluxDB specifics: faults, splitting and bisecting (real influxd), v2 writes (real VictoriaMetrics)."""

from __future__ import annotations

import gzip
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from citygw.contract import wire
from collector.store import Point, PointsRejected, StoreError, StoreUnavailable, open_store, prepare
from collector.store.base import LinesRejected
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influx_v2 import InfluxV2Store
from collector.store.line_protocol import to_line_protocol
from tests.collector.store.auth_influxdb import ADMIN, READER, WRITER, AuthInfluxDB
from tests.services import InfluxDB, VictoriaMetrics, free_port

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def points(n: int, measurement: str = "electricity", start: int = T0) -> list[Point]:
    return [
        Point(
            measurement,
            {"device": f"meter-{i % 3}", "agent": "agent-1"},
            start + i,
            {"kwh": float(i), "n": i},
        )
        for i in range(n)
    ]


def count(server: InfluxDB, database: str, measurement: str = "electricity") -> int:
    result = server.query(f'SELECT count("kwh") FROM "{measurement}"', database)
    series = result["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


class SmallBodyInfluxDB(InfluxDB):
    """An influxd that refuses write bodies over a few KiB (HTTP 413)."""

    def command(self) -> list[str]:
        command = super().command()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(conf.read_text().replace("max-body-size = 0", "max-body-size = 4000"))
        return command


@pytest.fixture
def own_influxdb(tmp_path: Path) -> Iterator[InfluxDB]:
    """An influxd of this test alone, to kill and stop without disturbing the session's."""
    server = InfluxDB(tmp_path / "influxdb")
    server.start()
    yield server
    server.stop()


def test_influxdb_down_is_unavailable_and_writes_work_again_after_restart(own_influxdb: InfluxDB) -> None:
    store = InfluxV1Store(own_influxdb.url, "city")
    store.ensure_database()
    store.write(points(10))

    own_influxdb.kill()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
        store.write(points(10, start=T0 + 100))
    with pytest.raises(StoreUnavailable):
        store.latest()

    own_influxdb.start()
    store.write(points(10, start=T0 + 100))
    assert count(own_influxdb, "city") == 20
    store.close()


def test_a_hung_influxdb_times_out_as_unavailable(own_influxdb: InfluxDB) -> None:
    store = InfluxV1Store(own_influxdb.url, "city", timeout=httpx.Timeout(0.5))
    store.ensure_database()
    assert own_influxdb.proc is not None
    own_influxdb.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.write(points(5))
        assert time.monotonic() - started < 3
    finally:
        own_influxdb.proc.send_signal(signal.SIGCONT)
    store.write(points(5))
    assert count(own_influxdb, "city") == 5
    store.close()


def test_a_missing_database_is_unavailable_with_the_fix_in_the_message(influxdb: InfluxDB) -> None:
    store = InfluxV1Store(influxdb.url, f"missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(StoreUnavailable, match=r"not found.*ensure_database"):
        store.write(points(1))
    store.ensure_database()
    store.ensure_database()  # idempotent
    store.write(points(1))
    store.close()


def test_a_batch_too_large_for_the_server_is_split_and_fully_written(tmp_path: Path) -> None:
    server = SmallBodyInfluxDB(tmp_path / "influxdb")
    server.start()
    try:
        store = InfluxV1Store(server.url, "city")
        store.ensure_database()
        # Random text compresses badly, so the gzip body stays far above the server's limit.
        batch = [
            Point(p.measurement, p.tags, p.ts_ms, {**p.fields, "note": os.urandom(20).hex()})
            for p in points(400)
        ]
        whole = gzip.compress("\n".join(to_line_protocol(p) for p in batch).encode())
        refused = httpx.post(
            f"{server.url}/write", params={"db": "city"}, content=whole, headers={"Content-Encoding": "gzip"}
        )
        assert refused.status_code == 413, (
            "the batch must be too large in one piece for this test to mean anything"
        )
        store.write(batch)
        assert count(server, "city") == 400

        huge = Point(
            "electricity", {"device": "meter-x"}, T0 + 10_000, {"kwh": 1.0, "note": os.urandom(4000).hex()}
        )
        with pytest.raises(PointsRejected) as caught:
            store.write([*points(3, start=T0 + 20_000), huge])
        assert [p for p, _ in caught.value.rejected] == [huge]
        assert "413" in caught.value.rejected[0][1]
        assert count(server, "city") == 403
        store.close()
    finally:
        server.stop()


def test_bisecting_finds_every_refused_point_with_the_servers_reason(influxdb: InfluxDB) -> None:
    database = f"bisect_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    batch = points(200)
    bad = {17, 18, 150}
    mixed = [
        Point(p.measurement, p.tags, p.ts_ms, {"kwh": "not a number", "n": p.fields["n"]}) if i in bad else p
        for i, p in enumerate(batch)
    ]
    with pytest.raises(PointsRejected) as caught:
        store.write(mixed)

    assert [p for p, _ in caught.value.rejected] == [mixed[i] for i in sorted(bad)]
    assert all("field type conflict" in reason for _, reason in caught.value.rejected)
    assert count(influxdb, database) == 200 - len(bad)
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def test_points_without_a_writable_field_are_rejected_without_blocking_the_batch(influxdb: InfluxDB) -> None:
    database = f"nan_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    nan_only = Point("electricity", {"device": "m"}, T0, {"kwh": float("nan")})
    with pytest.raises(PointsRejected) as caught:
        store.write([nan_only, *points(5, start=T0 + 1)])
    assert [p for p, _ in caught.value.rejected] == [nan_only]
    assert count(influxdb, database) == 5
    store.close()


def export(
    vm: VictoriaMetrics, measurement: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]]:
    vm.flush()
    response = httpx.get(f"{vm.url}/api/v1/export", params={"match[]": f'{{__name__=~"{measurement}_.*"}}'})
    response.raise_for_status()
    series = {}
    for line in response.text.splitlines():
        item = httpx.Response(200, content=line).json()
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        series[(name, tuple(sorted(labels.items())))] = list(
            zip(item["timestamps"], item["values"], strict=True)
        )
    return series


def test_v2_writes_reach_victoria_metrics_with_values_tags_and_ms_timestamps(
    victoria_metrics: VictoriaMetrics,
) -> None:
    measurement = f"water_{uuid.uuid4().hex[:8]}"
    store = InfluxV2Store(victoria_metrics.url, org="city", bucket="telemetry", token="secret")
    tags = {"device": "meter 1, north=side", "agent": "agent-7"}
    store.write(
        [
            Point(measurement, tags, T0 + 123, {"flow": 1.25, "total": 42}),
            Point(measurement, tags, T0 + 1123, {"flow": 2.5, "total": 43}),
        ]
    )

    label_set = tuple(sorted(tags.items()))
    deadline = time.monotonic() + 5
    while (series := export(victoria_metrics, measurement)) == {} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert series == {
        (f"{measurement}_flow", label_set): [(T0 + 123, 1.25), (T0 + 1123, 2.5)],
        (f"{measurement}_total", label_set): [(T0 + 123, 42), (T0 + 1123, 43)],
    }
    store.close()


def test_v2_store_on_a_wrong_port_is_unavailable() -> None:
    store = InfluxV2Store(f"http://127.0.0.1:{free_port()}", org="city", bucket="telemetry", token="secret")
    with pytest.raises(StoreUnavailable, match="refused"):
        store.write(points(3))
    store.close()


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_writes_are_gzipped_unless_told_not_to(influxdb: InfluxDB, compress: bool) -> None:
    database = f"gzip_{compress}".lower()
    store = InfluxV1Store(influxdb.url, database, gzip=compress)
    sent: list[httpx.Request] = []
    store._http.event_hooks["request"].append(sent.append)
    try:
        store.ensure_database()
        point = Point("water", {"device": "meter-1"}, 1_700_000_000_000, {"m3": 1.5})
        store.write([point])
        assert store.latest(measurement="water") == [point]
    finally:
        store.close()
    (write,) = [request for request in sent if request.url.path == "/write"]
    assert (write.headers.get("Content-Encoding") == "gzip") is compress
    body = gzip.decompress(write.content) if compress else write.content
    assert body == to_line_protocol(point).encode()


@pytest.fixture(scope="module")
def auth_influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthInfluxDB]:
    """influxd with auth on, an admin, a writer and a reader (docs/deploy.md, step 3)."""
    server = AuthInfluxDB(tmp_path_factory.mktemp("auth-influxdb"))
    server.start()
    server.create_users()
    yield server
    server.stop()


def test_least_privilege_users_start_on_a_database_an_admin_created(auth_influxdb: AuthInfluxDB) -> None:
    database = f"t_{uuid.uuid4().hex[:8]}"
    auth_influxdb.create_database(database)
    auth_influxdb.grant(database)
    for user in (WRITER, READER):
        store = open_store(auth_influxdb.store_url(database, user))
        prepare(store)  # CREATE DATABASE would be refused: admin only
        store.close()
    writer = open_store(auth_influxdb.store_url(database, WRITER))
    writer.write(points(3))
    writer.close()
    assert count(auth_influxdb, database) == 3


def test_a_missing_database_without_admin_rights_names_the_admins_step(auth_influxdb: AuthInfluxDB) -> None:
    database = f"t_{uuid.uuid4().hex[:8]}"
    store = open_store(auth_influxdb.store_url(database, WRITER))
    with pytest.raises(StoreError) as caught:
        prepare(store)
    store.close()
    assert not isinstance(caught.value, StoreUnavailable)
    assert f'CREATE DATABASE "{database}"' in str(caught.value)
    assert "GRANT WRITE" in str(caught.value)
    admin = open_store(auth_influxdb.store_url(database, ADMIN))
    prepare(admin)  # an admin creates it
    admin.close()
    assert [database] in auth_influxdb.query("SHOW DATABASES")["results"][0]["series"][0]["values"]  # type: ignore[index]


def test_a_wrong_password_is_unavailable_not_a_missing_database(auth_influxdb: AuthInfluxDB) -> None:
    store = open_store(auth_influxdb.store_url("citygw", (WRITER[0], "wrong")))
    with pytest.raises(StoreUnavailable, match="authentication failed"):
        prepare(store)
    store.close()


class Influx2Refusing:
    """What InfluxDB 2.x answers (not packaged for Debian, so played here on a loopback socket):
    204 for lines it takes, 422 with its JSON error for a batch holding a line it never will."""

    def __init__(self, refused_marker: str) -> None:
        import http.server
        import threading

        taken: list[str] = []
        self.taken = taken

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                lines = body.decode().splitlines()
                if any(refused_marker in line for line in lines):
                    answer = b'{"code":"unprocessable entity","message":"field type conflict"}'
                    self.send_response(422)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                taken.extend(lines)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_v2_server_refusing_a_point_for_ever_422_dead_letters_it_and_stores_the_rest() -> None:
    """A type conflict or a time outside the bucket's retention is 422 on InfluxDB 2.x: retrying it would
    hold every later batch's acknowledgement for ever."""
    server = Influx2Refusing("kwh=3")
    store = InfluxV2Store(server.url, org="city", bucket="telemetry", token="t")
    try:
        with pytest.raises(PointsRejected) as caught:
            store.write(points(6))
        assert [p.fields for p, _ in caught.value.rejected] == [{"kwh": 3.0, "n": 3}]
        assert "field type conflict" in caught.value.rejected[0][1]
        assert len(server.taken) == 5
    finally:
        store.close()
        server.close()


def test_a_field_named_like_a_tag_does_not_hijack_the_readers_conditions(influxdb: InfluxDB) -> None:
    """Issue 22.1: InfluxQL resolves an unqualified "device" to a field of that name if one exists.

    Such a point (stored before the collector refused them, or by another writer) made every
    ``device=`` condition compare the field: another device's reads came back empty, and the
    attacker's rows answered for the device it named. The reader says ``::tag``.
    """
    database = f"shadow_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    honest = points(6)
    store.write(honest)
    store.write_lines([f'electricity,agent=evil,device=evil-1 device="meter-1",kwh=666 {T0 + 100}'])
    try:
        latest = store.latest(device="meter-1")
        assert [(p.tags["device"], p.ts_ms) for p in latest] == [("meter-1", T0 + 4)]
        rows = store.range(measurement="electricity", start_ms=0, end_ms=2**62, device="meter-1")
        assert [(r.tags["device"], r.ts_ms) for r in rows] == [("meter-1", T0 + 1), ("meter-1", T0 + 4)]
        windowed = store.range(
            measurement="electricity",
            start_ms=0,
            end_ms=2**62,
            device="meter-1",
            window_s=3600,
            fields=["kwh"],
        )
        assert [r.tags["device"] for r in windowed] == ["meter-1"]
        assert windowed[0].values["kwh"] == 2.5
        assert store.count_devices(measurement="electricity", start_ms=0, end_ms=2**62, device="meter-1") == 1
    finally:
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')


def test_a_field_with_another_type_in_another_shard_is_read_as_stored(influxdb: InfluxDB) -> None:
    """A field poisoned before the collector checked types (issue 22.2): reads answer, not fail."""
    database = f"mixed_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    week_ms = 7 * 24 * 3600 * 1000
    store.write([Point("air_quality", {"device": "aq-1"}, T0, {"pm25": 5.0})])
    store.write([Point("air_quality", {"device": "aq-1"}, T0 + 2 * week_ms, {"pm25": "12 ug/m3"})])
    try:
        # InfluxDB answers one type per query; SHOW FIELD KEYS names float first.
        rows = store.range(measurement="air_quality", start_ms=T0 + week_ms, end_ms=2**62)
        assert [row.values["pm25"] for row in rows] == ["12 ug/m3"]
    finally:
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')


def test_a_write_only_user_or_a_server_without_influxql_cannot_tell_its_schema(
    auth_influxdb: AuthInfluxDB, victoria_metrics: VictoriaMetrics
) -> None:
    """The collector's start-up reads (field types, retention) are refused as "cannot tell", never
    "unavailable": a collector retrying those for ever would convert nothing (collector/field_types.py)."""
    database = f"t_{uuid.uuid4().hex[:8]}"
    auth_influxdb.create_database(database)
    auth_influxdb.grant(database)
    stores = [
        open_store(auth_influxdb.store_url(database, WRITER)),  # WRITE only: the least a collector can have
        InfluxV1Store(victoria_metrics.url, "telemetry"),  # answers every /query with its databases
        InfluxV2Store(victoria_metrics.url, org="city", bucket="telemetry", token="t"),
    ]
    try:
        for store in stores:
            assert isinstance(store, InfluxV1Store | InfluxV2Store)
            with pytest.raises(StoreError) as caught:
                store.field_types()
            assert not isinstance(caught.value, StoreUnavailable), caught.value
            if isinstance(store, InfluxV1Store):
                with pytest.raises(StoreError) as caught:
                    store.retention()
                assert not isinstance(caught.value, StoreUnavailable), caught.value
        reader = open_store(auth_influxdb.store_url(database, READER))
        assert isinstance(reader, InfluxV1Store)
        assert reader.field_types() == {}
        assert reader.retention() is None
        reader.close()
    finally:
        for store in stores:
            store.close()


def test_influxdb_refuses_time_as_a_key_but_takes_a_field_named_like_a_tag(influxdb: InfluxDB) -> None:
    """What wire.NOT_FIELD_NAMES / NOT_TAG_NAMES stand on, as the real server does it: ``time`` costs
    a refused write (the collector refuses it first), a field ``device`` is stored silently."""
    database = f"keys_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    lines = [
        f"m,device=a time=1 {T0}",
        f"m,time=x,device=b v=1 {T0 + 1}",
        f'm,device=c device="x" {T0 + 2}',
    ]
    try:
        with pytest.raises(LinesRejected) as caught:
            store.write_lines(lines)
        assert [(index, "invalid" in reason) for index, reason in caught.value.rejected] == [
            (0, True),
            (1, True),
        ]
        assert store.field_types() == {"m": {"device": "string"}}
        assert {"time", "device"} <= wire.NOT_FIELD_NAMES
        assert "time" in wire.NOT_TAG_NAMES
    finally:
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')
