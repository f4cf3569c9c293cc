"""GTFS-realtime VehiclePositions from the newest ``vehicle_position`` points.

A point's tags name the vehicle (``vehicle``, else ``device``), its ``vehicle_label`` and,
when known, its ``route``; its fields carry the fix (``lat``, ``lon``, ``speed_mps``,
``course_deg``, ``fix_quality``, ...) and, while the driver is logged in to one on the
console, the trip (``trip_id``, a string: a field, as trips would make a series each).
``build_feed`` is pure: same points and clock, same bytes. With a timetable, the trip of a
vehicle comes from trip matching (``placements``) and only ids the timetable knows are published.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2

from api.transit.isolation import vehicle_extra
from api.transit.matching import TripMatch
from api.transit.occupancy import Occupancy
from api.transit.trip_updates import trip_descriptor
from collector.store.base import FieldValue, Point, Row

MEASUREMENT = "vehicle_position"
GTFS_REALTIME_VERSION = "2.0"


@dataclass(frozen=True, slots=True)
class Placement:
    """A matched vehicle's run and where it is on it."""

    match: TripMatch
    stop_sequence: int
    stop_id: str
    status: int  # VehiclePosition.VehicleStopStatus


@dataclass(frozen=True, slots=True)
class Fix:
    vehicle_id: str
    label: str | None
    route_id: str | None
    trip_id: str | None
    ts_ms: int
    lat: float
    lon: float
    speed_mps: float | None
    bearing_deg: float | None


def _number(fields: Mapping[str, FieldValue | None], name: str) -> float | None:
    value = fields.get(name)
    if type(value) is float:  # the usual case, first
        return value if math.isfinite(value) else None
    # bool is an int in Python, but a true/false field is no coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def fix_of(point: Point) -> Fix | None:
    """The fix a point describes, or None when it cannot be placed on a map."""
    return fix_of_row(Row(point.ts_ms, point.tags, point.fields))


def fix_of_row(row: Row) -> Fix | None:
    """The fix a stored row of ``MEASUREMENT`` describes (a None value: no such field), or None."""
    tags, fields = row.tags, row.values
    vehicle_id = tags.get("vehicle") or tags.get("device")
    lat, lon = _number(fields, "lat"), _number(fields, "lon")
    if not vehicle_id or lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if _number(fields, "fix_quality") == 0:  # NMEA quality 0: the receiver has no fix
        return None
    speed = _number(fields, "speed_mps")
    course = _number(fields, "course_deg")
    trip = fields.get("trip_id")
    return Fix(
        vehicle_id=vehicle_id,
        label=tags.get("vehicle_label"),
        route_id=tags.get("route"),
        trip_id=trip if isinstance(trip, str) and trip else None,
        ts_ms=row.ts_ms,
        lat=lat,
        lon=lon,
        speed_mps=speed if speed is not None and speed >= 0 else None,
        bearing_deg=course % 360 if course is not None else None,
    )


def build_feed(
    points: Iterable[Point],
    *,
    now_ms: int,
    max_age_s: float,
    max_ahead_s: float = 30.0,
    not_before_s: int = 0,
    placements: Mapping[str, Placement] | None = None,
    occupancies: Mapping[str, Occupancy] | None = None,
    known_routes: Container[str] | None = None,
) -> gtfs_realtime_pb2.FeedMessage:
    """A FULL_DATASET FeedMessage with one entity per vehicle whose newest fix is fresh.

    Fixes older than ``max_age_s`` or more than ``max_ahead_s`` ahead of ``now_ms`` are left
    out; of several fixes of one vehicle the newest wins. The header timestamp is the build time
    ``now_ms`` (when the content was made, as GTFS-realtime asks), never earlier than ``not_before_s``.
    ``placements`` and ``occupancies`` are keyed by vehicle id. When ``known_routes`` is given
    (a timetable is in use) trips come only from ``placements`` and a route tag is published only
    if the timetable has that route.
    """
    newest = newest_fixes(points, now_ms=now_ms, max_age_s=max_age_s, max_ahead_s=max_ahead_s)
    return vehicle_feed(
        newest,
        now_ms=now_ms,
        not_before_s=not_before_s,
        placements=placements,
        occupancies=occupancies,
        known_routes=known_routes,
    )


def vehicle_feed(
    newest: Mapping[str, Fix],
    *,
    now_ms: int,
    not_before_s: int = 0,
    placements: Mapping[str, Placement] | None = None,
    occupancies: Mapping[str, Occupancy] | None = None,
    known_routes: Container[str] | None = None,
) -> gtfs_realtime_pb2.FeedMessage:
    """``build_feed`` from each vehicle's newest fix, already chosen."""
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.header.gtfs_realtime_version = GTFS_REALTIME_VERSION
    feed.header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    feed.header.timestamp = max(now_ms // 1000, not_before_s)
    placements = placements or {}
    occupancies = occupancies or {}

    for vehicle_id in sorted(newest):
        fix = newest[vehicle_id]
        entity = feed.entity.add()
        entity.id = vehicle_id
        vehicle = entity.vehicle
        vehicle.timestamp = fix.ts_ms // 1000
        vehicle.vehicle.id = vehicle_id
        if fix.label:
            vehicle.vehicle.label = fix.label
        placement = placements.get(vehicle_id)
        placed = (
            None
            if placement is None
            else vehicle_extra(vehicle_id, "trip placement", _placement_part, placement)
        )
        if placed is not None:
            vehicle.MergeFrom(placed)
        elif known_routes is None:
            if fix.route_id:
                vehicle.trip.route_id = fix.route_id
            if fix.trip_id:
                vehicle.trip.trip_id = fix.trip_id
        elif fix.route_id and fix.route_id in known_routes:
            vehicle.trip.route_id = fix.route_id
        vehicle.position.latitude = fix.lat
        vehicle.position.longitude = fix.lon
        if fix.bearing_deg is not None:
            vehicle.position.bearing = fix.bearing_deg
        if fix.speed_mps is not None:
            vehicle.position.speed = fix.speed_mps
        occupancy = occupancies.get(vehicle_id)
        load = (
            None if occupancy is None else vehicle_extra(vehicle_id, "occupancy", _occupancy_part, occupancy)
        )
        if load is not None:
            vehicle.MergeFrom(load)
    return feed


def _placement_part(placement: Placement) -> gtfs_realtime_pb2.VehiclePosition:
    part = gtfs_realtime_pb2.VehiclePosition()
    trip_descriptor(placement.match, part.trip)
    part.current_stop_sequence = placement.stop_sequence
    part.stop_id = placement.stop_id
    part.current_status = placement.status  # type: ignore[assignment]
    return part


def _occupancy_part(occupancy: Occupancy) -> gtfs_realtime_pb2.VehiclePosition:
    part = gtfs_realtime_pb2.VehiclePosition()
    part.occupancy_status = occupancy.status  # type: ignore[assignment]
    part.occupancy_percentage = occupancy.percentage
    return part


def newest_fixes(
    points: Iterable[Point], *, now_ms: int, max_age_s: float, max_ahead_s: float = 30.0
) -> dict[str, Fix]:
    """The newest placeable fix of each vehicle within [now - max_age_s, now + max_ahead_s]."""
    newest: dict[str, Fix] = {}
    for point in points:
        if point.measurement != MEASUREMENT:
            continue
        fix = fix_of(point)
        if fix is None or not -max_ahead_s * 1000 <= now_ms - fix.ts_ms <= max_age_s * 1000:
            continue
        known = newest.get(fix.vehicle_id)
        if known is None or fix.ts_ms > known.ts_ms:
            newest[fix.vehicle_id] = fix
    return newest


class HeaderClock:
    """Keeps a feed's header timestamp from going backwards within this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_s = 0

    def build(
        self, points: Iterable[Point], *, now_ms: int, max_age_s: float, max_ahead_s: float
    ) -> gtfs_realtime_pb2.FeedMessage:
        """``build_feed`` with this clock's floor, which then moves up to the new header timestamp."""
        with self._lock:
            feed = build_feed(
                points, now_ms=now_ms, max_age_s=max_age_s, max_ahead_s=max_ahead_s, not_before_s=self._last_s
            )
            self._last_s = feed.header.timestamp
        return feed
