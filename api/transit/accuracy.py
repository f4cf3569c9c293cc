"""How right the published arrival predictions turned out: kept until the bus reaches the stop, then scored.

Scoring follows TransitApp's ETA Accuracy Benchmark (github.com/TransitApp/ETA-Accuracy-Benchmark):
a prediction falls in a time bucket by the time from when it was sampled to when the bus really
arrived (0-3, 3-6, 6-10, 10-15 minutes, start included, end not), and is accurate when the real
arrival is within the bucket's window around it (ends included). A bucket's share is accurate over
all; the single figure is the plain mean of the four buckets' shares.

Arrival at a stop is the moment the bus's distance along the trip's shape first reaches the stop's
less ``ARRIVED_M`` (within 15 m of the stop, or past it): interpolated in time between its last
position short of that and its first at or past it. 15 m is GPS noise (about 4 m, now and then
12 m) with room; a wider band would date arrivals early by the seconds a braking bus takes to
cover it. A crossing between positions further apart than ``MAX_GAP_S`` (a tunnel, a silent
receiver) is not scored: the time would be a guess.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from collector.store.base import FieldValue, Point, Row

MEASUREMENT = "transit_accuracy"
ARRIVED_M = 15.0
MAX_GAP_S = 90.0  # two positions further apart than this do not tell when the bus passed between them
BACK_JITTER_M = 25.0  # GPS noise: a bus seen this much behind where it was has not moved back
SAMPLE_S = 60  # one prediction per stop and run is kept per minute: a sample, not every rebuild
MAX_PENDING = 200_000  # predictions waiting at once (a city's buses times 15 minutes of stops, with room)


@dataclass(frozen=True, slots=True)
class Window:
    """A time bucket and how early or late the bus may arrive against a prediction in it (s)."""

    bucket: str
    start_s: int
    end_s: int
    early_s: int
    late_s: int

    @property
    def key(self) -> str:
        """The bucket in field names: ``0_3``."""
        return self.bucket.replace("-", "_")

    def accurate(self, predicted_s: float, actual_s: float) -> bool:
        return -self.early_s <= actual_s - predicted_s <= self.late_s


WINDOWS = (
    Window("0-3", 0, 180, 30, 90),
    Window("3-6", 180, 360, 60, 150),
    Window("6-10", 360, 600, 60, 210),
    Window("10-15", 600, 900, 90, 270),
)
HORIZON_S = WINDOWS[-1].end_s


def window_for(ahead_s: float) -> Window | None:
    """The bucket of a prediction sampled ``ahead_s`` before the bus really arrived, or None (out of all)."""
    for window in WINDOWS:
        if window.start_s <= ahead_s < window.end_s:
            return window
    return None


@dataclass(frozen=True, slots=True)
class Score:
    """One prediction against the real arrival."""

    route_id: str
    window: Window
    made_s: float
    predicted_s: float
    arrived_s: float
    run_key: str = ""
    stop_index: int = -1

    @property
    def error_s(self) -> float:
        """Real arrival less predicted: positive, the bus came later."""
        return self.arrived_s - self.predicted_s

    @property
    def accurate(self) -> bool:
        return self.window.accurate(self.predicted_s, self.arrived_s)


def score(
    route_id: str,
    made_s: float,
    predicted_s: float,
    arrived_s: float,
    *,
    run_key: str = "",
    stop_index: int = -1,
) -> Score | None:
    """``predicted_s`` (sampled at ``made_s``) against ``arrived_s``; None when it falls in no bucket."""
    window = window_for(arrived_s - made_s)
    if window is None:
        return None
    return Score(route_id, window, made_s, predicted_s, arrived_s, run_key, stop_index)


@dataclass(frozen=True, slots=True)
class Tally:
    """Predictions and accurate ones of one bucket."""

    window: Window
    predictions: int
    accurate: int

    @property
    def share(self) -> float | None:
        return self.accurate / self.predictions if self.predictions else None


def tally(scores: Iterable[Score]) -> list[Tally]:
    """Per bucket, in bucket order (empty buckets included)."""
    counts = {window.bucket: [0, 0] for window in WINDOWS}
    for one in scores:
        counts[one.window.bucket][0] += 1
        counts[one.window.bucket][1] += one.accurate
    return [Tally(window, *counts[window.bucket]) for window in WINDOWS]


def overall(tallies: Sequence[Tally]) -> float | None:
    """The benchmark's single figure: the plain mean of the buckets' shares; None unless all have some."""
    shares = [one.share for one in tallies]
    if not shares or any(share is None for share in shares):
        return None
    return sum(share for share in shares if share is not None) / len(shares)


@dataclass(slots=True)
class _Watch:
    """One bus on one run: where it was last seen along the run's line, and predictions waiting."""

    run_key: str
    route_id: str
    trip_id: str
    stop_along_m: tuple[float, ...]
    last: tuple[float, float]  # (ts s, along m)
    pending: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # stop → (made, predicted)


class PredictionLedger:
    """Published predictions waiting for their bus (at most ``max_pending``), scored when it arrives.

    Not thread-safe: one recorder feeds it.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING, sample_s: int = SAMPLE_S) -> None:
        self.max_pending = max_pending
        self.sample_s = sample_s
        self.pending = 0
        self.dropped = 0  # predictions not kept: the ledger was full
        self.unobserved = 0  # predictions whose arrival fell in a gap between positions
        self._watches: dict[tuple[str, str], _Watch] = {}

    def publish(
        self,
        vehicle: str,
        run_key: str,
        *,
        route_id: str,
        trip_id: str,
        stop_along_m: Sequence[float],
        predictions: Iterable[tuple[int, int]],
        made_s: float,
        seen: tuple[float, float],
    ) -> None:
        """Keep ``predictions`` ((stop index, predicted arrival s)) made at ``made_s`` for a bus on a run.

        ``seen`` is where the bus was then ((ts s, along m)): stops it had reached are not waited for.
        A stop with a prediction kept less than ``sample_s`` before is skipped.
        """
        key = (vehicle, run_key)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(run_key, route_id, trip_id, tuple(stop_along_m), seen)
        else:
            self._advance(watch, *seen)
        for index, predicted_s in predictions:
            if not 0 <= index < len(watch.stop_along_m) or predicted_s - made_s > HORIZON_S + 300:
                continue  # beyond the last bucket even for a bus five minutes early
            if watch.stop_along_m[index] - ARRIVED_M <= watch.last[1]:
                continue  # at the stop already: its arrival is behind us
            kept = watch.pending.setdefault(index, [])
            if kept and made_s - kept[-1][0] < self.sample_s:
                continue
            if self.pending >= self.max_pending:
                self.dropped += 1
                continue
            kept.append((made_s, float(predicted_s)))
            self.pending += 1

    def watching(self) -> dict[str, list[tuple[str, str]]]:
        """Per vehicle, the (run key, trip id) whose predictions wait for it."""
        found: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (vehicle, run_key), watch in self._watches.items():
            found[vehicle].append((run_key, watch.trip_id))
        return found

    def last_along(self, vehicle: str, run_key: str) -> float | None:
        """How far along the run's line the bus was last seen, or None when the ledger does not watch it."""
        watch = self._watches.get((vehicle, run_key))
        return None if watch is None else watch.last[1]

    def observe(self, vehicle: str, run_key: str, ts_s: float, along_m: float) -> list[Score]:
        """The bus was ``along_m`` along the run's line at ``ts_s``: score the stops it reached since."""
        watch = self._watches.get((vehicle, run_key))
        if watch is None:
            return []
        return self._advance(watch, ts_s, along_m)

    def _advance(self, watch: _Watch, ts_s: float, along_m: float) -> list[Score]:
        last_s, last_m = watch.last
        if ts_s <= last_s:
            return []
        along_m = max(along_m, last_m)  # jitter backwards is no movement
        watch.last = (ts_s, along_m)
        scores: list[Score] = []
        for index in [i for i in watch.pending if watch.stop_along_m[i] - ARRIVED_M <= along_m]:
            waiting = watch.pending.pop(index)
            self.pending -= len(waiting)
            if ts_s - last_s > MAX_GAP_S:
                self.unobserved += len(waiting)
                continue
            target = watch.stop_along_m[index] - ARRIVED_M
            fraction = (target - last_m) / (along_m - last_m) if along_m > last_m else 1.0
            arrived_s = last_s + max(0.0, min(1.0, fraction)) * (ts_s - last_s)
            for made_s, predicted_s in waiting:
                one = score(
                    watch.route_id, made_s, predicted_s, arrived_s, run_key=watch.run_key, stop_index=index
                )
                if one is not None:
                    scores.append(one)
        return scores

    def expire(self, now_s: float) -> None:
        """Forget predictions that can no longer fall in a bucket, and buses with none waiting."""
        for key, watch in list(self._watches.items()):
            for index, waiting in list(watch.pending.items()):
                fresh = [(made, predicted) for made, predicted in waiting if now_s - made < HORIZON_S]
                self.pending -= len(waiting) - len(fresh)
                if fresh:
                    watch.pending[index] = fresh
                else:
                    del watch.pending[index]
            if not watch.pending:
                del self._watches[key]  # a bus on its next run is watched again when that one is predicted


def accuracy_points(scores: Iterable[Score], ts_ms: int) -> list[Point]:
    """One ``transit_accuracy`` point per route at ``ts_ms``: per bucket, predictions scored and accurate.

    Fields ``predictions_<bucket>`` and ``accurate_<bucket>`` (integers; buckets with a score only),
    so that sums over any time range give each bucket's share, per route or city-wide.
    """
    by_route: dict[str, list[Score]] = defaultdict(list)
    for one in scores:
        by_route[one.route_id].append(one)
    found = []
    for route_id in sorted(by_route):
        fields: dict[str, FieldValue] = {}
        for counted in tally(by_route[route_id]):
            if counted.predictions:
                fields[f"predictions_{counted.window.key}"] = counted.predictions
                fields[f"accurate_{counted.window.key}"] = counted.accurate
        found.append(Point(MEASUREMENT, {"route": route_id}, ts_ms, fields))
    return found


def tally_rows(rows: Iterable[Row]) -> list[Tally]:
    """Per bucket, the sums of ``transit_accuracy`` rows (raw or summed over windows)."""
    totals: dict[str, list[int]] = {window.key: [0, 0] for window in WINDOWS}
    for row in rows:
        for window in WINDOWS:
            for slot, name in enumerate(("predictions", "accurate")):
                value = row.values.get(f"{name}_{window.key}")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[window.key][slot] += int(value)
    return [Tally(window, *totals[window.key]) for window in WINDOWS]
