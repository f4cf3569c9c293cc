"""Which trip a bus is driving, from its recent fixes alone (or checked against what its console says).

A bus is put on a run of a trip only when its recent fixes, all of them, lie on that trip's
line, move forward along it, and agree with the run's schedule within a believable delay. The
run whose schedule fits best wins; when two runs fit about equally the confidence drops. Below
``min_confidence``, off the line, or at the end of its trip the bus is left unassigned: a
feed that says "unknown" is better than one that guesses.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from api.transit.geometry import OnLine
from api.transit.timetable import Timetable, TripPath, TripRun


@dataclass(frozen=True, slots=True)
class Sighting:
    """One fix of one bus."""

    ts_s: float
    lat: float
    lon: float
    speed_mps: float | None = None
    course_deg: float | None = None


# A bus's fixes placed on the lines looked at, by fix and the line's path (its ``id``): a fleet keeps
# them for each bus so that matching it again projects only its new fixes. Valid for one timetable
# and one ``MatchRules``.
Projections = dict[tuple[Sighting, int], list[OnLine]]


@dataclass(frozen=True, slots=True)
class MatchRules:
    """How sure the matcher must be, and what it believes of buses."""

    off_line_m: float = 45.0  # GPS noise plus street width
    min_fixes: int = 3
    min_span_s: float = 10.0
    max_late_s: float = 30 * 60
    max_early_s: float = 5 * 60
    max_layover_early_s: float = 25 * 60  # waiting at the first stop long before departure
    back_jitter_m: float = 25.0
    max_course_error_deg: float = 60.0  # a moving bus's course against the line's direction
    delay_spread_s: float = 240.0
    min_confidence: float = 0.7
    ambiguity_s: float = 180.0  # two runs whose delays differ by less than this are confusable
    early_weight: float = 2.0  # a minute early mid-trip counts as two minutes late when ranking runs
    end_of_trip_m: float = 30.0
    moved_m: float = 50.0  # progress along a run that shows the bus drives it (GPS jitter stays below)
    # From a cold start a bus is put on a run only with evidence (movement along it, block continuity,
    # its console's trip id), and a run held by a moving bus is never given to a standing one.
    # False: the behaviour before, for the cold start benchmark's baseline.
    require_evidence: bool = True
    # Buses do not leave their first stop early, nor cover their run in less than this share of its
    # scheduled running time: a run that left too recently for the bus to be where it is is not its.
    min_pace: float = 0.7


@dataclass(frozen=True, slots=True)
class TripMatch:
    """A bus on a run: where along the run's line it is, how late, and how sure we are."""

    run: TripRun
    along_m: float
    delay_s: float
    confidence: float
    next_stop: int  # index in the trip's stop_times of the stop the bus is at or heading to
    moved_m: float = 0.0  # how far the bus has been seen to advance along the run


def scheduled_time(run: TripRun, path: TripPath, along_m: float) -> float:
    """When the run is scheduled to pass ``along_m`` (epoch seconds; dwell counts as arriving)."""
    stops = path.stop_along_m
    index = bisect.bisect_right(stops, along_m) - 1
    if index < 0:
        return float(run.departure(0))
    if index >= len(stops) - 1:
        return float(run.arrival(len(stops) - 1))
    start, end = stops[index], stops[index + 1]
    leave, reach = run.departure(index), run.arrival(index + 1)
    fraction = (along_m - start) / (end - start) if end > start else 1.0
    return leave + fraction * (reach - leave)


def next_stop_index(path: TripPath, along_m: float, *, at_stop_m: float = 25.0) -> int:
    """The stop the bus is at (within ``at_stop_m``) or heading to."""
    index = bisect.bisect_left(path.stop_along_m, along_m - at_stop_m)
    return min(index, len(path.stop_along_m) - 1)


@dataclass(slots=True)
class _Fit:
    """A run the bus's newest fix fits: where along it the bus is now and how late."""

    run: TripRun
    path: TripPath
    along_m: float
    raw_s: float  # newest fix's time against the run's schedule there
    delay_s: float  # ... waiting at the first stop counted as on time
    rank_s: float  # how far off its schedule the bus is, early waiting included: smaller fits better


def match_bus(
    fixes: Sequence[Sighting],
    timetable: Timetable,
    *,
    route_id: str | None = None,
    trip_id: str | None = None,
    rules: MatchRules = MatchRules(),
    runs: Sequence[TripRun] | None = None,
    projected: Projections | None = None,
) -> TripMatch | None:
    """The run the bus whose recent ``fixes`` (oldest first) are given is driving, or None.

    ``runs`` are the candidates (a fleet's matcher looks them up once for all its buses);
    by default the runs on the road around the newest fix. ``projected`` keeps the fixes' places
    on the lines looked at, for the next match of the same bus.
    """
    if len(fixes) < rules.min_fixes or fixes[-1].ts_s - fixes[0].ts_s < rules.min_span_s:
        return None
    newest = fixes[-1]
    if runs is None:
        runs = list(
            timetable.runs_between(
                newest.ts_s - rules.max_late_s, newest.ts_s + rules.max_layover_early_s, route_id=route_id
            )
        )
    candidates = [
        run
        for run in runs
        if (route_id is None or run.trip.route_id == route_id)
        and (trip_id is None or run.trip.trip_id == trip_id)
        and run.arrival(0) - rules.max_layover_early_s <= newest.ts_s
        and newest.ts_s <= run.departure(len(run.trip.stop_times) - 1) + rules.max_late_s
    ]
    by_path: dict[int, list[TripRun]] = defaultdict(list)
    paths: dict[int, TripPath] = {}
    for run in candidates:
        path = timetable.path(run.trip.trip_id)
        by_path[id(path)].append(run)
        paths[id(path)] = path
    if projected is None:
        projected = {}
    fits: list[_Fit] = []
    for key, path_runs in by_path.items():
        path = paths[key]
        now_on = _on_path(path, newest, timetable, rules, projected)
        fits.extend(
            fit for run in path_runs if (fit := _fit_now(run, path, newest, now_on, rules)) is not None
        )
    if not fits:
        return None
    fits.sort(key=lambda fit: (fit.rank_s, fit.run.key))
    best = fits[0]
    # Only the best run's line is followed back through the older fixes: the others are its rivals.
    on_line, delays, moved_m = _followed_back(best, fixes, timetable, rules, projected)
    confidence = on_line / len(fixes)
    if max(delays) - min(delays) > rules.delay_spread_s:
        confidence *= 0.5
    rivals = [fit for fit in fits[1:] if fit.run.key != best.run.key]
    if rivals:
        margin = rivals[0].rank_s - best.rank_s
        confidence *= min(1.0, 0.5 + margin / (2 * rules.ambiguity_s))
    if confidence < rules.min_confidence:
        return None
    return TripMatch(
        best.run,
        best.along_m,
        best.delay_s,
        round(confidence, 3),
        next_stop_index(best.path, best.along_m),
        moved_m,
    )


def _on_path(
    path: TripPath, fix: Sighting, timetable: Timetable, rules: MatchRules, projected: Projections
) -> list[OnLine]:
    """Where ``fix`` lies on ``path``'s line, heading its way (``projected`` keeps it)."""
    key = (fix, id(path))
    found = projected.get(key)
    if found is None:
        x, y = timetable.plane.to_xy(fix.lat, fix.lon)
        found = _heading_along(path, fix, path.line.project(x, y, within_m=rules.off_line_m), rules)
        projected[key] = found
    return found


def _heading_along(path: TripPath, fix: Sighting, found: list[OnLine], rules: MatchRules) -> list[OnLine]:
    """Projections where a moving bus heads the way the line runs (not the opposite direction)."""
    if fix.course_deg is None or fix.speed_mps is None or fix.speed_mps < 2.0:
        return found
    kept = []
    for on in found:
        heading = path.line.heading_at(on.along_m)
        if abs((fix.course_deg - heading + 180) % 360 - 180) <= rules.max_course_error_deg:
            kept.append(on)
    return kept


def _fit_now(
    run: TripRun, path: TripPath, newest: Sighting, now_on: list[OnLine], rules: MatchRules
) -> _Fit | None:
    """Where along ``run`` the bus is now (of its places on the line, the one nearest the schedule),
    or None when none is short of the end at a believable delay."""
    last_stop_m = path.stop_along_m[-1]
    best: tuple[float, float] | None = None
    for on in now_on:
        along = on.along_m
        if along >= last_stop_m - rules.end_of_trip_m:
            continue  # at the end of the trip: it is over, the bus's next trip is not known yet
        delay = newest.ts_s - scheduled_time(run, path, along)
        at_first_stop = along <= path.stop_along_m[0] + 25.0
        early_limit = rules.max_layover_early_s if at_first_stop else rules.max_early_s
        if not -early_limit <= delay <= rules.max_late_s:
            continue
        if (
            rules.require_evidence
            and not at_first_stop
            and _left_too_recently(run, path, along, newest, rules)
        ):
            continue
        if best is None or abs(delay) < abs(best[1]):
            best = (along, delay)
    if best is None:
        return None
    along_now, raw_s = best
    waiting = along_now <= path.stop_along_m[0] + 25.0
    # Waiting at the first stop to leave on time is not being early; elsewhere running early is
    # rarer than running late, so a late run fits better than an equally early one.
    delay_now = max(0.0, raw_s) if waiting else raw_s
    rank_s = abs(raw_s) if waiting or raw_s >= 0 else rules.early_weight * -raw_s
    return _Fit(run, path, along_now, raw_s, delay_now, rank_s)


def _followed_back(
    fit: _Fit, fixes: Sequence[Sighting], timetable: Timetable, rules: MatchRules, projected: Projections
) -> tuple[int, list[float], float]:
    """How many of the bus's fixes lie on ``fit``'s line, each behind the next, their delays on its
    run, and how far the bus advanced along it from the oldest of them."""
    run, path = fit.run, fit.path
    on_line, delays, ahead = 1, [fit.raw_s], fit.along_m
    for fix in reversed(fixes[:-1]):
        # Going back in time the bus was behind (or, parked, at) where it was later.
        options = _on_path(path, fix, timetable, rules, projected)
        behind = [on.along_m for on in options if on.along_m <= ahead + rules.back_jitter_m]
        if not behind:
            continue
        along = max(behind)
        on_line += 1
        delays.append(fix.ts_s - scheduled_time(run, path, along))
        ahead = along
    return on_line, delays, fit.along_m - ahead


def _left_too_recently(
    run: TripRun, path: TripPath, along_m: float, fix: Sighting, rules: MatchRules
) -> bool:
    """Whether the run left its first stop too recently for a bus on it to be ``along_m`` by now."""
    running_s = scheduled_time(run, path, along_m) - run.departure(0)
    return fix.ts_s - run.departure(0) < rules.min_pace * running_s


def follow(
    match: TripMatch,
    fixes: Sequence[Sighting],
    timetable: Timetable,
    *,
    rules: MatchRules = MatchRules(),
) -> TripMatch | None:
    """``match`` carried on through ``fixes`` (newer ones, oldest first), or None when they do not fit it.

    Every fix must lie on the run's line, no further back than GPS jitter, heading its way; the
    newest must be short of the end of the trip and at a believable delay. Anything else means
    the bus left the run, finished it or was never on it: match it again from scratch.
    """
    run = match.run
    path = timetable.path(run.trip.trip_id)
    along = match.along_m
    for fix in fixes:
        x, y = timetable.plane.to_xy(fix.lat, fix.lon)
        ahead = [
            on.along_m
            for on in _heading_along(path, fix, path.line.project(x, y, within_m=rules.off_line_m), rules)
            if on.along_m >= along - rules.back_jitter_m
        ]
        if not ahead:
            return None
        waiting = along <= path.stop_along_m[0] + 25.0 and fix.speed_mps is not None and fix.speed_mps < 1.0
        if not (waiting and min(ahead) - along <= rules.off_line_m):
            along = max(along, min(ahead))  # (a bus waiting to leave is not moved on by a scattered fix)
    if not fixes or along >= path.stop_along_m[-1] - rules.end_of_trip_m:
        return None
    raw_s = fixes[-1].ts_s - scheduled_time(run, path, along)
    waiting = along <= path.stop_along_m[0] + 25.0
    early_limit = rules.max_layover_early_s if waiting else rules.max_early_s
    if not -early_limit <= raw_s <= rules.max_late_s:
        return None
    delay_s = max(0.0, raw_s) if waiting else raw_s
    moved_m = match.moved_m + along - match.along_m
    return TripMatch(run, along, delay_s, match.confidence, next_stop_index(path, along), moved_m)
