"""GTFS-realtime TripUpdates: when each matched bus will reach the stops still ahead of it.

From the stop it is heading to on, each segment takes the running time learned for it at that hour
(``api.transit.history``), else its scheduled one, which carries the bus's current delay along (the
trip's ``delay`` when the run has a schedule); each time says its uncertainty where history knows
the spread. Where the schedule has slack (a hub stop with a long planned dwell, the first stop) a
late bus wins time back down to a short dwell and an early bus waits for its departure time. A stop
not yet served is never predicted in the past: a bus that has not reached it by now reaches it later.
Stops an operator skipped are driven by and published SKIPPED, without times.

What is published is aimed (``aim_s``): riders forgive a late bus more than one gone before they
reach the stop, and TransitApp's ETA windows say by how much (30 s early to 90 s late 0-3 minutes
ahead, up to 90 s early to 270 s late 10-15 minutes ahead). Each time is published earlier than
expected by half of what its window allows late beyond early: the expected time is in its middle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2

from api.transit.accuracy import WINDOWS
from api.transit.history import LearnedTimes, Spread
from api.transit.isolation import vehicle_extra
from api.transit.matching import TripMatch
from api.transit.timetable import TripPath, TripRun

MIN_DWELL_S = 15
AT_STOP_M = 30.0  # a bus this near a stop (and slow) is at it
_STU = gtfs_realtime_pb2.TripUpdate.StopTimeUpdate
HOLD_DWELL_S = 60  # a planned dwell this long is a timing point: buses wait there rather than leave early
# (time ahead, how much earlier to publish): the middle of each TransitApp window, at its bucket's middle.
_AIM_POINTS = tuple(((w.start_s + w.end_s) / 2, (w.late_s - w.early_s) / 2) for w in WINDOWS)


def aim_s(time_s: int, now_s: int) -> int:
    """The time to publish for a bus expected at ``time_s``: earlier by half of what TransitApp's window
    for that horizon allows late beyond early, so the expected time is in the window's middle.

    Between the middles of two buckets the shift is interpolated, beyond the first and last it
    stays theirs: it changes slower than time, so later expected times stay later. Never before
    ``now_s``.
    """
    ahead = time_s - now_s
    (first_s, first_shift), (last_s, last_shift) = _AIM_POINTS[0], _AIM_POINTS[-1]
    if ahead <= first_s:
        shift = first_shift
    elif ahead >= last_s:
        shift = last_shift
    else:
        (x0, y0), (x1, y1) = next((a, b) for a, b in itertools.pairwise(_AIM_POINTS) if ahead <= b[0])
        shift = y0 + (y1 - y0) * (ahead - x0) / (x1 - x0)
    return max(now_s, time_s - round(shift))


@dataclass(frozen=True, slots=True)
class StopPrediction:
    index: int
    stop_sequence: int
    stop_id: str
    arrival_s: int
    departure_s: int
    arrival_uncertainty_s: int | None = None  # 0: measured; None: not known
    departure_uncertainty_s: int | None = None
    skipped: bool = False  # the bus drives by (an operator's change): no times are published


class _Spread:
    """The variance of a prediction as it is carried along the trip; None once a part is unknown."""

    def __init__(self, variance: float | None) -> None:
        self.variance = variance

    def add(self, spread: Spread | None, share: float = 1.0) -> None:
        if self.variance is not None:
            self.variance = None if spread is None else self.variance + share * spread.sd_s**2

    def seconds(self) -> int | None:
        return None if self.variance is None else round(math.sqrt(self.variance))


def predict(
    match: TripMatch,
    path: TripPath,
    *,
    now_s: int,
    learned: LearnedTimes | None = None,
    skipped: Collection[int] = (),
    aim: bool = False,
) -> list[StopPrediction]:
    """Arrival and departure at each stop from the one the bus is at or heading to, strictly in order.

    No time is before ``now_s`` but the arrival at a stop the bus is at (it has arrived). With
    ``learned`` running times, each segment ahead takes what history says it takes at that hour, each
    stop its learned dwell, and the uncertainty is the spread of all of them on the way (segments
    taken as independent); a segment without history keeps its scheduled running time and makes
    the uncertainty unknown from there on. ``skipped`` stop_sequences are driven by without a dwell.
    With ``aim`` the times are those to publish (``aim_s``; a measured arrival stays as it was).
    """
    run = match.run
    stop_times = run.trip.stop_times
    delay = match.delay_s
    first = match.next_stop
    arrived = path.stop_along_m[first] - match.along_m <= AT_STOP_M
    spread = _Spread(0.0 if learned is not None else None)
    if not arrived and learned is not None and first > 0:
        # The part of its segment still ahead of the bus.
        start, end = path.stop_along_m[first - 1], path.stop_along_m[first]
        share = min(1.0, max(0.0, (end - match.along_m) / (end - start))) if end > start else 0.0
        leave_s = run.departure(first - 1) + delay
        spread.add(learned.run(stop_times[first - 1].stop_id, stop_times[first].stop_id, leave_s), share)
    predictions: list[StopPrediction] = []
    previous_departure = -1
    published = _InOrder(now_s) if aim else None
    for index in range(first, len(stop_times)):
        stop_time = stop_times[index]
        run_s = run.arrival(index) - run.departure(index - 1) if index else 0
        history = None
        if index > first and learned is not None:
            history = learned.run(stop_times[index - 1].stop_id, stop_time.stop_id, previous_departure)
            spread.add(history)
            if history is not None:
                run_s = round(history.median_s)
        if index == first:
            arrival = max(round(run.arrival(index) + delay), previous_departure + 1)
        else:
            arrival = previous_departure + max(1, run_s)
        if not (arrived and index == first):
            arrival = max(arrival, now_s)
        arrival_uncertainty = 0 if arrived and index == first else spread.seconds()
        planned_dwell = stop_time.departure_s - stop_time.arrival_s
        if stop_time.stop_sequence in skipped:
            departure = arrival
        elif index == len(stop_times) - 1:
            departure = arrival + planned_dwell  # the end of the trip: what history has there is a layover
        elif index == 0 or planned_dwell >= HOLD_DWELL_S:
            # A timing point: a late bus leaves after a short dwell, an early one waits for its time.
            departure = max(arrival + MIN_DWELL_S if index else arrival, run.departure(index))
            if spread.variance is not None:
                slack = departure - arrival - (MIN_DWELL_S if index else 0)
                spread.variance = max(0.0, math.sqrt(spread.variance) - slack) ** 2
        else:
            dwell = learned.dwell(stop_time.stop_id, arrival) if learned is not None else None
            spread.add(dwell)
            departure = arrival + (round(dwell.median_s) if dwell is not None else planned_dwell)
        departure = max(departure, now_s)
        measured = arrived and index == first
        predictions.append(
            StopPrediction(
                index,
                stop_time.stop_sequence,
                stop_time.stop_id,
                arrival if published is None else published.time(arrival, measured=measured),
                departure if published is None else published.time(departure),
                arrival_uncertainty,
                spread.seconds(),
                stop_time.stop_sequence in skipped,
            )
        )
        previous_departure = departure
    return predictions


class _InOrder:
    """Aimed times of one trip, in the order of the expected ones (rounding never ties two that differ)."""

    def __init__(self, now_s: int) -> None:
        self.now_s = now_s
        self._last: tuple[int, int] | None = None  # (expected, published)

    def time(self, expected_s: int, *, measured: bool = False) -> int:
        published = expected_s if measured else aim_s(expected_s, self.now_s)
        if self._last is not None:
            last_expected, last_published = self._last
            published = max(published, last_published + (expected_s > last_expected))
        self._last = (expected_s, published)
        return published


@dataclass(frozen=True, slots=True)
class TripProgress:
    """A matched bus as TripUpdates need it."""

    vehicle_id: str
    label: str | None
    fix_ts_s: int
    match: TripMatch
    path: TripPath
    aim: bool = True  # published aimed (``aim_s``); a block's next run starts from an aimed arrival already


def trip_descriptor(match: TripMatch, descriptor: gtfs_realtime_pb2.TripDescriptor) -> None:
    """Fill ``descriptor`` with the bus's run."""
    run_descriptor(match.run, descriptor)


def run_descriptor(run: TripRun, descriptor: gtfs_realtime_pb2.TripDescriptor) -> None:
    """Fill ``descriptor`` with the run: trip, route, direction, service day and start time."""
    trip = run.trip
    descriptor.trip_id = trip.trip_id
    descriptor.route_id = trip.route_id
    if trip.direction_id is not None:
        descriptor.direction_id = trip.direction_id
    descriptor.start_date = run.start_date
    descriptor.start_time = run.start_time
    frequency = run.frequency
    # A headway run without exact times has no schedule to be on (GTFS-realtime: UNSCHEDULED).
    descriptor.schedule_relationship = (
        gtfs_realtime_pb2.TripDescriptor.UNSCHEDULED
        if frequency is not None and not frequency.exact_times
        else gtfs_realtime_pb2.TripDescriptor.SCHEDULED
    )


def add_trip_updates(
    feed: gtfs_realtime_pb2.FeedMessage,
    buses: Iterable[TripProgress],
    *,
    now_s: int,
    learned: LearnedTimes | None = None,
    skipped: Mapping[str, Collection[int]] | None = None,
) -> None:
    """One TripUpdate entity per run, id ``<trip_id>@<start_date>`` (stable while the run lasts).

    Entities come in vehicle order, as in VehiclePositions: several buses run one frequency-based
    trip_id at once, and consumers that pair vehicles and trips by trip_id alone (MobilityData's
    E047) then pair them alike in both feeds; a bus's runs come in the order it drives them (its
    next run of its block after its current one). ``skipped`` names the stop_sequences operators
    took out of a run (by run key).
    """
    for bus in sorted(buses, key=lambda b: (b.vehicle_id, b.match.run.departure(0), b.match.run.key)):
        gone = (skipped or {}).get(bus.match.run.key, ())
        entity = vehicle_extra(bus.vehicle_id, "trip update", _trip_update_entity, bus, now_s, learned, gone)
        if entity is not None:
            feed.entity.append(entity)


def _trip_update_entity(
    bus: TripProgress, now_s: int, learned: LearnedTimes | None, skipped: Collection[int]
) -> gtfs_realtime_pb2.FeedEntity | None:
    """The bus's TripUpdate, built apart so that a failure leaves the feed as it was."""
    predictions = predict(bus.match, bus.path, now_s=now_s, learned=learned, skipped=skipped, aim=bus.aim)
    if not predictions:
        return None
    entity = gtfs_realtime_pb2.FeedEntity(id=bus.match.run.key)
    update = entity.trip_update
    trip_descriptor(bus.match, update.trip)
    update.vehicle.id = bus.vehicle_id
    if bus.label:
        update.vehicle.label = bus.label
    update.timestamp = bus.fix_ts_s
    # Every stop of an UNSCHEDULED run is UNSCHEDULED too (gtfs-realtime.proto, TripDescriptor).
    relationship = (
        _STU.UNSCHEDULED
        if update.trip.schedule_relationship == gtfs_realtime_pb2.TripDescriptor.UNSCHEDULED
        else _STU.SCHEDULED
    )
    if update.trip.schedule_relationship == gtfs_realtime_pb2.TripDescriptor.SCHEDULED:
        # How late the bus runs now (GTFS-realtime TripUpdate.delay); a headway run has no schedule.
        update.delay = round(bus.match.delay_s)
    for prediction in predictions:
        stop_update = update.stop_time_update.add()
        stop_update.stop_sequence = prediction.stop_sequence
        stop_update.stop_id = prediction.stop_id
        if prediction.skipped:
            stop_update.schedule_relationship = _STU.SKIPPED  # no times: the bus does not stop
            continue
        _event(stop_update.arrival, prediction.arrival_s, prediction.arrival_uncertainty_s)
        _event(stop_update.departure, prediction.departure_s, prediction.departure_uncertainty_s)
        stop_update.schedule_relationship = relationship
    return entity


def _event(event: gtfs_realtime_pb2.TripUpdate.StopTimeEvent, time_s: int, uncertainty_s: int | None) -> None:
    """A predicted time, with its uncertainty when known (0: measured; GTFS-realtime: omitted is unknown)."""
    event.time = time_s
    if uncertainty_s is not None:
        event.uncertainty = uncertainty_s
