"""Transit benchmark: fix-to-feed latency, feed build cost, cached feed rate, ETA accuracy.

    .venv/bin/python bench/transit.py [--fixes 200] [--vehicles 2000] [--requests 3000] [--seed 2027]

1. fix to feed: a bus agent publishes positions (TelemetryBatch, QoS 1) to a real Mosquitto; a
   Collector writes them to a SqliteStore; the API (uvicorn on loopback) serves VehiclePositions
   from it; a poller takes the time each fix first shows in the feed. p50/p99 in seconds
   (target p99 < 1 s).
2. build ratio: TransitService building all feeds (trip matching included) for ``--vehicles``
   vehicles from points already in memory, against just serialising the VehiclePositions and
   TripUpdates it built.
3. cached requests per second: httpx against uvicorn with If-None-Match (answers 304) and a 1 s
   rebuild interval; the baseline in the same run is GET /health.
4. ETA accuracy: buses driven by bench/bus_model.py (traffic by time of day, dwell from boardings,
   holding at random stops: nothing the predictor is told) through the simulated Friday; every
   2 min from 06:00 to 22:00 the TripUpdates feed is built from their positions and each published
   arrival is scored against when the bus really arrived, in TransitApp's ETA Accuracy Benchmark
   buckets and windows (api/transit/accuracy.py); the timetable's arrival for the same stops is
   scored alike. The figure is the mean of the four buckets' shares (target >= 0.85).
5. validator ERRORs: MobilityData's gtfs-rt-validator on the three feeds of the model's buses,
   fetched three times 12 s apart at 08:00, 13:00 and 17:30 (target 0).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from gtfs_rt_validator.api import Inputs, Mode, Request, SortBy, validate  # noqa: E402
from gtfs_rt_validator.runner.sources import role_cycle  # noqa: E402
from paho.mqtt.client import Client  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from api import create_app  # noqa: E402
from api.registry import open_registry  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from api.transit.accuracy import Score, Tally, overall, score, tally  # noqa: E402
from api.transit.accuracy_watch import published_predictions  # noqa: E402
from api.transit.feeds import FeedKind, TransitService  # noqa: E402
from api.transit.fixtures import network_zip  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from api.transit.simulated_buses import Bus, fixes_between  # noqa: E402
from api.transit.timetable import Timetable  # noqa: E402
from bench.bus_model import drive_day  # noqa: E402
from citygw import wire  # noqa: E402
from collector.service import Collector  # noqa: E402
from collector.store.base import Aggregate, DeviceKey, Point, Row, device_key, newest_per_device  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402
from tests.services import Mosquitto, free_port  # noqa: E402

FRIDAY = dt.date(2027, 1, 15)
SAMPLE_EVERY_S = 120
VALIDATED_AT = (dt.time(8), dt.time(13), dt.time(17, 30))
SNAPSHOT_GAP_S = 12  # >= 10 s between fetches, under W007's 35 s refresh limit
VALIDATED_ROLES = {"vp": FeedKind.VEHICLE_POSITIONS, "tu": FeedKind.TRIP_UPDATES, "sa": FeedKind.ALERTS}


class PointsInMemory:
    """A TelemetryReader over a list of points: the build cost without a database's."""

    def __init__(self, points: Sequence[Point]) -> None:
        self.points = sorted(points, key=lambda p: p.ts_ms)  # a database reads a time range by index
        self._times = [p.ts_ms for p in self.points]

    def latest(
        self, *, measurement: str | None = None, device: str | None = None, since_ms: int | None = None
    ) -> list[Point]:
        return [p for p in self.points if p.measurement == measurement and p.ts_ms >= (since_ms or 0)]

    def latest_page(
        self,
        *,
        limit: int,
        after: DeviceKey | None = None,
        measurement: str | None = None,
        agent: str | None = None,
    ) -> list[Point]:
        newest = newest_per_device(
            p
            for p in self.points
            if measurement in (None, p.measurement) and agent in (None, p.tags.get("agent", ""))
        )
        return [p for p in newest if after is None or device_key(p) > after][: max(0, limit)]

    def range(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
        window_s: int | None = None,
        aggregate: Aggregate = Aggregate.MEAN,
    ) -> list[Row]:
        first, last = bisect.bisect_left(self._times, start_ms), bisect.bisect_left(self._times, end_ms)
        return [
            Row(p.ts_ms, p.tags, dict(p.fields))
            for p in self.points[first:last]
            if p.measurement == measurement
        ]

    def count_devices(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> int:
        rows = self.range(measurement=measurement, start_ms=start_ms, end_ms=end_ms)
        return len({row.tags.get("device") for row in rows if device in (None, row.tags.get("device"))})

    def _tagged(
        self, measurement: str, start_ms: int, end_ms: int, tags: Mapping[str, str] | None
    ) -> list[Row]:
        rows = self.range(measurement=measurement, start_ms=start_ms, end_ms=end_ms)
        return [row for row in rows if all(row.tags.get(k) == v for k, v in (tags or {}).items())]

    def newest(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> list[Row]:
        return self._tagged(measurement, start_ms, end_ms, tags)[::-1][: max(0, limit)]

    def count_by_tag(
        self, *, measurement: str, start_ms: int, end_ms: int, tag: str, tags: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        return dict(
            Counter(row.tags.get(tag, "") for row in self._tagged(measurement, start_ms, end_ms, tags))
        )


def transit_settings(folder: Path, gtfs: Path, **overrides: object) -> ApiSettings:
    """Settings of a benchmark app serving ``gtfs`` (registry in ``folder``)."""
    return ApiSettings(
        registry_url=f"sqlite:///{folder}/registry.sqlite",
        transit_gtfs_path=gtfs,
        rate_limit_per_s=0,  # one benchmark client is not a crowd to throttle
        **overrides,  # type: ignore[arg-type]
    )


def serve(app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


def fix_to_feed(folder: Path, gtfs: Path, fixes: int) -> list[float]:
    """Seconds from publishing each fix to its first appearance in the VehiclePositions feed."""
    broker = Mosquitto(folder / "mosquitto")
    broker.start()
    store = SqliteStore(folder / "citygw.sqlite")
    registry = open_registry(f"sqlite:///{folder}/registry.sqlite")
    collector = Collector(broker.url, store, batch_max_seconds=0.02)
    collector.start()
    collector.wait_subscribed()
    app = create_app(
        store, settings=transit_settings(folder, gtfs, transit_rebuild_interval_s=0.05), registry=registry
    )
    server, thread, url = serve(app)
    published: dict[float, float] = {}  # latitude -> publish time
    seen: dict[float, float] = {}
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url) as http:
            while not done.is_set():
                feed = http.get("/v1/transit/vehicle-positions.json").json()
                now = time.perf_counter()
                for entity in feed.get("entity", []):
                    lat = round(entity["vehicle"]["position"]["latitude"], 4)
                    if lat in published and lat not in seen:
                        seen[lat] = now - published[lat]
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    agent = Client(CallbackAPIVersion.VERSION2, client_id="bench-bus")
    agent.connect("127.0.0.1", broker.port)
    agent.loop_start()
    try:
        for seq in range(fixes):
            vehicle = f"bench-{seq % 10}"
            lat = round(49.80 + seq * 0.0005, 4)  # a latitude per fix: the poller recognises it
            reading = wire.Reading(
                device=f"gps-{vehicle}",
                measurement="vehicle_position",
                ts=time.time_ns() // 1_000_000,
                fields={"lat": lat, "lon": 24.03, "speed_mps": 8.0, "fix_quality": 1},
                tags={"vehicle": vehicle, "vehicle_label": vehicle},
            )
            batch = wire.TelemetryBatch(agent="bench-bus", seq=seq, readings=[reading])
            published[lat] = time.perf_counter()
            agent.publish(wire.topic("bench-bus", wire.Channel.TELEMETRY), wire.encode(batch), qos=1)
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(seen) < fixes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        poller.join(timeout=5)
        agent.loop_stop()
        agent.disconnect()
        server.should_exit = True
        thread.join(timeout=10)
        collector.stop()
        registry.close()
        store.close()
        broker.stop()
    missing = fixes - len(seen)
    return sorted(seen.values()) + [float("inf")] * missing


def build_ratio(
    timetable: Timetable, buses: list[Bus], gtfs: Path, vehicles: int
) -> tuple[float, float, float, float]:
    """(cold build s, steady build s, serialise s, steady build / serialise) for ``vehicles`` at 10:00.

    The cold build matches every bus from its fixes; then the service builds once a second (the
    default rebuild interval) for 30 s with the fixes that arrived meanwhile: the median of those
    is the steady build.
    """
    now_s = int(dt.datetime.combine(FRIDAY, dt.time(10), tzinfo=timetable._zone).timestamp())
    start_s = now_s - 30
    base = list(fixes_between(timetable, buses, start_s - 120, now_s + 1))
    points: list[Point] = []
    copies = vehicles // len({p.tags["vehicle"] for p in base if p.ts_ms >= (start_s - 90) * 1000}) + 1
    for copy in range(copies):
        for p in base:
            tags = {
                **p.tags,
                "vehicle": f"{p.tags['vehicle']}-{copy}",
                "device": f"{p.tags['device']}-{copy}",
            }
            points.append(Point(p.measurement, tags, p.ts_ms, p.fields))
    fresh = sorted({p.tags["vehicle"] for p in points if p.ts_ms >= (start_s - 90) * 1000})[:vehicles]
    keep = set(fresh)
    service = TransitService(transit_settings(gtfs.parent, gtfs))
    service.source.current()
    builds: list[float] = []
    for at_s in range(start_s, now_s + 1):
        # What the store holds at ``at_s``: nothing from the future.
        reader = PointsInMemory([p for p in points if p.tags["vehicle"] in keep and p.ts_ms <= at_s * 1000])
        started = time.perf_counter()
        snapshot = service.build(reader, now_ms=at_s * 1000, max_age_s=90, max_ahead_s=30)
        builds.append(time.perf_counter() - started)
    feeds = (snapshot.feeds[FeedKind.VEHICLE_POSITIONS], snapshot.feeds[FeedKind.TRIP_UPDATES])
    assert len(feeds[0].entity) == vehicles, len(feeds[0].entity)
    started = time.perf_counter()
    for feed in feeds:
        feed.SerializeToString(deterministic=True)
    serialise_s = time.perf_counter() - started
    steady_s = statistics.median(builds[1:])
    return builds[0], steady_s, serialise_s, steady_s / serialise_s


def cached_rps(folder: Path, gtfs: Path, requests: int) -> tuple[float, float]:
    """(304 answers per second of the VehiclePositions feed, GET /health per second)."""
    store = SqliteStore(folder / "cached.sqlite")
    registry = open_registry(f"sqlite:///{folder}/cached-registry.sqlite")
    app = create_app(
        store,
        settings=transit_settings(folder, gtfs).model_copy(
            update={"registry_url": f"sqlite:///{folder}/cached-registry.sqlite"}
        ),
        registry=registry,
    )
    server, thread, url = serve(app)
    try:
        with httpx.Client(base_url=url) as http:
            etag = http.get("/v1/transit/vehicle-positions").headers["etag"]
            started = time.perf_counter()
            for _ in range(requests):
                answer = http.get("/v1/transit/vehicle-positions", headers={"If-None-Match": etag})
                if answer.status_code != 304:
                    etag = answer.headers["etag"]
            feed_rate = requests / (time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(requests):
                http.get("/health")
            health_rate = requests / (time.perf_counter() - started)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        registry.close()
        store.close()
    return feed_rate, health_rate


def eta_accuracy(timetable: Timetable, buses: list[Bus], gtfs: Path) -> tuple[list[Tally], list[Tally]]:
    """Per bucket, our published arrival predictions and the timetable's for the same stops, scored
    against when the model's buses really arrived (api/transit/accuracy.py: TransitApp's windows)."""
    truth = {ride.run.key: ride for bus in buses for ride in bus.rides}
    service = TransitService(transit_settings(gtfs.parent, gtfs, transit_silent_route_alerts=False))
    day = int(dt.datetime.combine(FRIDAY, dt.time(6), tzinfo=timetable._zone).timestamp())
    ours: list[Score] = []
    schedule: list[Score] = []
    for now_s in range(day, day + 16 * 3600 + 1, SAMPLE_EVERY_S):
        reader = PointsInMemory(list(fixes_between(timetable, buses, now_s - 130, now_s + 1)))
        snapshot = service.build(reader, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
        for _vehicle, match, predictions in published_predictions(snapshot):
            ride = truth.get(match.run.key)
            if ride is None:
                continue
            route = match.run.trip.route_id
            for index, predicted_s in predictions:
                actual_s = ride.actual_arrivals[index]
                mine = score(route, now_s, predicted_s, actual_s)
                timetable_only = score(route, now_s, ride.run.arrival(index), actual_s)
                if mine is not None and timetable_only is not None:
                    ours.append(mine)
                    schedule.append(timetable_only)
    return tally(ours), tally(schedule)


def validator_errors(timetable: Timetable, buses: list[Bus], gtfs: Path, folder: Path) -> int:
    """ERROR notices of MobilityData's gtfs-rt-validator on the three feeds built from the model's buses,
    fetched three times 12 s apart at each of three moments of the day (as tests/api/transit does)."""
    cycles = []
    for moment in VALIDATED_AT:
        service = TransitService(transit_settings(gtfs.parent, gtfs))
        start_s = int(dt.datetime.combine(FRIDAY, moment, tzinfo=timetable._zone).timestamp())
        for now_s in range(start_s, start_s + 3 * SNAPSHOT_GAP_S, SNAPSHOT_GAP_S):
            reader = PointsInMemory(list(fixes_between(timetable, buses, now_s - 150, now_s + 1)))
            snapshot = service.snapshot(reader, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
            fetched = dt.datetime.fromtimestamp(now_s, dt.UTC)
            paths = {}
            for role, kind in VALIDATED_ROLES.items():
                paths[role] = folder / f"{kind}-{fetched:%Y-%m-%dT%H-%M-%SZ}.pb"
                paths[role].write_bytes(snapshot.feeds[kind].SerializeToString())
            cycles.append(role_cycle(paths))
    result = validate(
        Request(mode=Mode.MODERN, gtfs=gtfs, inputs=Inputs(tuple(cycles), True), sort_by=SortBy.NAME)
    )
    result.write(folder / "report")
    report = json.loads((folder / "report" / "report.json").read_text())
    return sum(notice["totalNotices"] for notice in report["notices"] if notice["severity"] == "ERROR")


def _rounded(share: float | None) -> float | None:
    return None if share is None else round(share, 3)


def _figure(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.3f}"


def _share(counted: Tally) -> str:
    return _figure(counted.share)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fixes", type=int, default=200, help="fixes published for the latency (default 200)"
    )
    parser.add_argument("--vehicles", type=int, default=2000, help="vehicles in the build benchmark")
    parser.add_argument("--requests", type=int, default=3000, help="requests per cached-rate measurement")
    parser.add_argument("--seed", type=int, default=2027, help="seed of bench/bus_model.py's buses")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citygw-transit-bench-") as name:
        folder = Path(name)
        gtfs = folder / "lviv.zip"
        gtfs.write_bytes(network_zip())
        timetable = load_gtfs(gtfs.read_bytes())
        buses = drive_day(timetable, FRIDAY, seed=args.seed)
        latencies = fix_to_feed(folder, gtfs, args.fixes)
        cold_s, build_s, serialise_s, ratio = build_ratio(timetable, buses, gtfs, args.vehicles)
        feed_rate, health_rate = cached_rps(folder, gtfs, args.requests)
        ours, schedule_only = eta_accuracy(timetable, buses, gtfs)
        (folder / "validator").mkdir()
        errors = validator_errors(timetable, buses, gtfs, folder / "validator")
    accuracy, schedule_accuracy = overall(ours), overall(schedule_only)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(f"fix to feed over {len(latencies)} fixes: p50 {p50:.3f} s, p99 {p99:.3f} s (target p99 < 1 s)")
    print(
        f"build for {args.vehicles} vehicles {build_s:.3f} s once a second (first build {cold_s:.3f} s),"
        f" serialise {serialise_s:.4f} s"
    )
    print(f"cached feed {feed_rate:.0f} req/s (304), /health baseline {health_rate:.0f} req/s")
    for mine, timetable_only in zip(ours, schedule_only, strict=True):
        print(
            f"ETA {mine.window.bucket} min ahead within -{mine.window.early_s}/+{mine.window.late_s} s:"
            f" ours {_share(mine)}, timetable alone {_share(timetable_only)} ({mine.predictions} predictions)"
        )
    print(
        f"ETA within TransitApp windows (mean of the buckets): ours {_figure(accuracy)},"
        f" timetable alone {_figure(schedule_accuracy)} (target >= 0.85)"
    )
    print(f"gtfs-rt-validator ERROR notices on the model's feeds: {errors}")
    print(
        json.dumps(
            {
                "fix_to_feed_p50_s": round(p50, 4),
                "fix_to_feed_p99_s": round(p99, 4),
                "build_ratio": round(ratio, 1),
                "cached_rps": round(feed_rate),
                "eta_within_windows": _rounded(accuracy),
                "eta_within_windows_schedule_only": _rounded(schedule_accuracy),
                "eta_by_bucket": {t.window.bucket: _rounded(t.share) for t in ours},
                "eta_by_bucket_schedule_only": {t.window.bucket: _rounded(t.share) for t in schedule_only},
                "eta_predictions": sum(t.predictions for t in ours),
                "validator_errors": errors,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
