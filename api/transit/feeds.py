"""The transit feeds of one API process: timetable, trip matching, the three feeds, their clocks.

``TransitService.snapshot`` reads the store once and builds VehiclePositions, TripUpdates and
Alerts together, so the feeds agree with each other (same vehicles on the same runs). A snapshot
is reused for ``rebuild_interval_s``, which bounds the store queries however many apps poll. It is
rebuilt in a thread of its own, so a slow build (a busy store, a loaded machine) delays a feed
request by ``transit_feed_wait_s`` at most: the request is then answered from the previous snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf import json_format
from google.transit import gtfs_realtime_pb2

from api.settings import ApiSettings
from api.transit.alerts import AlertBoard, add_operator_alerts, add_silent_route_alerts
from api.transit.blocks import next_runs
from api.transit.fleet import Fleet
from api.transit.history import HistoryLearner
from api.transit.isolation import vehicle_extra
from api.transit.matching import MatchRules, TripMatch
from api.transit.missed_runs import add_missed_run_alerts, missed_runs
from api.transit.occupancy import VALIDATOR_MEASUREMENT, Occupancy, estimate
from api.transit.source import TimetableSource
from api.transit.timetable import Timetable
from api.transit.trip_changes import RunChange, TripChangeBoard, add_changed_runs
from api.transit.trip_updates import AT_STOP_M, TripProgress, add_trip_updates
from api.transit.vehicle_positions import (
    GTFS_REALTIME_VERSION,
    MEASUREMENT,
    Fix,
    Placement,
    vehicle_feed,
)
from collector.store.base import Row, StoreError, TelemetryReader

log = logging.getLogger(__name__)

PROTOBUF_MEDIA_TYPE = "application/x-protobuf"
SERVED_MEMORY_MS = 36 * 3_600_000  # longer than any run lasts, a service day and its night included
_VP = gtfs_realtime_pb2.VehiclePosition


class FeedFormat(StrEnum):
    PB = "pb"
    JSON = "json"


class FeedKind(StrEnum):
    VEHICLE_POSITIONS = "vehicle-positions"
    TRIP_UPDATES = "trip-updates"
    ALERTS = "alerts"


class FeedClock:
    """Header timestamps: the build time, never earlier than the previous one (thread-safe).

    GTFS-realtime's header timestamp is when the feed's content was made, so it is the build
    time even when the newest fix is older (a frozen header reads as a stale feed: W007, W008).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_s = 0

    def stamp(self, feed: gtfs_realtime_pb2.FeedMessage, *, now_s: int) -> None:
        with self._lock:
            self._last_s = max(now_s, self._last_s)
            feed.header.timestamp = self._last_s


@dataclass
class EncodedFeed:
    body: bytes
    media_type: str
    etag: str
    timestamp_s: int


@dataclass
class Snapshot:
    """The three feeds as of ``built_at_ms``, encoded on first use per format."""

    built_at_ms: int
    feeds: dict[FeedKind, gtfs_realtime_pb2.FeedMessage]
    matches: dict[str, TripMatch] = field(default_factory=dict)
    vehicles: dict[str, Fix] = field(default_factory=dict)  # each vehicle's newest fix in the feeds
    occupancies: dict[str, Occupancy] = field(default_factory=dict)
    _encoded: dict[tuple[FeedKind, FeedFormat], EncodedFeed] = field(default_factory=dict)
    _entities: dict[str, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached_encoding(self, kind: FeedKind, fmt: FeedFormat) -> EncodedFeed | None:
        """The feed encoded already, or None (without waiting for an encoding under way)."""
        return self._encoded.get((kind, fmt))

    def encoded(self, kind: FeedKind, fmt: FeedFormat) -> EncodedFeed:
        with self._lock:
            known = self._encoded.get((kind, fmt))
            if known is None:
                known = self._encoded[(kind, fmt)] = encode(self.feeds[kind], fmt)
            return known

    def vehicle_entities(self) -> dict[str, str]:
        """Each VehiclePositions entity as compact JSON by id, made once per snapshot for every stream."""
        with self._lock:
            if self._entities is None:
                self._entities = {
                    entity.id: json.dumps(
                        json_format.MessageToDict(entity, preserving_proto_field_name=True),
                        separators=(",", ":"),
                        ensure_ascii=False,
                    )
                    for entity in self.feeds[FeedKind.VEHICLE_POSITIONS].entity
                }
            return self._entities


def encode(feed: gtfs_realtime_pb2.FeedMessage, fmt: FeedFormat) -> EncodedFeed:
    """Protobuf (deterministic bytes) or the protobuf JSON mapping with proto field names."""
    if fmt is FeedFormat.PB:
        body, media_type = feed.SerializeToString(deterministic=True), PROTOBUF_MEDIA_TYPE
    else:
        as_dict = json_format.MessageToDict(feed, preserving_proto_field_name=True)
        body, media_type = (
            json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False).encode(),
            "application/json",
        )
    return EncodedFeed(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"', feed.header.timestamp)


def _empty_feed(now_ms: int) -> gtfs_realtime_pb2.FeedMessage:
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.header.gtfs_realtime_version = GTFS_REALTIME_VERSION
    feed.header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    feed.header.timestamp = now_ms // 1000
    return feed


def place(match: TripMatch, timetable: Timetable, fix: Fix) -> Placement:
    """Stop sequence, stop and status of a matched vehicle: STOPPED_AT within 30 m and slow."""
    path = timetable.path(match.run.trip.trip_id)
    stop_time = match.run.trip.stop_times[match.next_stop]
    gap = path.stop_along_m[match.next_stop] - match.along_m
    slow = fix.speed_mps is None or fix.speed_mps < 1.5
    if abs(gap) <= AT_STOP_M and slow:
        status = _VP.STOPPED_AT
    elif gap <= 150:
        status = _VP.INCOMING_AT
    else:
        status = _VP.IN_TRANSIT_TO
    return Placement(match, stop_time.stop_sequence, stop_time.stop_id, status)


def occupancies(rows: list[Row], *, capacity: int, since_ms: int) -> dict[str, Occupancy]:
    """Each bus's occupancy over the ride since ``since_ms`` (``rows`` reach further back)."""
    by_vehicle: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        vehicle_id = row.tags.get("vehicle")
        if vehicle_id:
            by_vehicle[vehicle_id].append(row)
    found = {}
    for vehicle_id, vehicle_rows in by_vehicle.items():
        vehicle_rows.sort(key=lambda row: row.ts_ms)
        occupancy = vehicle_extra(
            vehicle_id, "occupancy", estimate, vehicle_rows, capacity=capacity, since_ms=since_ms
        )
        if occupancy is not None:
            found[vehicle_id] = occupancy
    return found


class TransitService:
    """Timetable source, alert board and feed clocks of one API process."""

    def __init__(self, settings: ApiSettings | None = None, *, rules: MatchRules | None = None) -> None:
        self.settings = settings if settings is not None else ApiSettings()
        self.source = TimetableSource(self.settings.transit_gtfs_path)
        self.alerts = AlertBoard(self.settings.transit_alerts_path)
        self.trip_changes = TripChangeBoard(self.settings.transit_alerts_path)
        self.history = HistoryLearner(
            days=self.settings.transit_history_days,
            sample_s=self.settings.transit_history_sample_s,
            min_samples=self.settings.transit_history_min_samples,
        )
        self.rules = rules or MatchRules()
        self.fleet = Fleet(window_s=self.settings.transit_match_window_s, rules=self.rules)
        self.clocks = {kind: FeedClock() for kind in FeedKind}
        self._lock = threading.Lock()  # guards _building
        self._building: Future[Snapshot] | None = None  # the build under way, if any
        self._snapshot: Snapshot | None = None
        self._served_runs: dict[str, int] = {}  # run key → last build that had a bus on it (ms)

    def snapshot(
        self,
        store: TelemetryReader,
        *,
        now_ms: int,
        max_age_s: float,
        max_ahead_s: float,
        wait_s: float | None = None,
    ) -> Snapshot:
        """The feeds as of ``now_ms``; one built less than ``rebuild_interval_s`` ago is reused.

        A snapshot that aged out is rebuilt in a thread of its own, one build at a time. The caller
        that starts the build waits for it, at most ``wait_s`` (None: until it is done), and past that
        gets the previous snapshot while the build goes on; callers that come meanwhile get the
        previous one at once instead of queueing behind the build (the feed's p99 would be the build's
        time). The first snapshot is waited for by everyone: there is nothing else to serve.
        """
        known = self._snapshot
        if known is not None and self._fresh(known, now_ms):
            return known
        with self._lock:
            building = self._building
            starting = building is None
            if building is None:
                building = self._building = Future()
                threading.Thread(
                    target=self._build_into,
                    args=(building, store, now_ms, max_age_s, max_ahead_s),
                    name="transit-feed-build",
                    daemon=True,
                ).start()
        if known is None:
            return building.result()
        if not starting:
            return known
        try:
            return building.result(timeout=wait_s)
        except FutureTimeout:
            return known  # the build goes on: the next callers get it once it is done

    def _build_into(
        self,
        building: Future[Snapshot],
        store: TelemetryReader,
        now_ms: int,
        max_age_s: float,
        max_ahead_s: float,
    ) -> None:
        """Build a snapshot, publish it, then hand it (or why it failed) to the callers waiting for it."""
        try:
            snapshot = self.build(store, now_ms=now_ms, max_age_s=max_age_s, max_ahead_s=max_ahead_s)
            for kind, feed in snapshot.feeds.items():
                self.clocks[kind].stamp(feed, now_s=now_ms // 1000)
            self._snapshot = snapshot
        except BaseException as exc:
            # The caller that started it may have stopped waiting: the reason must not be lost.
            unexpected = not isinstance(exc, StoreError)
            log.warning("building the transit feeds failed: %r", exc, exc_info=unexpected)
            with self._lock:
                self._building = None
            building.set_exception(exc)
            return
        with self._lock:
            self._building = None
        building.set_result(snapshot)

    def ready(self, now_ms: int) -> Snapshot | None:
        """The snapshot to answer with now without building: a fresh one, or the last one while
        a build is under way; None when the caller must build (``snapshot``)."""
        known = self._snapshot
        if known is None:
            return None
        return known if self._fresh(known, now_ms) or self._building is not None else None

    def _fresh(self, snapshot: Snapshot, now_ms: int) -> bool:
        return 0 <= now_ms - snapshot.built_at_ms < self.settings.transit_rebuild_interval_s * 1000

    def build(self, store: TelemetryReader, *, now_ms: int, max_age_s: float, max_ahead_s: float) -> Snapshot:
        """All three feeds from the store as of ``now_ms`` (header timestamps not yet stamped).

        Only fixes newer than the previous build are read: the fleet keeps the rest.
        """
        now_s = now_ms // 1000
        published = self.source.for_realtime(now_s)
        timetable = published.timetable if published is not None else None
        alerts = _empty_feed(now_ms)
        add_operator_alerts(alerts, self.alerts.in_force(now_s))
        rows = store.range(
            measurement=MEASUREMENT,
            start_ms=self.fleet.read_from_ms(now_ms, timetable),
            end_ms=now_ms + int(max_ahead_s * 1000) + 1,
        )
        newest, matches = self.fleet.update(
            rows,
            timetable,
            now_ms=now_ms,
            max_age_s=max_age_s,
            max_ahead_s=max_ahead_s,
            grace_s=self.settings.transit_stale_grace_s,
        )
        if timetable is None:
            return Snapshot(
                now_ms,
                {
                    FeedKind.VEHICLE_POSITIONS: vehicle_feed(newest, now_ms=now_ms),
                    FeedKind.TRIP_UPDATES: _empty_feed(now_ms),
                    FeedKind.ALERTS: alerts,
                },
                vehicles=newest,
            )
        ride_ms = self.settings.transit_ride_minutes * 60_000
        validator_rows = store.range(  # a ride back, and before it: were the counters read then?
            measurement=VALIDATOR_MEASUREMENT, start_ms=now_ms - 2 * ride_ms, end_ms=now_ms + 1
        )
        loads = occupancies(
            validator_rows, capacity=self.settings.transit_vehicle_capacity, since_ms=now_ms - ride_ms
        )
        changes = self.trip_changes.by_run(timetable, now_s)
        # The operator's word wins: a bus found on a canceled run is published without it.
        matches = {v: m for v, m in matches.items() if not (c := changes.get(m.run.key)) or not c.canceled}
        placements = {}
        for vehicle_id, match in matches.items():
            placement = vehicle_extra(
                vehicle_id, "trip placement", place, match, timetable, newest[vehicle_id]
            )
            if placement is not None:
                placements[vehicle_id] = placement
        vehicle_positions = vehicle_feed(
            newest,
            now_ms=now_ms,
            placements=placements,
            occupancies=loads,
            known_routes=timetable.routes,
        )
        trip_updates = _empty_feed(now_ms)
        trip_updates.header.timestamp = vehicle_positions.header.timestamp
        progress = [
            TripProgress(v, newest[v].label, newest[v].ts_ms // 1000, m, timetable.path(m.run.trip.trip_id))
            for v, m in matches.items()
        ]
        # A bus silent past its max age keeps its run's TripUpdate (its time says how old) but no next run;
        # a next run an operator changed is published as changed.
        heard_since_ms = now_ms - max_age_s * 1000
        heard_lately = [bus for bus in progress if newest[bus.vehicle_id].ts_ms >= heard_since_ms]
        following = [
            bus
            for bus in next_runs(heard_lately, timetable, now_s=now_s, learned=self.history.learned)
            if bus.match.run.key not in changes
        ]
        add_trip_updates(
            trip_updates,
            progress + following,
            now_s=now_s,
            learned=self.history.learned,
            skipped={key: change.skipped for key, change in changes.items()},
        )
        with_bus = {match.run.key for match in matches.values()}
        add_changed_runs(trip_updates, [c for k, c in changes.items() if k not in with_bus], now_s=now_s)
        after_s = self.settings.transit_missed_run_after_s
        if after_s > 0:
            # A run once seen with a bus was not missed, whatever became of its bus (early, tracker off).
            self._served_runs = {
                k: ms for k, ms in self._served_runs.items() if ms > now_ms - SERVED_MEMORY_MS
            }
            self._served_runs.update((key, now_ms) for key in with_bus)
            # A run a bus's block says it drives next is coming, not missed.
            seen = changes.keys() | self._served_runs.keys() | {bus.match.run.key for bus in following}
            missed = missed_runs(timetable, matches, newest, now_s=now_s, after_s=after_s, known=seen)
            add_changed_runs(
                trip_updates,
                [RunChange(run, canceled=True, since_s=int(run.departure(0) + after_s)) for run in missed],
                now_s=now_s,
            )
            add_missed_run_alerts(alerts, timetable, missed)
        if self.settings.transit_silent_route_alerts:
            running = {run.trip.route_id for run in timetable.runs_between(now_s, now_s)}
            heard = {m.run.trip.route_id for m in matches.values()} | {
                fix.route_id for fix in newest.values() if fix.route_id
            }
            add_silent_route_alerts(alerts, timetable, running - heard)
        feeds = {
            FeedKind.VEHICLE_POSITIONS: vehicle_positions,
            FeedKind.TRIP_UPDATES: trip_updates,
            FeedKind.ALERTS: alerts,
        }
        assert published is not None
        for feed in feeds.values():  # which static zip the ids refer to (gtfs-realtime.proto)
            feed.header.feed_version = published.feed_version
        return Snapshot(now_ms, feeds, matches, newest, loads)
