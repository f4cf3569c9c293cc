"""Runs that should have started and have no bus: detected cancellations.

A rider waiting for a bus that is not coming is helped by being told; told wrongly, they give up on
a bus that comes. So a run is taken as not running only when everything else says the map can see
it: ``after_s`` past its scheduled start, still scheduled on the road, no bus on it nor seen on it
since (a bus done early or whose tracker died did not miss its run), other buses of
its route matched (the route's trackers work; a route with none heard gets the "no real-time data"
alert instead), no bus still on a run that ends where this one starts (it may take this one late,
its block), and no bus left unmatched near the run's line (on a detour, or with a trip we could not
place). Such a run is published CANCELED in TripUpdates with an Alert on the trip saying it was
detected, not announced; it comes back as soon as a bus is matched to it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from google.transit import gtfs_realtime_pb2

from api.transit.matching import TripMatch
from api.transit.timetable import Timetable, TripRun
from api.transit.vehicle_positions import Fix

NEAR_LINE_M = 500.0  # an unmatched bus this near a run's line may be its bus, on a detour
HUB_RADIUS_M = 150.0  # a run ends "where another starts" within this
_ALERT = gtfs_realtime_pb2.Alert


def missed_runs(
    timetable: Timetable,
    matches: Mapping[str, TripMatch],
    newest: Mapping[str, Fix],
    *,
    now_s: int,
    after_s: float,
    known: Collection[str] = (),
) -> list[TripRun]:
    """Scheduled runs ``after_s`` past their start with no bus, by the rules above; ``known``: run keys
    to leave alone (changed by an operator, or seen with a bus before)."""
    on_runs = {match.run.key for match in matches.values()}
    heard_routes = {match.run.trip.route_id for match in matches.values()}
    unmatched = [fix for vehicle, fix in newest.items() if vehicle not in matches]
    missed = []
    for run in timetable.runs_between(now_s, now_s):
        frequency = run.frequency
        if (
            run.key in on_runs
            or run.key in known
            or run.trip.route_id not in heard_routes
            or (frequency is not None and not frequency.exact_times)  # a headway run: no start to miss
            or run.departure(0) + after_s > now_s
        ):
            continue
        if _near_unmatched(timetable, run, unmatched) or _feeding_run(timetable, run, matches.values()):
            continue
        missed.append(run)
    return sorted(missed, key=lambda run: run.key)


def _near_unmatched(timetable: Timetable, run: TripRun, unmatched: Iterable[Fix]) -> bool:
    path = timetable.path(run.trip.trip_id)
    for fix in unmatched:
        if fix.route_id is not None and fix.route_id == run.trip.route_id:
            return True
        if path.line.project(*timetable.plane.to_xy(fix.lat, fix.lon), within_m=NEAR_LINE_M):
            return True
    return False


def _feeding_run(timetable: Timetable, run: TripRun, matches: Iterable[TripMatch]) -> bool:
    """Whether a bus is still on a run that ends where ``run`` starts (scheduled to end before it starts)."""
    start = timetable.stops[run.trip.stop_times[0].stop_id]
    x, y = timetable.plane.to_xy(start.lat, start.lon)
    for match in matches:
        earlier = match.run
        if earlier.arrival(len(earlier.trip.stop_times) - 1) > run.departure(0):
            continue
        end = timetable.stops[earlier.trip.stop_times[-1].stop_id]
        ex, ey = timetable.plane.to_xy(end.lat, end.lon)
        if (ex - x) ** 2 + (ey - y) ** 2 <= HUB_RADIUS_M**2:
            return True
    return False


def add_missed_run_alerts(
    feed: gtfs_realtime_pb2.FeedMessage, timetable: Timetable, runs: Iterable[TripRun]
) -> None:
    """An automatic alert per missed run: on that trip, saying it was detected, not announced."""
    for run in runs:
        route = timetable.routes[run.trip.route_id]
        name = route.short_name or route.long_name
        at = run.start_time[:5]
        entity = feed.entity.add()
        entity.id = f"auto-missed-{run.key}"
        message = entity.alert
        selector = message.informed_entity.add()
        selector.route_id = run.trip.route_id
        selector.trip.trip_id = run.trip.trip_id
        selector.trip.start_date = run.start_date
        selector.trip.start_time = run.start_time
        message.cause = _ALERT.UNKNOWN_CAUSE
        message.effect = _ALERT.NO_SERVICE
        message.severity_level = _ALERT.WARNING
        for text, language in (
            (f"Маршрут {name}: рейс о {at}, схоже, не вийшов (автобуса на ньому не виявлено)", "uk"),  # noqa: RUF001 - Ukrainian
            (f"Route {name}: the {at} run seems not to operate (no bus detected on it)", "en"),
        ):
            translation = message.header_text.translation.add()
            translation.text, translation.language = text, language
