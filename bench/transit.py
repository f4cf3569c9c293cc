"""Transit benchmark: fix-to-feed latency, feed build cost, cached feed rate, ETA accuracy.

    .venv/bin/python bench/transit.py [--fixes 200] [--vehicles 2000] [--requests 3000] [--seed 2027]
                                      [--history-days 10] [--history-period 10] [--eta-only]

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
   holding at random stops: nothing the predictor is told) through the simulated Friday; from 06:00
   to 22:00 the feeds are built every minute from their positions (the service keeping its state
   between builds, as in production), and every 2 min each published arrival is scored against
   when the bus really arrived, in TransitApp's ETA Accuracy Benchmark buckets and windows
   (api/transit/accuracy.py); the timetable's arrival for the same stops is scored alike. The
   figure is the mean of the four buckets' shares (target >= 0.85).
   Predictions are scored three ways in the same run: the timetable alone; carrying the bus's
   current delay along the schedule (no history: the API's first day); and with running times and
   dwells learned from history, as production has them: the same model drives ``--history-days``
   weekdays before the Friday (the same parameters, other draws: every bus's seed holds its date),
   their positions (one per ``--history-period`` s per bus) are written to a SqliteStore, and the
   service's own ``HistoryLearner`` reads them back at startup (api/transit/history.py); the
   Friday's feed is then published with what it learned.
5. validator ERRORs: MobilityData's gtfs-rt-validator on the three feeds of the model's buses,
   fetched three times 12 s apart at 08:00, 13:00 and 17:30 (target 0).

``--eta-only`` runs part 4 alone (for scoring several seeds). The last line printed is one JSON
object with the figures.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
from api.transit.accuracy import WINDOWS, Score, Tally, overall, score, tally  # noqa: E402
from api.transit.accuracy_watch import published_predictions  # noqa: E402
from api.transit.feeds import FeedKind, TransitService  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from api.transit.history import LearnedTimes, LocalHours, Spread  # noqa: E402
from api.transit.timetable import Timetable  # noqa: E402
from api.transit.trip_updates import predict  # noqa: E402
from bench.bus_model import drive_day, segment_times  # noqa: E402
from citygw.contract import wire  # noqa: E402
from collector.service import Collector  # noqa: E402
from collector.store.base import Aggregate, DeviceKey, Point, Row, device_key, newest_per_device  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402
from simulators.transit.buses import Bus, fixes_between  # noqa: E402
from simulators.transit.network import network_zip  # noqa: E402
from tests.services import Mosquitto, free_port  # noqa: E402

FRIDAY = dt.date(2027, 1, 15)
SAMPLE_EVERY_S = 120
# The service builds its feeds this often between samples, so that it keeps each bus's run and block from
# one build to the next as production does (it rebuilds every second; state lasts a match window).
BUILD_EVERY_S = 60
VALIDATED_AT = (dt.time(8), dt.time(13), dt.time(17, 30))
SNAPSHOT_GAP_S = 12  # >= 10 s between fetches, under W007's 35 s refresh limit
VALIDATED_ROLES = {"vp": FeedKind.VEHICLE_POSITIONS, "tu": FeedKind.TRIP_UPDATES, "sa": FeedKind.ALERTS}
HISTORY_DAYS = 10  # two working weeks: production learns from 14 days (ApiSettings.transit_history_days)
HISTORY_PERIOD_S = 10  # a fix every 10 s: one per window the learner averages over (its sample_s)


class PointsInMemory:
    """A TelemetryReader over a list of points: the build cost without a database's."""

    def __init__(self, points: Sequence[Point]) -> None:
        self.points = sorted(points, key=lambda p: p.ts_ms)  # a database reads a time range by index
        self._by_measurement: dict[str, list[Point]] = {}  # ... of one measurement
        for p in self.points:
            self._by_measurement.setdefault(p.measurement, []).append(p)
        self._times = {name: [p.ts_ms for p in kept] for name, kept in self._by_measurement.items()}

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
        times, kept = self._times.get(measurement, []), self._by_measurement.get(measurement, [])
        first, last = bisect.bisect_left(times, start_ms), bisect.bisect_left(times, end_ms)
        return [Row(p.ts_ms, p.tags, dict(p.fields)) for p in kept[first:last]]

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


def fleet_points(
    timetable: Timetable, buses: list[Bus], start_s: int, end_s: int, *, vehicles: int, fresh_at_s: int
) -> list[Point]:
    """The buses' fixes in [start_s, end_s), copied under new vehicle ids until ``vehicles`` of them
    have a fix in the 90 s before ``fresh_at_s`` (a larger city's fleet); only those are kept."""
    base = list(fixes_between(timetable, buses, start_s, end_s))
    fresh_ms = (fresh_at_s - 90) * 1000
    copies = vehicles // len({p.tags["vehicle"] for p in base if p.ts_ms >= fresh_ms}) + 1
    points: list[Point] = []
    for copy in range(copies):
        for p in base:
            tags = {
                **p.tags,
                "vehicle": f"{p.tags['vehicle']}-{copy}",
                "device": f"{p.tags['device']}-{copy}",
            }
            points.append(Point(p.measurement, tags, p.ts_ms, p.fields))
    keep = set(sorted({p.tags["vehicle"] for p in points if p.ts_ms >= fresh_ms})[:vehicles])
    return [p for p in points if p.tags["vehicle"] in keep]


def build_ratio(
    timetable: Timetable, buses: list[Bus], gtfs: Path, vehicles: int
) -> tuple[float, float, float, float]:
    """(cold build s, steady build s, serialise s, steady build / serialise) for ``vehicles`` at 10:00.

    The cold build matches every bus from its fixes; then the service builds once a second (the
    default rebuild interval) for 30 s with the fixes that arrived meanwhile: the median of those
    is the steady build (bench/transit_build.py times them against a baseline).
    """
    now_s = int(dt.datetime.combine(FRIDAY, dt.time(10), tzinfo=timetable._zone).timestamp())
    start_s = now_s - 30
    points = fleet_points(timetable, buses, start_s - 120, now_s + 1, vehicles=vehicles, fresh_at_s=start_s)
    service = TransitService(transit_settings(gtfs.parent, gtfs))
    service.source.current()
    builds: list[float] = []
    for at_s in range(start_s, now_s + 1):
        # What the store holds at ``at_s``: nothing from the future.
        reader = PointsInMemory([p for p in points if p.ts_ms <= at_s * 1000])
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


def weekdays_before(day: dt.date, count: int) -> list[dt.date]:
    """The ``count`` weekdays (Monday to Friday) before ``day``, oldest first."""
    found: list[dt.date] = []
    date = day
    while len(found) < count:
        date -= dt.timedelta(days=1)
        if date.weekday() < 5:
            found.append(date)
    return found[::-1]


K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class History:
    """What the learner was given and what it made of it."""

    days: int
    fixes: int
    learn_s: float  # HistoryLearner.refresh over the store, what the API does at startup
    learned: LearnedTimes
    run_error_s: float | None  # median |learned - the model's| over learned segment-hours
    dwell_error_s: float | None  # the same over learned stop-hours


def learning_error_s(learned: Mapping[K, Spread], truth: Mapping[K, list[float]]) -> float | None:
    """The median, over what was learned, of how far its median is from the model's true median."""
    off = [
        abs(spread.median_s - statistics.median(truth[key]))
        for key, spread in learned.items()
        if key in truth
    ]
    return statistics.median(off) if off else None


def learn_history(
    timetable: Timetable, gtfs: Path, folder: Path, *, seed: int, days: int, period_s: int
) -> History:
    """The model's buses on the ``days`` weekdays before FRIDAY, stored in a SqliteStore and learned
    by a TransitService's own HistoryLearner at 06:00 on FRIDAY (its startup refresh)."""
    dates = weekdays_before(FRIDAY, days)
    now_s = int(dt.datetime.combine(FRIDAY, dt.time(6), tzinfo=timetable._zone).timestamp())
    # The learner keeps what reaches back to the first of them (production: 14 days, weekends too).
    span_days = (now_s - timetable.day_start(dates[0])) / 86_400 if dates else 1.0
    settings = transit_settings(gtfs.parent, gtfs, transit_history_days=min(90.0, span_days))
    store = SqliteStore(folder / "history.sqlite")
    fixes = 0
    hours = LocalHours(timetable.timezone)
    true_runs: dict[tuple[str, str, int], list[float]] = {}
    true_dwells: dict[tuple[str, int], list[float]] = {}
    try:
        for date in dates:
            start_s = timetable.day_start(date)
            buses = drive_day(timetable, date, seed=seed)
            runs, dwells = segment_times(buses, hours)
            for key, found in runs.items():
                true_runs.setdefault(key, []).extend(found)
            for stop_key, found in dwells.items():
                true_dwells.setdefault(stop_key, []).extend(found)
            points = list(fixes_between(timetable, buses, start_s, start_s + 28 * 3600, period_s=period_s))
            store.write(points)
            fixes += len(points)
        service = TransitService(settings)
        started = time.perf_counter()
        service.history.refresh(store, timetable, now_ms=now_s * 1000)
        learn_s = time.perf_counter() - started
    finally:
        store.close()
    learned = service.history.learned
    assert learned is not None
    return History(
        len(dates),
        fixes,
        learn_s,
        learned,
        learning_error_s(learned.runs, true_runs),
        learning_error_s(learned.dwells, true_dwells),
    )


@dataclass(frozen=True, slots=True)
class EtaScores:
    """The same predicted stops scored three ways."""

    carried: list[Score]  # the delay carried along the schedule: no history
    learned: list[Score]  # running times and dwells learned from history
    schedule: list[Score]  # the timetable alone


def eta_accuracy(
    timetable: Timetable, buses: list[Bus], gtfs: Path, learned: LearnedTimes | None
) -> EtaScores:
    """Per bucket, our published arrival predictions with ``learned`` history, the ones carrying the
    delay for the same matched buses and stops, and the timetable's, scored against when the model's
    buses really arrived (api/transit/accuracy.py: TransitApp's windows)."""
    truth = {ride.run.key: ride for bus in buses for ride in bus.rides}
    service = TransitService(transit_settings(gtfs.parent, gtfs, transit_silent_route_alerts=False))
    service.history.learned = learned
    day = int(dt.datetime.combine(FRIDAY, dt.time(6), tzinfo=timetable._zone).timestamp())
    carried: list[Score] = []
    ours: list[Score] = []
    schedule: list[Score] = []
    for now_s in range(day, day + 16 * 3600 + 1, BUILD_EVERY_S):
        reader = PointsInMemory(list(fixes_between(timetable, buses, now_s - 130, now_s + 1)))
        snapshot = service.build(reader, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
        if (now_s - day) % SAMPLE_EVERY_S:
            continue
        for _vehicle, match, predictions in published_predictions(snapshot):
            ride = truth.get(match.run.key)
            if ride is None:
                continue
            route = match.run.trip.route_id
            # What the feed says without history: the same code with nothing learned.
            without = {
                p.index: p.arrival_s
                for p in predict(match, timetable.path(match.run.trip.trip_id), now_s=now_s)
            }
            for index, predicted_s in predictions:
                actual_s = ride.actual_arrivals[index]
                scores = (
                    score(route, now_s, without[index], actual_s),
                    score(route, now_s, predicted_s, actual_s),
                    score(route, now_s, ride.run.arrival(index), actual_s),
                )
                if all(s is not None for s in scores):
                    for scored, found in zip((carried, ours, schedule), scores, strict=True):
                        assert found is not None
                        scored.append(found)
    return EtaScores(carried, ours, schedule)


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


def _tenths(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _lateness(scores: list[Score]) -> dict[str, float]:
    """Per bucket, the median of how much later than predicted the bus arrived (s)."""
    late: dict[str, list[float]] = {window.bucket: [] for window in WINDOWS}
    for found in scores:
        late[found.window.bucket].append(found.arrived_s - found.predicted_s)
    return {bucket: round(statistics.median(seconds), 1) for bucket, seconds in late.items() if seconds}


def _buckets(tallies: list[Tally]) -> dict[str, float | None]:
    return {t.window.bucket: _rounded(t.share) for t in tallies}


def eta_report(scores: EtaScores, history: History) -> dict[str, object]:
    """Print the ETA figures; their JSON keys."""
    by_bucket = {
        "carried": tally(scores.carried),
        "learned": tally(scores.learned),
        "schedule": tally(scores.schedule),
    }
    carried, learned, schedule = (overall(tallies) for tallies in by_bucket.values())
    print(
        f"history: {history.days} weekdays, {history.fixes} fixes, learned in {history.learn_s:.1f} s:"
        f" {len(history.learned.runs)} segment-hours, {len(history.learned.dwells)} stop-hours;"
        f" their medians off the model's by {_seconds(history.run_error_s)} (running times),"
        f" {_seconds(history.dwell_error_s)} (dwells) at the median"
    )
    for mine, with_history, timetable_only in zip(*by_bucket.values(), strict=True):
        print(
            f"ETA {mine.window.bucket} min ahead within -{mine.window.early_s}/+{mine.window.late_s} s:"
            f" delay carried {_share(mine)}, learned {_share(with_history)},"
            f" timetable alone {_share(timetable_only)} ({mine.predictions} predictions)"
        )
    print(
        f"ETA within TransitApp windows (mean of the buckets): delay carried {_figure(carried)},"
        f" learned {_figure(learned)}, timetable alone {_figure(schedule)} (target >= 0.85)"
    )
    return {
        "eta_within_windows": _rounded(carried),
        "eta_within_windows_learned": _rounded(learned),
        "eta_within_windows_schedule_only": _rounded(schedule),
        "eta_by_bucket": _buckets(by_bucket["carried"]),
        "eta_by_bucket_learned": _buckets(by_bucket["learned"]),
        "eta_by_bucket_schedule_only": _buckets(by_bucket["schedule"]),
        "eta_predictions": len(scores.carried),
        "history_days": history.days,
        "history_fixes": history.fixes,
        "history_learn_s": round(history.learn_s, 1),
        "history_segment_hours": len(history.learned.runs),
        "history_run_error_s": _tenths(history.run_error_s),
        "history_dwell_error_s": _tenths(history.dwell_error_s),
        "eta_median_late_s": {"carried": _lateness(scores.carried), "learned": _lateness(scores.learned)},
    }


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
    parser.add_argument(
        "--history-days", type=int, default=HISTORY_DAYS, help="weekdays learned from before the Friday"
    )
    parser.add_argument(
        "--history-period", type=int, default=HISTORY_PERIOD_S, help="seconds between a bus's stored fixes"
    )
    parser.add_argument("--eta-only", action="store_true", help="score the ETAs only (part 4)")
    args = parser.parse_args()
    if args.history_days < 1 or args.history_period < 1:
        parser.error("--history-days and --history-period must be at least 1")
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="citygw-transit-bench-") as name:
        folder = Path(name)
        gtfs = folder / "lviv.zip"
        gtfs.write_bytes(network_zip())
        timetable = load_gtfs(gtfs.read_bytes())
        buses = drive_day(timetable, FRIDAY, seed=args.seed)
        if not args.eta_only:
            latencies = fix_to_feed(folder, gtfs, args.fixes)
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
            print(
                f"fix to feed over {len(latencies)} fixes: p50 {p50:.3f} s, p99 {p99:.3f} s"
                " (target p99 < 1 s)"
            )
            cold_s, build_s, serialise_s, ratio = build_ratio(timetable, buses, gtfs, args.vehicles)
            print(
                f"build for {args.vehicles} vehicles {build_s:.3f} s once a second"
                f" (first build {cold_s:.3f} s), serialise {serialise_s:.4f} s"
            )
            feed_rate, health_rate = cached_rps(folder, gtfs, args.requests)
            print(f"cached feed {feed_rate:.0f} req/s (304), /health baseline {health_rate:.0f} req/s")
            figures |= {
                "fix_to_feed_p50_s": round(p50, 4),
                "fix_to_feed_p99_s": round(p99, 4),
                "build_ratio": round(ratio, 1),
                "cached_rps": round(feed_rate),
            }
        history = learn_history(
            timetable, gtfs, folder, seed=args.seed, days=args.history_days, period_s=args.history_period
        )
        figures |= eta_report(eta_accuracy(timetable, buses, gtfs, history.learned), history)
        if not args.eta_only:
            (folder / "validator").mkdir()
            errors = validator_errors(timetable, buses, gtfs, folder / "validator")
            print(f"gtfs-rt-validator ERROR notices on the model's feeds: {errors}")
            figures["validator_errors"] = errors
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
