"""The VehiclePositions feed as a pure function of points and a clock."""

from __future__ import annotations

import struct

import pytest
from google.transit import gtfs_realtime_pb2

from api.transit.matching import TripMatch
from api.transit.occupancy import Occupancy, boardings, estimate
from api.transit.timetable import Timetable
from api.transit.trip_updates import TripProgress, add_trip_updates
from api.transit.vehicle_positions import HeaderClock, Placement, build_feed
from collector.store.base import FieldValue, Point, Row
from tests.api.factories import NOW_MS, bus_fix, reading

_VP = gtfs_realtime_pb2.VehiclePosition


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
    assert feed.header.timestamp == NOW_MS // 1000  # built now, though the newest fix is 5 s old
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


def test_the_header_is_the_build_time_and_never_goes_back() -> None:
    assert build_feed([], now_ms=NOW_MS, max_age_s=90).header.timestamp == NOW_MS // 1000
    late = build_feed(
        [bus_fix("a", 10, lat=1, lon=1)], now_ms=NOW_MS, max_age_s=90, not_before_s=NOW_MS // 1000 + 3
    )
    assert late.header.timestamp == NOW_MS // 1000 + 3
    assert late.entity[0].vehicle.timestamp == NOW_MS // 1000 - 10

    clock = HeaderClock()
    first = clock.build([], now_ms=NOW_MS, max_age_s=90, max_ahead_s=30)
    second = clock.build([bus_fix("a", 10, lat=1, lon=1)], now_ms=NOW_MS + 1000, max_age_s=90, max_ahead_s=30)
    third = clock.build(  # the server's clock stepped back 3 s
        [bus_fix("a", 0, lat=1, lon=1, now_ms=NOW_MS - 2000)],
        now_ms=NOW_MS - 2000,
        max_age_s=90,
        max_ahead_s=30,
    )
    assert [first.header.timestamp, second.header.timestamp, third.header.timestamp] == [
        NOW_MS // 1000,
        NOW_MS // 1000 + 1,
        NOW_MS // 1000 + 1,
    ]


def test_same_points_same_bytes() -> None:
    points = [bus_fix(str(n), n, lat=50 + n / 100, lon=8.0, speed_mps=n) for n in range(20)]
    first = build_feed(points, now_ms=NOW_MS, max_age_s=90).SerializeToString(deterministic=True)
    again = build_feed(reversed(points), now_ms=NOW_MS, max_age_s=90).SerializeToString(deterministic=True)
    assert first == again
    parsed = gtfs_realtime_pb2.FeedMessage.FromString(first)
    assert len(parsed.entity) == 20


def taps(*readings: dict[str, FieldValue], device: str = "validator-1") -> list[Row]:
    """Rows of one bus's validator, a minute apart, oldest first."""
    return [
        Row(NOW_MS - (len(readings) - n) * 60_000, {"vehicle": "bus-1", "device": device}, values)
        for n, values in enumerate(readings)
    ]


def test_tap_counters_are_read_as_meters_are() -> None:
    assert boardings(taps({"taps_resident": 100}, {"taps_resident": 130, "taps_student": 5})) == 30
    # Lower without the agent's reset flag: a new baseline. With it: restarted from 0.
    assert boardings(taps({"taps_resident": 100}, {"taps_resident": 40}, {"taps_resident": 45})) == 5
    assert boardings(taps({"taps_resident": 100}, {"taps_resident": 40, "taps_resident_reset": True})) == 40
    # A negative or non-integer value is no reading; the next one counts from the last good one.
    bad = taps({"taps_resident": 100}, {"taps_resident": -50}, {"taps_resident": 2.5}, {"taps_resident": 110})
    assert boardings(bad) == 10
    assert boardings(taps({"taps_resident": 100}, {"taps_resident": -50})) is None
    assert boardings(taps({"taps_resident": True}, {"taps_resident": False})) is None
    # Two validators on one bus (a door each) count apart.
    doors = sorted(
        taps({"taps_resident": 100}, {"taps_resident": 104})
        + taps({"taps_resident": 7}, {"taps_resident": 9}, device="validator-2"),
        key=lambda row: row.ts_ms,
    )
    assert boardings(doors) == 6


RIDE_START_MS = NOW_MS - 20 * 60_000


def test_occupancy_percentage_stays_within_what_the_feed_can_carry() -> None:
    def at_most(*readings: dict[str, FieldValue]) -> Occupancy | None:
        return estimate(taps(*readings), capacity=90, since_ms=RIDE_START_MS)

    assert at_most({"taps_resident": 100}, {"taps_resident": -50}) is None
    assert at_most({"taps_resident": 0}, {"taps_resident": 2**32 - 1}) == Occupancy(_VP.FULL, 200)
    assert at_most({"taps_resident": 100}, {"taps_resident": 127}) == Occupancy(_VP.MANY_SEATS_AVAILABLE, 30)


def test_an_empty_bus_is_said_empty_only_when_its_taps_cover_the_ride() -> None:
    """Two readings a minute apart with no tap say nothing of the 19 minutes before: no EMPTY 0 %."""
    quiet = [{"taps_resident": 100}, {"taps_resident": 101}]
    assert estimate(taps(*quiet), capacity=90, since_ms=RIDE_START_MS) is None
    # Counted since before the ride began (readings a minute apart for 25 minutes): empty it is.
    day = taps(*[{"taps_resident": 100}] * 25, {"taps_resident": 101})
    assert day[0].ts_ms < RIDE_START_MS
    assert estimate(day, capacity=90, since_ms=RIDE_START_MS) == Occupancy(_VP.EMPTY, 0)
    # The readings before the ride are no taps of it.
    assert estimate(
        taps({"taps_resident": 0}, *[{"taps_resident": 100}] * 25), capacity=90, since_ms=RIDE_START_MS
    ) == Occupancy(_VP.EMPTY, 0)


def test_an_extra_that_cannot_be_written_is_left_out_for_that_vehicle_only(
    timetable: Timetable, caplog: pytest.LogCaptureFixture
) -> None:
    run = next(timetable.runs_between(NOW_MS / 1000, NOW_MS / 1000))
    match = TripMatch(run, along_m=0.0, delay_s=0.0, confidence=1.0, next_stop=0)
    stop = run.trip.stop_times[0]
    points = [bus_fix(name, 5, lat=49.84, lon=24.03, route=run.trip.route_id) for name in ("bad", "good")]
    feed = build_feed(
        points,
        now_ms=NOW_MS,
        max_age_s=90,
        placements={
            "bad": Placement(match, -1, stop.stop_id, _VP.STOPPED_AT),  # no stop sequence is negative
            "good": Placement(match, stop.stop_sequence, stop.stop_id, _VP.STOPPED_AT),
        },
        occupancies={"bad": Occupancy(_VP.EMPTY, -10), "good": Occupancy(_VP.FEW_SEATS_AVAILABLE, 50)},
        known_routes=timetable.routes,
    )
    bad, good = entities(feed)["bad"], entities(feed)["good"]
    assert (good.trip.trip_id, good.stop_id, good.occupancy_percentage) == (
        run.trip.trip_id,
        stop.stop_id,
        50,
    )
    assert (bad.trip.trip_id, bad.trip.route_id) == ("", run.trip.route_id)  # as an unmatched bus
    assert not bad.HasField("stop_id")
    assert not bad.HasField("occupancy_status")
    assert not bad.HasField("occupancy_percentage")
    assert bad.position.latitude == f32(49.84)
    assert [r.getMessage() for r in caplog.records] == [
        "vehicle bad: trip placement left out of the feeds",
        "vehicle bad: occupancy left out of the feeds",
    ]


def test_a_trip_update_that_cannot_be_computed_is_left_out_for_that_bus_only(
    timetable: Timetable, caplog: pytest.LogCaptureFixture
) -> None:
    run = next(timetable.runs_between(NOW_MS / 1000, NOW_MS / 1000))
    good = TripMatch(run, along_m=0.0, delay_s=60.0, confidence=1.0, next_stop=0)
    broken = TripMatch(run, along_m=0.0, delay_s=float("nan"), confidence=1.0, next_stop=0)
    path = timetable.path(run.trip.trip_id)
    feed = gtfs_realtime_pb2.FeedMessage()
    add_trip_updates(
        feed,
        [
            TripProgress(bus, None, NOW_MS // 1000, match, path)
            for bus, match in (("bad", broken), ("good", good))
        ],
        now_s=NOW_MS // 1000,
    )
    assert [entity.trip_update.vehicle.id for entity in feed.entity] == ["good"]
    assert len(feed.entity[0].trip_update.stop_time_update) == len(run.trip.stop_times)
    assert [r.getMessage() for r in caplog.records] == ["vehicle bad: trip update left out of the feeds"]
