"""The buses the feeds know, kept from one build to the next: recent fixes and the run each is on.

A build reads only the fixes that arrived since the previous one. A matched bus is carried
along its run with its new fixes (``follow``); it is matched again from scratch (``match_bus``)
only when it leaves the run's line, finishes the run, drifts in delay beyond what one run
explains, or the state is lost (first build, a gap longer than the window, a new timetable).

A bus that finished a run drives next the run of its block (trips.txt ``block_id``): waiting at
that run's first stop it is on it, and only that run is a candidate once it leaves. Without a
block, the next run starts where that one ended and is scheduled to leave after it was scheduled
to arrive; until the state is lost that narrows its candidates, never picks: the usual confidence
rules still decide.

From a cold start (first build, restart, GTFS swap) the last ``WARM_UP_MS`` of fixes are replayed
as if the service had been running; beyond them nothing is known: a bus is put on a run only with
evidence, that it moved along the run (``MatchRules.moved_m``), its console's trip id, or block
continuity. A bus standing at a terminus or a hub fits the runs that just left and those about to
leave alike; published on one, it would take another vehicle's run. And of two buses on one run,
one moving along it and one standing, the moving one holds it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from api.transit.matching import MatchRules, Projections, Sighting, TripMatch, follow, match_bus
from api.transit.timetable import Timetable, TripRun
from api.transit.vehicle_positions import Fix, fix_of_row
from collector.store.base import Row

LATE_POINTS_MS = 10_000  # fixes this much older than the previous build may still be arriving
HUB_RADIUS_M = 150.0  # a run "starts where the previous ended" within this
BLOCK_MEMORY_S = 45 * 60  # a finished run narrows the next one's candidates this long
RETRY_STANDING_MS = 15_000  # an unmatched bus that has not moved is matched again this often
MOVED_M = 40.0  # further than GPS jitter
# A cold start (first build, restart, GTFS swap) replays this much of the store's fixes first, as if
# the service had been running: buses seen finishing a run of their block are on the next one.
WARM_UP_MS = 600_000
WARM_UP_STEP_MS = 60_000


@dataclass(slots=True)
class _Track:
    """One bus: its fixes in the window (oldest first), its run, and the run it finished last."""

    fixes: list[Fix] = field(default_factory=list)
    match: TripMatch | None = None
    delays: list[tuple[int, float]] = field(default_factory=list)  # (fix ms, delay s) on ``match``
    matched_to_ms: int = -1  # fixes up to this one have been looked at
    tried: Fix | None = None  # the newest fix of the last match from scratch that found nothing
    finished: TripRun | None = None
    held: bool = False  # ``match`` was published in the last build (no other bus had a better claim)
    projected: Projections = field(default_factory=dict)  # its fixes on the lines it was matched against

    def has(self, ts_ms: int) -> bool:
        for fix in reversed(self.fixes):
            if fix.ts_ms <= ts_ms:
                return fix.ts_ms == ts_ms
        return False

    def add(self, fix: Fix) -> None:
        if not self.fixes or fix.ts_ms > self.fixes[-1].ts_ms:
            self.fixes.append(fix)
            return
        index = len(self.fixes)
        while index and self.fixes[index - 1].ts_ms > fix.ts_ms:  # late fixes are recent: look from the end
            index -= 1
        if not index or self.fixes[index - 1].ts_ms != fix.ts_ms:
            self.fixes.insert(index, fix)
            self.matched_to_ms = min(self.matched_to_ms, fix.ts_ms - 1)  # a late fix: look again


class Fleet:
    """Per-bus match state of one transit service (callers serialise access)."""

    def __init__(self, *, window_s: float, rules: MatchRules) -> None:
        self.window_ms = int(window_s * 1000)
        self.rules = rules
        self.tracks: dict[str, _Track] = {}
        self._timetable: Timetable | None = None
        self._last_now_ms: int | None = None
        self._stale: set[str] = set()  # buses silent past their max age, in their grace time

    @property
    def warm_up_ms(self) -> int:
        return WARM_UP_MS if self.rules.require_evidence else 0

    def read_from_ms(self, now_ms: int, timetable: Timetable | None) -> int:
        """Where the next store read starts: the warm-up and the window, or just past the previous build."""
        if not self._continues(now_ms, timetable):
            return now_ms - self.window_ms - self.warm_up_ms
        assert self._last_now_ms is not None
        return max(now_ms - self.window_ms, self._last_now_ms - LATE_POINTS_MS)

    def _continues(self, now_ms: int, timetable: Timetable | None) -> bool:
        last = self._last_now_ms
        return (
            last is not None
            and timetable is self._timetable
            and last <= now_ms <= last + self.window_ms - LATE_POINTS_MS
        )

    def update(
        self,
        rows: Iterable[Row],
        timetable: Timetable | None,
        *,
        now_ms: int,
        max_age_s: float,
        max_ahead_s: float,
        grace_s: float = 0.0,
    ) -> tuple[dict[str, Fix], dict[str, TripMatch]]:
        """Take the rows of fixes read from ``read_from_ms``; the newest fix and the run of each bus.

        A bus silent for more than ``max_age_s`` is kept ``grace_s`` longer (its newest fix, the run
        it was on), then forgotten; any bus heard since wins a run over it. From a cold start the
        rows of the warm-up are replayed first, a build every ``WARM_UP_STEP_MS``.
        """
        if self._continues(now_ms, timetable) or timetable is None or not self.warm_up_ms:
            return self._step(rows, timetable, now_ms, max_age_s, max_ahead_s, grace_s)
        ordered = sorted(rows, key=lambda row: row.ts_ms)
        times = [row.ts_ms for row in ordered]
        self._last_now_ms, done = None, 0
        for step_ms in range(now_ms - self.warm_up_ms, now_ms, WARM_UP_STEP_MS):
            upto = bisect.bisect_right(times, step_ms)
            self._step(ordered[done:upto], timetable, step_ms, max_age_s, max_ahead_s, grace_s)
            done = upto
        return self._step(ordered[done:], timetable, now_ms, max_age_s, max_ahead_s, grace_s)

    def _step(
        self,
        rows: Iterable[Row],
        timetable: Timetable | None,
        now_ms: int,
        max_age_s: float,
        max_ahead_s: float,
        grace_s: float,
    ) -> tuple[dict[str, Fix], dict[str, TripMatch]]:
        if not self._continues(now_ms, timetable):
            self.tracks.clear()
        self._timetable, self._last_now_ms = timetable, now_ms
        for row in rows:
            known = self.tracks.get(row.tags.get("vehicle") or row.tags.get("device") or "")
            if known is not None and known.has(row.ts_ms):
                continue  # read again in the overlap with the previous build
            fix = fix_of_row(row)
            if fix is not None and fix.ts_ms <= now_ms + max_ahead_s * 1000:
                self.tracks.setdefault(fix.vehicle_id, _Track()).add(fix)
        oldest_ms = now_ms - max(self.window_ms, int((max_age_s + grace_s) * 1000))
        newest: dict[str, Fix] = {}
        self._stale = set()
        for vehicle_id, track in list(self.tracks.items()):
            if track.fixes[-1].ts_ms < now_ms - (max_age_s + grace_s) * 1000:
                del self.tracks[vehicle_id]  # silent too long: unassigned, and forgotten
                continue
            if track.fixes[-1].ts_ms < now_ms - max_age_s * 1000:
                self._stale.add(vehicle_id)
            if track.fixes[0].ts_ms < oldest_ms:
                track.fixes = [fix for fix in track.fixes if fix.ts_ms >= oldest_ms]
            newest[vehicle_id] = track.fixes[-1]
        if timetable is None:
            return newest, {}
        runs = list(
            timetable.runs_between(
                min(fix.ts_ms for fix in newest.values()) / 1000 - self.rules.max_late_s,
                max(fix.ts_ms for fix in newest.values()) / 1000 + self.rules.max_layover_early_s,
            )
            if newest
            else ()
        )
        matches: dict[str, TripMatch] = {}
        for vehicle_id, latest in newest.items():
            match = self._match(self.tracks[vehicle_id], latest, timetable, runs)
            if match is not None:
                matches[vehicle_id] = match
        owners: dict[str, str] = {}
        for vehicle_id in sorted(matches):
            key = matches[vehicle_id].run.key
            rival = owners.get(key)
            if rival is None or self._claim(vehicle_id, matches) > self._claim(rival, matches):
                owners[key] = vehicle_id
        for vehicle_id, track in self.tracks.items():
            match = matches.get(vehicle_id)
            track.held = match is not None and owners[match.run.key] == vehicle_id
        # A bus whose run a surer bus claimed keeps following it unpublished: it takes over if that one goes.
        return newest, {vehicle_id: matches[vehicle_id] for vehicle_id in owners.values()}

    def _claim(self, vehicle_id: str, matches: dict[str, TripMatch]) -> tuple[bool, bool, float, int, bool]:
        """How strongly a bus holds its run: a bus heard lately before a silent one, a moving bus before
        a standing one, then the surer, then the one nearer the run's schedule (by the minute; early
        counts more), then the one that held it."""
        match = matches[vehicle_id]
        heard = vehicle_id not in self._stale
        if not self.rules.require_evidence:
            return heard, False, match.confidence, 0, False
        off_s = match.delay_s if match.delay_s >= 0 else -self.rules.early_weight * match.delay_s
        moving = match.moved_m >= self.rules.moved_m
        return heard, moving, match.confidence, -round(off_s / 60), self.tracks[vehicle_id].held

    def _match(
        self, track: _Track, latest: Fix, timetable: Timetable, runs: list[TripRun]
    ) -> TripMatch | None:
        first_new = len(track.fixes)
        while first_new and track.fixes[first_new - 1].ts_ms > track.matched_to_ms:
            first_new -= 1
        new = track.fixes[first_new:]
        if not new:
            return track.match
        reported_trip = latest.trip_id if latest.trip_id in timetable.trips else None
        reported_route = latest.route_id if latest.route_id in timetable.routes else None
        known = track.match
        if known is None and not self._worth_retrying(track.tried, latest, timetable):
            return None
        track.matched_to_ms = track.fixes[-1].ts_ms
        if known is not None and reported_trip in (None, known.run.trip.trip_id):
            followed = follow(known, [_sighting(fix) for fix in new], timetable, rules=self.rules)
            if followed is not None:
                since_ms = latest.ts_ms - self.window_ms
                track.delays = [(ts, d) for ts, d in track.delays if ts >= since_ms]
                track.delays.append((latest.ts_ms, followed.delay_s))
                spread = [d for _, d in track.delays]
                if max(spread) - min(spread) <= self.rules.delay_spread_s:
                    track.match = followed
                    return followed
            elif known.next_stop == len(known.run.trip.stop_times) - 1:
                # A run another bus held is not this one's: its block says nothing of what comes next.
                track.finished = known.run if track.held or not self.rules.require_evidence else None
        window = [fix for fix in track.fixes if fix.ts_ms >= latest.ts_ms - self.window_ms]
        following = self._next_in_block(track, latest, timetable)
        if following is not None and reported_trip in (None, following.run.trip.trip_id):
            match: TripMatch | None = self._layover(following, latest, timetable)
            candidates = [following.run]
        else:
            match, candidates = None, self._after_finished(track, latest, timetable, runs)
        if match is None:
            sightings = [_sighting(fix) for fix in window]
            since_s = sightings[0].ts_s
            track.projected = {key: on for key, on in track.projected.items() if key[0].ts_s >= since_s}
            match = match_bus(
                sightings,
                timetable,
                route_id=reported_route,
                trip_id=reported_trip,
                rules=self.rules,
                runs=candidates,
                projected=track.projected,
            )
        evidence = reported_trip is not None or following is not None
        if match is not None and not evidence and not self._moved(match):
            match = None  # standing where runs start or pass: nothing says which run it will drive
        track.match, track.tried = match, latest if match is None else None
        track.delays = [] if match is None else [(latest.ts_ms, match.delay_s)]
        return match

    def _moved(self, match: TripMatch) -> bool:
        return not self.rules.require_evidence or match.moved_m >= self.rules.moved_m

    def _next_in_block(self, track: _Track, latest: Fix, timetable: Timetable) -> TripMatch | None:
        """The next run of the block of the run the bus finished, as a match waiting at its first
        stop (without a block, or once the bus has been gone from its end too long, None)."""
        done = track.finished
        if done is None or not self.rules.require_evidence:
            return None
        end = len(done.trip.stop_times) - 1
        following = timetable.next_in_block(done)
        now_s = latest.ts_ms / 1000
        if following is None or now_s - done.arrival(end) > BLOCK_MEMORY_S:
            return None
        if not now_s <= following.departure(len(following.trip.stop_times) - 1) + self.rules.max_late_s:
            return None
        path = timetable.path(following.trip.trip_id)
        return TripMatch(following, path.stop_along_m[0], max(0.0, now_s - following.departure(0)), 1.0, 0)

    def _layover(self, following: TripMatch, latest: Fix, timetable: Timetable) -> TripMatch | None:
        """``following`` when the bus waits at its first stop, not too long before it leaves."""
        run = following.run
        first = timetable.stops[run.trip.stop_times[0].stop_id]
        x0, y0 = timetable.plane.to_xy(first.lat, first.lon)
        x1, y1 = timetable.plane.to_xy(latest.lat, latest.lon)
        early_s = run.departure(0) - latest.ts_ms / 1000
        if math.hypot(x1 - x0, y1 - y0) > HUB_RADIUS_M or early_s > self.rules.max_layover_early_s:
            return None
        return following

    def _worth_retrying(self, tried: Fix | None, latest: Fix, timetable: Timetable) -> bool:
        """Whether an unmatched bus has moved, changed what it reports, or waited long enough to look again.

        A bus standing at the hub is as ambiguous as it was a few seconds ago; only moving on or
        the clock running past a departure can settle it.
        """
        if tried is None or (tried.route_id, tried.trip_id) != (latest.route_id, latest.trip_id):
            return True
        if latest.ts_ms - tried.ts_ms >= RETRY_STANDING_MS:
            return True
        (x0, y0), (x1, y1) = (
            timetable.plane.to_xy(tried.lat, tried.lon),
            timetable.plane.to_xy(latest.lat, latest.lon),
        )
        return math.hypot(x1 - x0, y1 - y0) > MOVED_M

    def _after_finished(
        self, track: _Track, latest: Fix, timetable: Timetable, runs: list[TripRun]
    ) -> list[TripRun]:
        """The runs a bus may be on next: after the one it finished, from where that one ended."""
        done = track.finished
        if done is None:
            return runs
        end = len(done.trip.stop_times) - 1
        if latest.ts_ms / 1000 - done.arrival(end) > BLOCK_MEMORY_S:
            track.finished = None
            return runs
        end_stop = timetable.stops[done.trip.stop_times[end].stop_id]
        end_xy = timetable.plane.to_xy(end_stop.lat, end_stop.lon)
        following = []
        for run in runs:
            first = timetable.stops[run.trip.stop_times[0].stop_id]
            x, y = timetable.plane.to_xy(first.lat, first.lon)
            near = (x - end_xy[0]) ** 2 + (y - end_xy[1]) ** 2 <= HUB_RADIUS_M**2
            if near and run.departure(0) >= done.arrival(end) and run.key != done.key:
                following.append(run)
        return following


def _sighting(fix: Fix) -> Sighting:
    return Sighting(fix.ts_ms / 1000, fix.lat, fix.lon, fix.speed_mps, fix.bearing_deg)
