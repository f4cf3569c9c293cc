"""Running times learned from the store's history, per segment (a pair of stops) and hour of day.

Stored ``vehicle_position`` points are read back averaged over short windows by the store, one
track per device. Where a track passes within ``VISIT_RADIUS_M`` of a stop is a visit (arrive,
leave). For two stops consecutive on some trip, leaving the first and reaching the next is one
running-time sample of that segment, at the local hour the bus left; how long it stood at the next
stop is a dwell sample. Per segment and hour the predictor gets the median and the standard deviation, or
nothing where fewer than ``min_samples`` were seen (it falls back on the schedule there).

Learning happens at startup and then every ``CITYGW_TRANSIT_HISTORY_REFRESH_S`` in the background
(``HistoryLearner.refresh``: only what arrived since the previous refresh is read), never per request.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from api.transit.timetable import Timetable
from collector.store.base import Aggregate, Row, TelemetryReader

log = logging.getLogger(__name__)

MEASUREMENT = "vehicle_position"
VISIT_RADIUS_M = 30.0  # a track passing this near a stop visits it (the stop's kerb, GPS noise)
STOPPED_MPS = 0.5  # slower than this near a stop, a bus is standing at it (GPS speed noise is less)
MAX_GAP_S = 90.0  # fixes further apart than this are two tracks (a tunnel, a receiver off)
MAX_RUN_S = 1800.0  # a "segment" longer than this was a detour, a depot visit or a break
MAX_DWELL_S = 600.0  # standing longer is a layover, not a dwell
LOOK_AHEAD = 8  # visits after leaving a stop among which its next stop is looked for
KEEP_SAMPLES = 200  # newest samples kept per segment and hour
CHUNK_MS = 6 * 3_600_000  # history is read a quarter of a day at a time
SETTLE_MS = 60_000  # points this recent may still be arriving: read at the next refresh
OVERLAP_MS = int((MAX_RUN_S + MAX_DWELL_S) * 1000)  # longest a sample reaches past its time


@dataclass(frozen=True, slots=True)
class Spread:
    """What history says of one segment (or dwell) at one hour."""

    median_s: float  # what a run takes: a rare jam does not move it
    sd_s: float  # the standard deviation: jams that happen count in how sure a prediction is
    samples: int


def spread(samples: Sequence[float]) -> Spread:
    """Median and standard deviation of ``samples`` (a robust spread said a third of arrivals fell
    within one stated uncertainty on the simulated network, this one some 0.6: bench/transit_history.py)."""
    sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return Spread(statistics.median(samples), sd, len(samples))


Track = list[
    tuple[float, float, float, float]
]  # (epoch s, x, y, speed m/s or NaN) of one device, oldest first


@dataclass(frozen=True, slots=True)
class Visit:
    """A track near a stop: when it came within the radius and when it left it (epoch seconds)."""

    stop_id: str
    arrive_s: float
    leave_s: float
    arrived: bool = True  # seen coming: not already there when the track began
    left: bool = True  # seen going: not still there when the track ended


class StopGrid:
    """The stops of a timetable in square cells of the plane, to find those near a line quickly."""

    def __init__(self, timetable: Timetable, *, radius_m: float = VISIT_RADIUS_M) -> None:
        self.radius_m = radius_m
        self.plane = timetable.plane
        self._cells: dict[tuple[int, int], list[tuple[str, float, float]]] = defaultdict(list)
        for stop in timetable.stops.values():
            if stop.location_type != 0:
                continue  # stations and entrances are no place a bus stops
            x, y = self.plane.to_xy(stop.lat, stop.lon)
            self._cells[self._cell(x, y)].append((stop.stop_id, x, y))

    def _cell(self, x: float, y: float) -> tuple[int, int]:
        size = 4 * self.radius_m
        return math.floor(x / size), math.floor(y / size)

    def near(self, x0: float, y0: float, x1: float, y1: float) -> Iterable[tuple[str, float, float]]:
        (ax, ay) = self._cell(min(x0, x1) - self.radius_m, min(y0, y1) - self.radius_m)
        (bx, by) = self._cell(max(x0, x1) + self.radius_m, max(y0, y1) + self.radius_m)
        for cx in range(ax, bx + 1):
            for cy in range(ay, by + 1):
                yield from self._cells.get((cx, cy), ())


def _inside(
    x0: float, y0: float, x1: float, y1: float, sx: float, sy: float, r: float
) -> tuple[float, float] | None:
    """The part [f_in, f_out] of the line (x0, y0)-(x1, y1), as fractions, within ``r`` of (sx, sy)."""
    dx, dy = x1 - x0, y1 - y0
    px, py = x0 - sx, y0 - sy
    a = dx * dx + dy * dy
    c = px * px + py * py - r * r
    if a == 0:
        return (0.0, 1.0) if c <= 0 else None
    b = 2 * (dx * px + dy * py)
    discriminant = b * b - 4 * a * c
    if discriminant < 0:
        return None
    root = math.sqrt(discriminant)
    f_in, f_out = max(0.0, (-b - root) / (2 * a)), min(1.0, (-b + root) / (2 * a))
    return (f_in, f_out) if f_in <= f_out else None


def _nearest_m(x0: float, y0: float, x1: float, y1: float, sx: float, sy: float) -> float:
    return _nearest((0.0, x0, y0, 0.0), (0.0, x1, y1, 0.0), sx, sy)[1]


def visits(track: Track, grid: StopGrid) -> list[Visit]:
    """The stop visits of one track (a line between fixes passing within the grid's radius), in the
    order they began."""
    spans: list[tuple[str, float, float, int, int]] = []  # stop, x, y, first and last line of the track
    open_: dict[str, tuple[float, float, int]] = {}  # stop → (x, y, first line)
    for index in range(1, len(track)):
        (_, x0, y0, _), (_, x1, y1, _) = track[index - 1], track[index]
        here = {
            stop_id: (sx, sy)
            for stop_id, sx, sy in grid.near(x0, y0, x1, y1)
            if _nearest_m(x0, y0, x1, y1, sx, sy) <= grid.radius_m
        }
        for stop_id in [stop_id for stop_id in open_ if stop_id not in here]:
            sx, sy, first = open_.pop(stop_id)
            spans.append((stop_id, sx, sy, first, index - 1))
        for stop_id, (sx, sy) in here.items():
            open_.setdefault(stop_id, (sx, sy, index))
    spans += [(stop_id, sx, sy, first, len(track) - 1) for stop_id, (sx, sy, first) in open_.items()]
    found = [_visit(track, *span) for span in spans]
    found.sort(key=lambda visit: visit.arrive_s)
    return found


def _visit(track: Track, stop_id: str, sx: float, sy: float, first: int, last: int) -> Visit:
    """The visit of the stop at (sx, sy) by the lines ``first`` to ``last`` of ``track``.

    A bus that stood there arrived when its speed fell under ``STOPPED_MPS`` and left when it rose
    again (interpolated between fixes); one that drove by passed at its nearest to the stop.
    """
    slow = [i for i in range(first - 1, last + 1) if track[i][3] < STOPPED_MPS]  # NaN: speed unknown
    if not slow:
        t, _ = min(
            (_nearest(track[i - 1], track[i], sx, sy) for i in range(first, last + 1)), key=lambda n: n[1]
        )
        return Visit(stop_id, t, t, arrived=first > 1, left=last < len(track) - 1)
    stop, go = slow[0], slow[-1]
    arrive = _crossing(track[stop - 1], track[stop]) if stop > 0 else track[stop][0]
    leave = _crossing(track[go + 1], track[go]) if go < len(track) - 1 else track[go][0]
    # Seen coming (going) only when the track came from (went on) beyond the radius.
    return Visit(stop_id, arrive, leave, arrived=first > 1, left=last < len(track) - 1)


def _nearest(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float], sx: float, sy: float
) -> tuple[float, float]:
    """When the line from fix ``a`` to fix ``b`` comes nearest to (sx, sy), and how near."""
    (t0, x0, y0, _), (t1, x1, y1, _) = a, b
    dx, dy = x1 - x0, y1 - y0
    length = dx * dx + dy * dy
    f = 0.0 if length == 0 else min(1.0, max(0.0, ((sx - x0) * dx + (sy - y0) * dy) / length))
    return t0 + f * (t1 - t0), math.hypot(x0 + f * dx - sx, y0 + f * dy - sy)


def _crossing(moving: tuple[float, float, float, float], still: tuple[float, float, float, float]) -> float:
    """When the speed between fix ``moving`` and fix ``still`` crossed ``STOPPED_MPS`` (the still
    fix's time when the moving one's speed is unknown)."""
    (t0, _, _, v0), (t1, _, _, v1) = moving, still
    if not v0 >= STOPPED_MPS:
        return t1
    return t0 + (v0 - STOPPED_MPS) / (v0 - v1) * (t1 - t0)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation: a segment's running time (``to_stop`` set) or a stop's dwell (``to_stop`` None)."""

    at_s: float  # when the bus left ``from_stop`` (running time) or reached the stop (dwell)
    from_stop: str
    to_stop: str | None
    seconds: float


def samples_of(found: Sequence[Visit], successors: Mapping[str, frozenset[str]]) -> list[Sample]:
    """Running times between consecutive stops of the timetable, and dwells at the stop reached."""
    samples: list[Sample] = []
    for index, visit in enumerate(found):
        nexts = successors.get(visit.stop_id)
        if not nexts or not visit.left:
            continue
        wanted = set(nexts)
        for later in found[index + 1 : index + 1 + LOOK_AHEAD]:
            if later.stop_id == visit.stop_id:
                break  # back at the same stop: it turned round
            if later.stop_id not in wanted or later.arrive_s <= visit.leave_s or not later.arrived:
                continue
            wanted.discard(later.stop_id)
            run_s = later.arrive_s - visit.leave_s
            if run_s <= MAX_RUN_S:
                samples.append(Sample(visit.leave_s, visit.stop_id, later.stop_id, run_s))
                dwell = later.leave_s - later.arrive_s
                if later.left and dwell <= MAX_DWELL_S:
                    samples.append(Sample(later.arrive_s, later.stop_id, None, dwell))
    return samples


def successors_of(timetable: Timetable) -> dict[str, frozenset[str]]:
    """For each stop, the stops that follow it directly on some trip."""
    following: dict[str, set[str]] = defaultdict(set)
    for trip in timetable.trips.values():
        for here, there in zip(trip.stop_times, trip.stop_times[1:], strict=False):
            if here.stop_id != there.stop_id:
                following[here.stop_id].add(there.stop_id)
    return {stop_id: frozenset(nexts) for stop_id, nexts in following.items()}


class LocalHours:
    """The local hour of day of epoch seconds in one time zone, cached per quarter hour (every zone's
    offset is a whole number of quarter hours)."""

    def __init__(self, timezone: str) -> None:
        self._zone = ZoneInfo(timezone)
        self._hours: dict[int, int] = {}

    def __call__(self, at_s: float) -> int:
        quarter = int(at_s // 900)
        hour = self._hours.get(quarter)
        if hour is None:
            if len(self._hours) > 10_000:
                self._hours.clear()
            hour = self._hours[quarter] = dt.datetime.fromtimestamp(quarter * 900, self._zone).hour
        return hour


@dataclass(frozen=True)
class LearnedTimes:
    """Running times and dwells per hour of day that had enough samples; what predictions read."""

    hours: LocalHours
    runs: Mapping[tuple[str, str, int], Spread] = field(default_factory=dict)
    dwells: Mapping[tuple[str, int], Spread] = field(default_factory=dict)

    def run(self, from_stop: str, to_stop: str, at_s: float) -> Spread | None:
        """From leaving ``from_stop`` at ``at_s`` to reaching ``to_stop``; None: not enough history."""
        return self.runs.get((from_stop, to_stop, self.hours(at_s))) if self.runs else None

    def dwell(self, stop_id: str, at_s: float) -> Spread | None:
        return self.dwells.get((stop_id, self.hours(at_s))) if self.dwells else None


class RunningTimes:
    """Samples per segment (or stop) and hour, the newest ``KEEP_SAMPLES`` of each."""

    def __init__(self, timezone: str) -> None:
        self.hours = LocalHours(timezone)
        self._samples: dict[tuple[str, str | None, int], deque[tuple[float, float]]] = {}

    def add(self, samples: Iterable[Sample]) -> int:
        added = 0
        for sample in samples:
            key = (sample.from_stop, sample.to_stop, self.hours(sample.at_s))
            kept = self._samples.get(key)
            if kept is None:
                kept = self._samples[key] = deque(maxlen=KEEP_SAMPLES)
            kept.append((sample.at_s, sample.seconds))
            added += 1
        return added

    def forget_before(self, at_s: float) -> None:
        for key, kept in list(self._samples.items()):
            if any(sample_at < at_s for sample_at, _ in kept):
                kept = self._samples[key] = deque((s for s in kept if s[0] >= at_s), maxlen=KEEP_SAMPLES)
            if not kept:
                del self._samples[key]

    def learned(self, *, min_samples: int) -> LearnedTimes:
        runs: dict[tuple[str, str, int], Spread] = {}
        dwells: dict[tuple[str, int], Spread] = {}
        for (from_stop, to_stop, hour), kept in self._samples.items():
            if len(kept) < min_samples:
                continue
            found = spread([seconds for _, seconds in kept])
            if to_stop is None:
                dwells[(from_stop, hour)] = found
            else:
                runs[(from_stop, to_stop, hour)] = found
        return LearnedTimes(self.hours, runs, dwells)


def tracks(rows: Iterable[Row], timetable: Timetable, *, centre_s: float) -> list[Track]:
    """The rows of each device as tracks, split where fixes are ``MAX_GAP_S`` apart.

    ``centre_s`` moves a window's start (a row's time) to the middle of the window its mean stands for.
    """
    by_device: dict[str, Track] = defaultdict(list)
    for row in rows:
        lat, lon, speed = row.values.get("lat"), row.values.get("lon"), row.values.get("speed_mps")
        device = row.tags.get("vehicle") or row.tags.get("device")
        if not device or not _coordinate(lat, 90) or not _coordinate(lon, 180):
            continue
        assert isinstance(lat, float | int)
        assert isinstance(lon, float | int)
        x, y = timetable.plane.to_xy(lat, lon)
        speed_mps = (
            float(speed) if isinstance(speed, int | float) and not isinstance(speed, bool) else math.nan
        )
        by_device[device].append((row.ts_ms / 1000 + centre_s, x, y, speed_mps))
    found = []
    for points in by_device.values():
        points.sort()
        cuts = [i for i in range(1, len(points)) if points[i][0] - points[i - 1][0] > MAX_GAP_S]
        for start, end in zip([0, *cuts], [*cuts, len(points)], strict=True):
            if end - start >= 2:
                found.append(points[start:end])
    return found


def _coordinate(value: object, limit: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and -limit <= value <= limit
    )


class HistoryLearner:
    """Learns running times from the store, then keeps them current; ``learned`` is what predictions use.

    ``refresh`` runs in a background thread; ``learned`` is swapped whole, so a feed build reads one
    consistent table without locking.
    """

    def __init__(self, *, days: float, sample_s: int, min_samples: int) -> None:
        self.days = days
        self.sample_s = sample_s
        self.min_samples = min_samples
        self.learned: LearnedTimes | None = None
        self._times: RunningTimes | None = None
        self._read_to_ms: int | None = None
        self._timetable: Timetable | None = None
        self._grid: StopGrid | None = None
        self._successors: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def refresh(self, store: TelemetryReader, timetable: Timetable, *, now_ms: int) -> int:
        """Read what the store got since the previous refresh (the last ``days`` at first); samples added."""
        with self._lock:
            if timetable is not self._timetable:
                if self._timetable is None or self._timetable.timezone != timetable.timezone:
                    self._times, self._read_to_ms = RunningTimes(timetable.timezone), None
                self._timetable, self._grid = timetable, StopGrid(timetable)
                self._successors = successors_of(timetable)
            assert self._times is not None
            assert self._grid is not None
            oldest_ms = now_ms - int(self.days * 86_400_000)
            start_ms = max(oldest_ms, self._read_to_ms if self._read_to_ms is not None else oldest_ms)
            # Samples up to ``learn_to_ms``, each from a read reaching OVERLAP_MS beyond its chunk on
            # both sides: a bus between two stops at a chunk's edge is counted once, never cut in two.
            learn_to_ms = now_ms - SETTLE_MS - OVERLAP_MS
            added = 0
            for chunk_ms in range(start_ms, learn_to_ms, CHUNK_MS):
                chunk_end_ms = min(chunk_ms + CHUNK_MS, learn_to_ms)
                rows = store.range(
                    measurement=MEASUREMENT,
                    start_ms=chunk_ms - OVERLAP_MS,
                    end_ms=chunk_end_ms + OVERLAP_MS,
                    fields=["lat", "lon", "speed_mps"],
                    window_s=self.sample_s,
                    aggregate=Aggregate.MEAN,
                )
                for track in tracks(rows, timetable, centre_s=self.sample_s / 2):
                    found = samples_of(visits(track, self._grid), self._successors)
                    added += self._times.add(s for s in found if chunk_ms <= s.at_s * 1000 < chunk_end_ms)
            self._read_to_ms = max(learn_to_ms, start_ms)
            self._times.forget_before(oldest_ms / 1000)
            self.learned = self._times.learned(min_samples=self.min_samples)
            log.info(
                "transit history: %d samples added; %d segment-hours and %d stop-hours learned",
                added,
                len(self.learned.runs),
                len(self.learned.dwells),
            )
            return added


__all__ = [
    "HistoryLearner",
    "LearnedTimes",
    "LocalHours",
    "RunningTimes",
    "Sample",
    "Spread",
    "StopGrid",
    "Visit",
    "samples_of",
    "spread",
    "successors_of",
    "tracks",
    "visits",
]
