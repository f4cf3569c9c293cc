"""The MobilityData GTFS-realtime validator rules that apply to our feeds, one small function each.

Each rule takes a ``Feeds`` (the three feeds of one build, the static timetable, the time they
were fetched) and returns what it finds wrong, as short strings; an empty list is a pass. Rules
about a sequence of feeds (E017, E018) take two consecutive builds.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2 as rt

from api.transit.geometry import Polyline
from api.transit.timetable import Timetable, Trip

Feed = rt.FeedMessage
TD = rt.TripDescriptor
STU = rt.TripUpdate.StopTimeUpdate
MIN_POSIX_S, MAX_POSIX_S = 1_000_000_000, 4_102_444_800  # 2001 .. 2100: seconds, not milliseconds
FUTURE_SLACK_S = 60
COVERAGE_BUFFER_M = 1609.0
TRIP_BUFFER_M = 200.0
MAX_SPEED_MPS = 26.0  # ~ 94 km/h: no city bus or tram
_TIME = re.compile(r"^\d{2}:[0-5]\d:[0-5]\d$")
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class Feeds:
    vehicle_positions: Feed
    trip_updates: Feed
    alerts: Feed
    timetable: Timetable
    now_s: int
    max_age_s: int = 5  # Cache-Control max-age the API sends

    def all(self) -> tuple[Feed, ...]:
        return (self.vehicle_positions, self.trip_updates, self.alerts)

    def trip_descriptors(self) -> list[TD]:
        descriptors = [e.vehicle.trip for e in self.vehicle_positions.entity if e.vehicle.HasField("trip")]
        return descriptors + [e.trip_update.trip for e in self.trip_updates.entity]

    def updates(self) -> list[rt.TripUpdate]:
        return [e.trip_update for e in self.trip_updates.entity]

    def positions(self) -> list[rt.VehiclePosition]:
        return [e.vehicle for e in self.vehicle_positions.entity]

    def trip(self, descriptor: TD) -> Trip | None:
        return self.timetable.trips.get(descriptor.trip_id)

    def headway_trip(self, descriptor: TD, *, exact: bool) -> bool:
        trip = self.trip(descriptor)
        return trip is not None and any(f.exact_times == exact for f in trip.frequencies)


def _timestamps(feeds: Feeds) -> list[int]:
    stamps = [feed.header.timestamp for feed in feeds.all()]
    stamps += [p.timestamp for p in feeds.positions() if p.HasField("timestamp")]
    stamps += [u.timestamp for u in feeds.updates() if u.HasField("timestamp")]
    for update in feeds.updates():
        for stop in update.stop_time_update:
            stamps += [event.time for event in (stop.arrival, stop.departure) if event.HasField("time")]
    for entity in feeds.alerts.entity:
        for period in entity.alert.active_period:
            stamps += [t for t in (period.start, period.end) if t]
    return stamps


def e001_posix_time(feeds: Feeds) -> list[str]:
    """E001: all times and timestamps are POSIX seconds (not milliseconds)."""
    return [f"{t} is not POSIX seconds" for t in _timestamps(feeds) if not MIN_POSIX_S <= t <= MAX_POSIX_S]


def e002_sorted_stop_sequence(feeds: Feeds) -> list[str]:
    """E002: stop_time_updates of a trip are sorted by increasing stop_sequence."""
    found = []
    for update in feeds.updates():
        sequences = [s.stop_sequence for s in update.stop_time_update if s.HasField("stop_sequence")]
        if sequences != sorted(sequences):
            found.append(f"{update.trip.trip_id}: {sequences}")
    return found


def e003_trip_in_gtfs(feeds: Feeds) -> list[str]:
    """E003: every trip_id is in the GTFS, unless the trip is ADDED."""
    return [
        d.trip_id
        for d in feeds.trip_descriptors()
        if d.trip_id and d.schedule_relationship != TD.ADDED and d.trip_id not in feeds.timetable.trips
    ]


def e004_route_in_gtfs(feeds: Feeds) -> list[str]:
    """E004: every route_id is in the GTFS."""
    routes = [d.route_id for d in feeds.trip_descriptors() if d.route_id]
    routes += [i.route_id for e in feeds.alerts.entity for i in e.alert.informed_entity if i.route_id]
    return [r for r in routes if r not in feeds.timetable.routes]


def e006_headway_trip_fields(feeds: Feeds) -> list[str]:
    """E006: a trip update of an exact_times=0 headway trip has trip_id, start_time and start_date."""
    return [
        u.trip.trip_id
        for u in feeds.updates()
        if feeds.headway_trip(u.trip, exact=False) and not (u.trip.start_time and u.trip.start_date)
    ]


def e009_repeated_stop_needs_sequence(feeds: Feeds) -> list[str]:
    """E009: a trip that visits a stop twice needs stop_sequence in its stop_time_updates."""
    found = []
    for update in feeds.updates():
        trip = feeds.trip(update.trip)
        if trip and len({s.stop_id for s in trip.stop_times}) < len(trip.stop_times):
            found += [trip.trip_id for s in update.stop_time_update if not s.HasField("stop_sequence")]
    return found


def e011_stop_in_gtfs(feeds: Feeds) -> list[str]:
    """E011: every stop_id is in the GTFS stops.txt."""
    stops = [p.stop_id for p in feeds.positions() if p.stop_id]
    stops += [s.stop_id for u in feeds.updates() for s in u.stop_time_update if s.stop_id]
    stops += [i.stop_id for e in feeds.alerts.entity for i in e.alert.informed_entity if i.stop_id]
    return [s for s in stops if s not in feeds.timetable.stops]


def e012_header_is_newest(feeds: Feeds) -> list[str]:
    """E012: no entity timestamp is later than its feed's header timestamp."""
    header_vp, header_tu = feeds.vehicle_positions.header.timestamp, feeds.trip_updates.header.timestamp
    found = [f"vehicle {p.vehicle.id}" for p in feeds.positions() if p.timestamp > header_vp]
    return found + [f"trip {u.trip.trip_id}" for u in feeds.updates() if u.timestamp > header_tu]


def e013_headway_trip_relationship(feeds: Feeds) -> list[str]:
    """E013: an exact_times=0 headway trip is UNSCHEDULED or has no schedule_relationship."""
    return [
        d.trip_id
        for d in feeds.trip_descriptors()
        if feeds.headway_trip(d, exact=False)
        and d.HasField("schedule_relationship")
        and d.schedule_relationship != TD.UNSCHEDULED
    ]


def e015_stops_are_stops(feeds: Feeds) -> list[str]:
    """E015: every stop_id in the feeds has location_type 0 in the GTFS."""
    stops = [p.stop_id for p in feeds.positions() if p.stop_id]
    stops += [s.stop_id for u in feeds.updates() for s in u.stop_time_update if s.stop_id]
    return [s for s in stops if s in feeds.timetable.stops and feeds.timetable.stops[s].location_type != 0]


def e016_added_trips_are_new(feeds: Feeds) -> list[str]:
    """E016: a trip with schedule_relationship ADDED is not in the GTFS."""
    return [
        d.trip_id
        for d in feeds.trip_descriptors()
        if d.schedule_relationship == TD.ADDED and d.trip_id in feeds.timetable.trips
    ]


def e017_changed_content_changes_timestamp(before: Feed, after: Feed) -> list[str]:
    """E017: when the content changes, the header timestamp changes."""
    if list(before.entity) != list(after.entity) and before.header.timestamp == after.header.timestamp:
        return [f"changed at the same timestamp {after.header.timestamp}"]
    return []


def e018_timestamp_never_decreases(before: Feed, after: Feed) -> list[str]:
    """E018: the header timestamp does not go back between two fetches."""
    if after.header.timestamp < before.header.timestamp:
        return [f"{before.header.timestamp} -> {after.header.timestamp}"]
    return []


def e019_exact_headway_start_time(feeds: Feeds) -> list[str]:
    """E019: an exact_times=1 headway trip starts a whole number of headways after the frequency's start."""
    found = []
    for d in feeds.trip_descriptors():
        trip = feeds.trip(d)
        if trip is None or not _TIME.match(d.start_time):
            continue
        h, m, s = (int(x) for x in d.start_time.split(":"))
        start = h * 3600 + m * 60 + s
        exact = [f for f in trip.frequencies if f.exact_times and f.start_s <= start < f.end_s]
        if exact and (start - exact[0].start_s) % exact[0].headway_s:
            found.append(f"{d.trip_id} {d.start_time}")
    return found


def e020_start_time_format(feeds: Feeds) -> list[str]:
    """E020: start_time is HH:MM:SS (hours may pass 24)."""
    return [d.start_time for d in feeds.trip_descriptors() if d.start_time and not _TIME.match(d.start_time)]


def e021_start_date_format(feeds: Feeds) -> list[str]:
    """E021: start_date is YYYYMMDD."""
    return [d.start_date for d in feeds.trip_descriptors() if d.start_date and not _DATE.match(d.start_date)]


def _times(stop: STU) -> list[int]:
    return [e.time for e in (stop.arrival, stop.departure) if e.HasField("time")]


def e022_times_increase(feeds: Feeds) -> list[str]:
    """E022: times of sequential stop_time_updates increase (never equal, never back)."""
    found = []
    for update in feeds.updates():
        times = [_times(s) for s in update.stop_time_update]
        for earlier, later in itertools.pairwise(times):
            if earlier and later and min(later) <= max(earlier):
                found.append(f"{update.trip.trip_id}: {earlier} then {later}")
    return found


def e023_start_time_is_first_arrival(feeds: Feeds) -> list[str]:
    """E023: a scheduled (not headway) trip's start_time is the first arrival_time in stop_times.txt."""
    found = []
    for d in feeds.trip_descriptors():
        trip = feeds.trip(d)
        if trip and not trip.frequencies and d.start_time:
            first = trip.stop_times[0].arrival_s
            if d.start_time != f"{first // 3600:02d}:{first // 60 % 60:02d}:{first % 60:02d}":
                found.append(f"{d.trip_id} {d.start_time}")
    return found


def e024_direction_matches(feeds: Feeds) -> list[str]:
    """E024: direction_id is the one in trips.txt."""
    return [
        d.trip_id
        for d in feeds.trip_descriptors()
        if d.HasField("direction_id") and (trip := feeds.trip(d)) and trip.direction_id != d.direction_id
    ]


def e025_departure_after_arrival(feeds: Feeds) -> list[str]:
    """E025: within a stop_time_update departure is not before arrival."""
    return [
        f"{u.trip.trip_id} seq {s.stop_sequence}"
        for u in feeds.updates()
        for s in u.stop_time_update
        if s.arrival.HasField("time") and s.departure.HasField("time") and s.departure.time < s.arrival.time
    ]


def e026_valid_position(feeds: Feeds) -> list[str]:
    """E026: positions are WGS84 (-90..90, -180..180)."""
    return [
        p.vehicle.id
        for p in feeds.positions()
        if not (-90 <= p.position.latitude <= 90 and -180 <= p.position.longitude <= 180)
    ]


def e027_valid_bearing(feeds: Feeds) -> list[str]:
    """E027: bearing is within 0..360."""
    return [
        p.vehicle.id
        for p in feeds.positions()
        if p.position.HasField("bearing") and not 0 <= p.position.bearing <= 360
    ]


def _distance_to_shapes(feeds: Feeds, lat: float, lon: float, shape_ids: list[str]) -> float:
    plane = feeds.timetable.plane
    x, y = plane.to_xy(lat, lon)
    best = math.inf
    for shape_id in shape_ids:
        line = Polyline([plane.to_xy(*point) for point in feeds.timetable.shapes[shape_id]])
        best = min(best, line.nearest(x, y).off_m)
    return best


def e028_inside_coverage(feeds: Feeds) -> list[str]:
    """E028: a vehicle is within the agency's area (1609 m of any shape)."""
    shapes = list(feeds.timetable.shapes)
    return [
        p.vehicle.id
        for p in feeds.positions()
        if _distance_to_shapes(feeds, p.position.latitude, p.position.longitude, shapes) > COVERAGE_BUFFER_M
    ]


def e029_near_trip_shape(feeds: Feeds) -> list[str]:
    """E029: a vehicle on a trip is within 200 m of the trip's shape, unless a DETOUR alert covers it."""
    detoured = {
        i.trip.trip_id or i.route_id
        for e in feeds.alerts.entity
        if e.alert.effect == rt.Alert.DETOUR
        for i in e.alert.informed_entity
    }
    found = []
    for p in feeds.positions():
        trip = feeds.trip(p.trip)
        if trip is None or trip.shape_id is None or {trip.trip_id, trip.route_id} & detoured:
            continue
        off = _distance_to_shapes(feeds, p.position.latitude, p.position.longitude, [trip.shape_id])
        if off > TRIP_BUFFER_M:
            found.append(f"{p.vehicle.id} {off:.0f} m off {trip.trip_id}")
    return found


def e030_alert_agency_in_gtfs(feeds: Feeds) -> list[str]:
    """E030: an alert's agency_id is in the GTFS."""
    return [
        i.agency_id
        for e in feeds.alerts.entity
        for i in e.alert.informed_entity
        if i.agency_id and i.agency_id not in feeds.timetable.agency_ids
    ]


def e031_alert_trip_route_agree(feeds: Feeds) -> list[str]:
    """E031: an informed entity naming a trip and a route names the trip's own route."""
    found = []
    for e in feeds.alerts.entity:
        for i in e.alert.informed_entity:
            trip = feeds.timetable.trips.get(i.trip.trip_id)
            if trip and i.route_id and trip.route_id != i.route_id:
                found.append(f"{e.id}: {i.trip.trip_id} is not on {i.route_id}")
    return found


def e032_alert_informs_something(feeds: Feeds) -> list[str]:
    """E032: every alert has an informed_entity."""
    return [e.id for e in feeds.alerts.entity if not e.alert.informed_entity]


def e033_informed_entity_specific(feeds: Feeds) -> list[str]:
    """E033: every informed_entity names an agency, route, route type, trip or stop."""
    return [
        e.id
        for e in feeds.alerts.entity
        for i in e.alert.informed_entity
        if not (i.agency_id or i.route_id or i.HasField("route_type") or i.HasField("trip") or i.stop_id)
    ]


def e034_agency_in_gtfs(feeds: Feeds) -> list[str]:
    """E034: every agency_id in the feeds is in agency.txt."""
    return e030_alert_agency_in_gtfs(feeds)


def e035_trip_on_its_route(feeds: Feeds) -> list[str]:
    """E035: a trip_id belongs to the route_id given with it."""
    return [
        f"{d.trip_id} on {d.route_id}"
        for d in feeds.trip_descriptors()
        if d.route_id and (trip := feeds.trip(d)) and trip.route_id != d.route_id
    ]


def e036_e037_sequential_stops_differ(feeds: Feeds) -> list[str]:
    """E036 / E037: sequential stop_time_updates have different stop_sequence and different stop_id."""
    found = []
    for update in feeds.updates():
        for a, b in itertools.pairwise(update.stop_time_update):
            if a.HasField("stop_sequence") and a.stop_sequence == b.stop_sequence:
                found.append(f"E036 {update.trip.trip_id} {a.stop_sequence}")
            if a.stop_id and a.stop_id == b.stop_id:
                found.append(f"E037 {update.trip.trip_id} {a.stop_id}")
    return found


def e038_version(feeds: Feeds) -> list[str]:
    """E038: gtfs_realtime_version is a known version (1.0 or 2.0)."""
    return [
        f.header.gtfs_realtime_version
        for f in feeds.all()
        if f.header.gtfs_realtime_version not in ("1.0", "2.0")
    ]


def e039_full_dataset_deletes_nothing(feeds: Feeds) -> list[str]:
    """E039: a FULL_DATASET feed has no entity with is_deleted."""
    return [
        e.id
        for f in feeds.all()
        if f.header.incrementality == rt.FeedHeader.FULL_DATASET
        for e in f.entity
        if e.HasField("is_deleted")
    ]


def e040_stop_identified(feeds: Feeds) -> list[str]:
    """E040: a stop_time_update has stop_sequence or stop_id."""
    return [
        u.trip.trip_id
        for u in feeds.updates()
        for s in u.stop_time_update
        if not s.HasField("stop_sequence") and not s.stop_id
    ]


def e041_trip_has_stops(feeds: Feeds) -> list[str]:
    """E041: a trip update that is not CANCELED has stop_time_updates."""
    return [
        u.trip.trip_id
        for u in feeds.updates()
        if not u.stop_time_update and u.trip.schedule_relationship != TD.CANCELED
    ]


def e042_no_data_has_no_times(feeds: Feeds) -> list[str]:
    """E042: a NO_DATA stop_time_update has no arrival or departure."""
    return [
        u.trip.trip_id
        for u in feeds.updates()
        for s in u.stop_time_update
        if s.schedule_relationship == STU.NO_DATA and (s.HasField("arrival") or s.HasField("departure"))
    ]


def e043_stop_has_arrival_or_departure(feeds: Feeds) -> list[str]:
    """E043: a stop_time_update that is not SKIPPED or NO_DATA has an arrival or a departure."""
    return [
        f"{u.trip.trip_id} {s.stop_sequence}"
        for u in feeds.updates()
        for s in u.stop_time_update
        if s.schedule_relationship not in (STU.SKIPPED, STU.NO_DATA)
        and not (s.HasField("arrival") or s.HasField("departure"))
    ]


def e044_event_has_time_or_delay(feeds: Feeds) -> list[str]:
    """E044: an arrival or departure has a time or a delay."""
    return [
        f"{u.trip.trip_id} {s.stop_sequence}"
        for u in feeds.updates()
        for s in u.stop_time_update
        for name in ("arrival", "departure")
        if s.HasField(name) and not (getattr(s, name).HasField("time") or getattr(s, name).HasField("delay"))
    ]


def e045_e051_stops_match_gtfs(feeds: Feeds) -> list[str]:
    """E045 / E051: a stop_sequence exists in the trip's stop_times, with the same stop_id."""
    found = []
    for u in feeds.updates():
        trip = feeds.trip(u.trip)
        if trip is None:
            continue
        stops = {s.stop_sequence: s.stop_id for s in trip.stop_times}
        for s in u.stop_time_update:
            if s.HasField("stop_sequence") and s.stop_sequence not in stops:
                found.append(f"E051 {trip.trip_id} {s.stop_sequence}")
            elif s.HasField("stop_sequence") and s.stop_id and stops[s.stop_sequence] != s.stop_id:
                found.append(f"E045 {trip.trip_id} {s.stop_sequence} {s.stop_id}")
    return found


def e046_delay_needs_schedule(feeds: Feeds) -> list[str]:
    """E046: a stop_time_update without a time has a scheduled time in the GTFS to apply a delay to."""
    return [
        f"{u.trip.trip_id} {s.stop_sequence}"
        for u in feeds.updates()
        for s in u.stop_time_update
        if not _times(s) and feeds.trip(u.trip) is None
    ]


def e047_vehicle_trip_pairs_agree(feeds: Feeds) -> list[str]:
    """E047: a vehicle id and trip id paired in VehiclePositions are paired the same way in TripUpdates.

    Pairs are keyed by trip_id alone, the later entity of a feed winning, as MobilityData's validator
    does: several buses on one frequency-based trip_id must come in the same order in both feeds. A
    vehicle's trip in VehiclePositions and another in TripUpdates agree when both trips have one
    ``block_id`` (the next trip of its block; upstream issue #255).
    """
    vp = [(p.trip.trip_id, p.vehicle.id) for p in feeds.positions() if p.trip.trip_id and p.vehicle.id]
    tu = [(u.trip.trip_id, u.vehicle.id) for u in feeds.updates() if u.trip.trip_id and u.vehicle.id]
    by_trip_vp, by_trip_tu = {t: v for t, v in vp}, {t: v for t, v in tu}
    found = [f"{t}: {v} vs {by_trip_tu[t]}" for t, v in by_trip_vp.items() if by_trip_tu.get(t, v) != v]
    by_vehicle_tu = {v: t for t, v in tu}
    for vehicle, trip_id in {v: t for t, v in vp}.items():
        other = by_vehicle_tu.get(vehicle, trip_id)
        one, two = feeds.timetable.trips.get(trip_id), feeds.timetable.trips.get(other)
        same_block = one is not None and two is not None and one.block_id and one.block_id == two.block_id
        if other != trip_id and not same_block:
            found.append(f"{vehicle}: {trip_id} vs {other}")
    return found


def s010_unscheduled_trip_unscheduled_stops(feeds: Feeds) -> list[str]:
    """S010: every stop_time_update of an UNSCHEDULED trip is UNSCHEDULED (gtfs-realtime.proto)."""
    return [
        f"{u.trip.trip_id} {s.stop_sequence}"
        for u in feeds.updates()
        if u.trip.schedule_relationship == TD.UNSCHEDULED
        for s in u.stop_time_update
        if s.schedule_relationship != STU.UNSCHEDULED
    ]


def e048_e049_header_fields(feeds: Feeds) -> list[str]:
    """E048 / E049: a 2.0 header has a timestamp and an incrementality."""
    return [
        f.header.gtfs_realtime_version
        for f in feeds.all()
        if not (f.header.HasField("timestamp") and f.header.HasField("incrementality"))
    ]


def e050_not_in_the_future(feeds: Feeds) -> list[str]:
    """E050: no header or entity timestamp is more than a minute ahead of now."""
    stamps = [f.header.timestamp for f in feeds.all()] + [p.timestamp for p in feeds.positions()]
    stamps += [u.timestamp for u in feeds.updates()]
    return [str(t) for t in stamps if t > feeds.now_s + FUTURE_SLACK_S]


def e052_vehicle_ids_unique(feeds: Feeds) -> list[str]:
    """E052: vehicle.id is unique within VehiclePositions (TripUpdates may give one vehicle's next
    trips of its block, as gtfs-realtime allows)."""
    counts = Counter(p.vehicle.id for p in feeds.positions() if p.vehicle.id)
    return [v for v, n in counts.items() if n > 1]


def w001_timestamps(feeds: Feeds) -> list[str]:
    """W001: header, vehicle positions and trip updates carry timestamps."""
    found = [p.vehicle.id for p in feeds.positions() if not p.HasField("timestamp")]
    return found + [u.trip.trip_id for u in feeds.updates() if not u.HasField("timestamp")]


def w002_vehicle_id(feeds: Feeds) -> list[str]:
    """W002: vehicle positions and trip updates name their vehicle."""
    found = [str(p.position) for p in feeds.positions() if not p.vehicle.id]
    return found + [u.trip.trip_id for u in feeds.updates() if not u.vehicle.id]


def w003_feeds_agree(feeds: Feeds) -> list[str]:
    """W003: every vehicle and trip of VehiclePositions is in TripUpdates, and back (as upstream: by id)."""
    vp_vehicles = {p.vehicle.id for p in feeds.positions() if p.vehicle.id}
    tu_vehicles = {u.vehicle.id for u in feeds.updates() if u.vehicle.id}
    vp_trips = {p.trip.trip_id for p in feeds.positions() if p.trip.trip_id}
    tu_trips = {u.trip.trip_id for u in feeds.updates() if u.trip.trip_id}
    return (
        [f"vehicle only in positions: {v}" for v in sorted(vp_vehicles - tu_vehicles)]
        + [f"vehicle only in updates: {v}" for v in sorted(tu_vehicles - vp_vehicles)]
        + [f"trip only in positions: {t}" for t in sorted(vp_trips - tu_trips)]
        + [f"trip only in updates: {t}" for t in sorted(tu_trips - vp_trips)]
    )


def w004_realistic_speed(feeds: Feeds) -> list[str]:
    """W004: speed is realistic for a city bus or tram."""
    return [
        f"{p.vehicle.id} {p.position.speed}"
        for p in feeds.positions()
        if p.position.HasField("speed") and not 0 <= p.position.speed <= MAX_SPEED_MPS
    ]


def w005_headway_update_names_vehicle(feeds: Feeds) -> list[str]:
    """W005: a trip update of an exact_times=0 headway trip names its vehicle."""
    return [
        u.trip.trip_id
        for u in feeds.updates()
        if feeds.headway_trip(u.trip, exact=False) and not u.vehicle.id
    ]


def w006_update_has_trip_id(feeds: Feeds) -> list[str]:
    """W006: a trip descriptor (of a TripUpdate or a VehiclePosition) has a trip_id."""
    found = [e.id for e in feeds.trip_updates.entity if not e.trip_update.trip.trip_id]
    return found + [
        e.id
        for e in feeds.vehicle_positions.entity
        if e.vehicle.HasField("trip") and not e.vehicle.trip.trip_id
    ]


def w007_refresh_interval(feeds: Feeds) -> list[str]:
    """W007: feeds refresh at least every 35 s (here: the Cache-Control max-age clients honour)."""
    return [f"max-age {feeds.max_age_s}"] if feeds.max_age_s > 35 else []


def w008_header_fresh(feeds: Feeds) -> list[str]:
    """W008: the header timestamp is at most 65 s old when fetched."""
    return [str(f.header.timestamp) for f in feeds.all() if feeds.now_s - f.header.timestamp > 65]


def w009_schedule_relationship(feeds: Feeds) -> list[str]:
    """W009: trip descriptors and stop_time_updates state their schedule_relationship."""
    descriptors = feeds.trip_descriptors() + [
        i.trip for e in feeds.alerts.entity for i in e.alert.informed_entity if i.HasField("trip")
    ]
    found = [d.trip_id or d.route_id for d in descriptors if not d.HasField("schedule_relationship")]
    return found + [
        f"{u.trip.trip_id} {s.stop_sequence}"
        for u in feeds.updates()
        for s in u.stop_time_update
        if not s.HasField("schedule_relationship")
    ]


ERRORS: tuple[Callable[[Feeds], list[str]], ...] = (
    e001_posix_time,
    e002_sorted_stop_sequence,
    e003_trip_in_gtfs,
    e004_route_in_gtfs,
    e006_headway_trip_fields,
    e009_repeated_stop_needs_sequence,
    e011_stop_in_gtfs,
    e012_header_is_newest,
    e013_headway_trip_relationship,
    e015_stops_are_stops,
    e016_added_trips_are_new,
    e019_exact_headway_start_time,
    e020_start_time_format,
    e021_start_date_format,
    e022_times_increase,
    e023_start_time_is_first_arrival,
    e024_direction_matches,
    e025_departure_after_arrival,
    e026_valid_position,
    e027_valid_bearing,
    e028_inside_coverage,
    e029_near_trip_shape,
    e030_alert_agency_in_gtfs,
    e031_alert_trip_route_agree,
    e032_alert_informs_something,
    e033_informed_entity_specific,
    e034_agency_in_gtfs,
    e035_trip_on_its_route,
    e036_e037_sequential_stops_differ,
    e038_version,
    e039_full_dataset_deletes_nothing,
    e040_stop_identified,
    e041_trip_has_stops,
    e042_no_data_has_no_times,
    e043_stop_has_arrival_or_departure,
    e044_event_has_time_or_delay,
    e045_e051_stops_match_gtfs,
    e046_delay_needs_schedule,
    e047_vehicle_trip_pairs_agree,
    e048_e049_header_fields,
    e050_not_in_the_future,
    e052_vehicle_ids_unique,
    s010_unscheduled_trip_unscheduled_stops,
)
SEQUENCE_ERRORS: tuple[Callable[[Feed, Feed], list[str]], ...] = (
    e017_changed_content_changes_timestamp,
    e018_timestamp_never_decreases,
)
WARNINGS: tuple[Callable[[Feeds], list[str]], ...] = (
    w001_timestamps,
    w002_vehicle_id,
    w003_feeds_agree,
    w004_realistic_speed,
    w005_headway_update_names_vehicle,
    w006_update_has_trip_id,
    w007_refresh_interval,
    w008_header_fresh,
    w009_schedule_relationship,
)


def rule_id(rule: Callable[..., list[str]]) -> str:
    return (rule.__doc__ or "").split(":", 1)[0]


def check(feeds: Feeds, rules: tuple[Callable[[Feeds], list[str]], ...]) -> dict[str, list[str]]:
    """Findings by rule id, rules that pass left out."""
    return {rule_id(rule): found for rule in rules if (found := rule(feeds))}
