"""GTFS-realtime TripUpdates: when each matched bus will reach the stops still ahead of it.

The bus's current delay is carried along the trip (and published as the trip's ``delay`` when
the run has a schedule). Where the schedule has slack (a hub stop with a long planned dwell, the
first stop) a late bus wins time back down to a short dwell and an early bus waits for its
departure time; elsewhere the delay stays as it is. A stop not yet served is never predicted in
the past: a bus that has not reached it by now reaches it later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2

from api.transit.isolation import vehicle_extra
from api.transit.matching import TripMatch
from api.transit.timetable import TripPath

MIN_DWELL_S = 15
AT_STOP_M = 30.0  # a bus this near a stop (and slow) is at it
_STU = gtfs_realtime_pb2.TripUpdate.StopTimeUpdate
HOLD_DWELL_S = 60  # a planned dwell this long is a timing point: buses wait there rather than leave early


@dataclass(frozen=True, slots=True)
class StopPrediction:
    index: int
    stop_sequence: int
    stop_id: str
    arrival_s: int
    departure_s: int


def predict(match: TripMatch, path: TripPath, *, now_s: int) -> list[StopPrediction]:
    """Arrival and departure at each stop from the one the bus is at or heading to, strictly in order.

    No time is before ``now_s`` but the arrival at a stop the bus is at (it has arrived).
    """
    run = match.run
    stop_times = run.trip.stop_times
    delay = match.delay_s
    arrived = path.stop_along_m[match.next_stop] - match.along_m <= AT_STOP_M
    predictions: list[StopPrediction] = []
    previous_departure = -1
    for index in range(match.next_stop, len(stop_times)):
        stop_time = stop_times[index]
        arrival = max(round(run.arrival(index) + delay), previous_departure + 1)
        if not (arrived and index == match.next_stop):
            arrival = max(arrival, now_s)
        planned_dwell = stop_time.departure_s - stop_time.arrival_s
        if index == 0 or planned_dwell >= HOLD_DWELL_S:
            delay = max(0.0, delay - max(0, planned_dwell - MIN_DWELL_S)) if delay > 0 else 0.0
            departure = max(arrival + MIN_DWELL_S if index else arrival, round(run.departure(index) + delay))
        else:
            departure = arrival + planned_dwell
        departure = max(departure, now_s)
        predictions.append(
            StopPrediction(index, stop_time.stop_sequence, stop_time.stop_id, arrival, departure)
        )
        previous_departure = departure
    return predictions


@dataclass(frozen=True, slots=True)
class TripProgress:
    """A matched bus as TripUpdates need it."""

    vehicle_id: str
    label: str | None
    fix_ts_s: int
    match: TripMatch
    path: TripPath


def trip_descriptor(match: TripMatch, descriptor: gtfs_realtime_pb2.TripDescriptor) -> None:
    """Fill ``descriptor`` with the run: trip, route, direction, service day and start time."""
    trip = match.run.trip
    descriptor.trip_id = trip.trip_id
    descriptor.route_id = trip.route_id
    if trip.direction_id is not None:
        descriptor.direction_id = trip.direction_id
    descriptor.start_date = match.run.start_date
    descriptor.start_time = match.run.start_time
    frequency = match.run.frequency
    # A headway run without exact times has no schedule to be on (GTFS-realtime: UNSCHEDULED).
    descriptor.schedule_relationship = (
        gtfs_realtime_pb2.TripDescriptor.UNSCHEDULED
        if frequency is not None and not frequency.exact_times
        else gtfs_realtime_pb2.TripDescriptor.SCHEDULED
    )


def add_trip_updates(
    feed: gtfs_realtime_pb2.FeedMessage, buses: Iterable[TripProgress], *, now_s: int
) -> None:
    """One TripUpdate entity per run, id ``<trip_id>@<start_date>`` (stable while the run lasts).

    Entities come in vehicle order, as in VehiclePositions: several buses run one frequency-based
    trip_id at once, and consumers that pair vehicles and trips by trip_id alone (MobilityData's
    E047) then pair them alike in both feeds. A bus's runs come in the order it drives them (its
    next run of its block after its current one).
    """
    for bus in sorted(buses, key=lambda b: (b.vehicle_id, b.match.run.departure(0), b.match.run.key)):
        entity = vehicle_extra(bus.vehicle_id, "trip update", _trip_update_entity, bus, now_s)
        if entity is not None:
            feed.entity.append(entity)


def _trip_update_entity(bus: TripProgress, now_s: int) -> gtfs_realtime_pb2.FeedEntity | None:
    """The bus's TripUpdate, built apart so that a failure leaves the feed as it was."""
    predictions = predict(bus.match, bus.path, now_s=now_s)
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
        stop_update.arrival.time = prediction.arrival_s
        stop_update.departure.time = prediction.departure_s
        stop_update.schedule_relationship = relationship
    return entity
