"""The VehiclePositions feed as a pure function of points and a clock."""

from __future__ import annotations

import struct

from google.transit import gtfs_realtime_pb2

from api.transit.vehicle_positions import HeaderClock, build_feed
from collector.store.base import Point
from tests.api.factories import NOW_MS, bus_fix, reading


def f32(value: float) -> float:
    """``value`` as the 32-bit float GTFS-realtime stores."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def entities(feed: gtfs_realtime_pb2.FeedMessage) -> dict[str, gtfs_realtime_pb2.VehiclePosition]:
    return {entity.id: entity.vehicle for entity in feed.entity}


def test_fresh_buses_become_entities_with_their_fix() -> None:
    points = [
        bus_fix("1204", 5, lat=52.520008, lon=13.404954, speed_mps=8.5, course_deg=271.5, route="M41"),
        bus_fix("0877", 40, lat=52.516275, lon=13.377704, speed_mps=0.0, vehicle_label="Line 100 #877"),
    ]
    feed = build_feed(points, now_ms=NOW_MS, max_age_s=90)

    assert feed.header.gtfs_realtime_version == "2.0"
    assert feed.header.incrementality == gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    assert feed.header.timestamp == (NOW_MS - 5000) // 1000
    assert [entity.id for entity in feed.entity] == ["0877", "1204"]
    moving, parked = entities(feed)["1204"], entities(feed)["0877"]

    assert moving.vehicle.id == "1204"
    assert not moving.vehicle.HasField("label")
    assert moving.trip.route_id == "M41"
    assert not moving.trip.HasField("trip_id")
    assert moving.timestamp == (NOW_MS - 5000) // 1000
    assert moving.position.latitude == f32(52.520008)
    assert moving.position.longitude == f32(13.404954)
    assert moving.position.speed == f32(8.5)
    assert moving.position.bearing == f32(271.5)

    assert parked.vehicle.label == "Line 100 #877"
    assert not parked.HasField("trip")
    assert parked.position.HasField("speed")
    assert parked.position.speed == 0.0
    assert not parked.position.HasField("bearing")  # the unit gave no course
    assert parked.timestamp == (NOW_MS - 40_000) // 1000


def test_stale_and_far_future_fixes_are_left_out() -> None:
    points = [
        bus_fix("fresh", 89.9, lat=1.0, lon=2.0),
        bus_fix("stale", 90.1, lat=1.0, lon=2.0),
        bus_fix("ahead", -31, lat=1.0, lon=2.0),
        bus_fix("slightly-ahead", -2, lat=1.0, lon=2.0),
    ]
    feed = build_feed(points, now_ms=NOW_MS, max_age_s=90, max_ahead_s=30)
    assert [entity.id for entity in feed.entity] == ["fresh", "slightly-ahead"]


def test_newest_fix_of_a_vehicle_wins_when_it_has_several_series() -> None:
    points = [
        bus_fix("1204", 30, lat=1.0, lon=1.0, route="M41"),
        bus_fix("1204", 3, lat=2.0, lon=2.0, route="100"),
        bus_fix("1204", 60, lat=3.0, lon=3.0, route="200"),
    ]
    (entity,) = build_feed(points, now_ms=NOW_MS, max_age_s=90).entity
    assert (entity.vehicle.position.latitude, entity.vehicle.trip.route_id) == (2.0, "100")


def test_points_that_cannot_be_placed_are_skipped() -> None:
    no_fix = bus_fix("no-fix", 1, lat=1.0, lon=1.0)
    points = [
        Point("vehicle_position", no_fix.tags, no_fix.ts_ms, {**no_fix.fields, "fix_quality": 0}),
        bus_fix("off-the-globe", 1, lat=91.0, lon=1.0),
        reading("vehicle_position", "gps-text", NOW_MS, {"lat": "52.5", "lon": 13.4}),
        reading("vehicle_position", "gps-bool", NOW_MS, {"lat": True, "lon": 13.4}),
        reading("vehicle_position", "gps-nolon", NOW_MS, {"lat": 52.5}),
        reading("air_quality", "aq-1", NOW_MS, {"lat": 52.5, "lon": 13.4}),
        bus_fix("ok", 1, lat=-33.9, lon=151.2),
    ]
    feed = build_feed(points, now_ms=NOW_MS, max_age_s=90)
    assert [entity.id for entity in feed.entity] == ["ok"]


def test_device_id_names_the_vehicle_when_no_vehicle_tag() -> None:
    point = reading("vehicle_position", "gps-9", NOW_MS - 1000, {"lat": 1.5, "lon": 2.5, "course_deg": 370.0})
    (entity,) = build_feed([point], now_ms=NOW_MS, max_age_s=90).entity
    assert (entity.id, entity.vehicle.vehicle.id) == ("gps-9", "gps-9")
    assert entity.vehicle.position.bearing == 10.0
    assert not entity.vehicle.position.HasField("speed")


def test_the_trip_comes_from_the_string_field_trip_id_never_from_a_tag() -> None:
    tagged = bus_fix("1204", 5, lat=52.52, lon=13.40, route="M41", trip="M41-weekday-7")
    for trip_id, published in (("M41-weekday-7", "M41-weekday-7"), (7, ""), ("", ""), (None, "")):
        fields = {**tagged.fields, "trip_id": trip_id} if trip_id is not None else tagged.fields
        point = Point(tagged.measurement, tagged.tags, tagged.ts_ms, fields)
        (entity,) = build_feed([point], now_ms=NOW_MS, max_age_s=90).entity
        assert (entity.vehicle.trip.route_id, entity.vehicle.trip.trip_id) == ("M41", published), trip_id


def test_empty_feed_is_stamped_now_and_the_header_never_goes_back() -> None:
    assert build_feed([], now_ms=NOW_MS, max_age_s=90).header.timestamp == NOW_MS // 1000
    late = build_feed(
        [bus_fix("a", 10, lat=1, lon=1)], now_ms=NOW_MS, max_age_s=90, not_before_s=NOW_MS // 1000
    )
    assert late.header.timestamp == NOW_MS // 1000
    assert late.entity[0].vehicle.timestamp == NOW_MS // 1000 - 10

    clock = HeaderClock()
    first = clock.build([], now_ms=NOW_MS, max_age_s=90, max_ahead_s=30)
    second = clock.build([bus_fix("a", 10, lat=1, lon=1)], now_ms=NOW_MS + 1000, max_age_s=90, max_ahead_s=30)
    third = clock.build(
        [bus_fix("a", 0, lat=1, lon=1, now_ms=NOW_MS + 5000)],
        now_ms=NOW_MS + 5000,
        max_age_s=90,
        max_ahead_s=30,
    )
    assert [first.header.timestamp, second.header.timestamp, third.header.timestamp] == [
        NOW_MS // 1000,
        NOW_MS // 1000,
        NOW_MS // 1000 + 5,
    ]


def test_same_points_same_bytes() -> None:
    points = [bus_fix(str(n), n, lat=50 + n / 100, lon=8.0, speed_mps=n) for n in range(20)]
    first = build_feed(points, now_ms=NOW_MS, max_age_s=90).SerializeToString(deterministic=True)
    again = build_feed(reversed(points), now_ms=NOW_MS, max_age_s=90).SerializeToString(deterministic=True)
    assert first == again
    parsed = gtfs_realtime_pb2.FeedMessage.FromString(first)
    assert len(parsed.entity) == 20
