"""The GTFS-realtime validation rules on feeds built from simulated buses driving the fixture timetable."""

from __future__ import annotations

import datetime as dt

import pytest
from google.transit import gtfs_realtime_pb2 as rt

from api.transit.feeds import FeedKind, TransitService
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, validator_point
from tests.api.transit import rules
from tests.api.transit.conftest import FRIDAY

# Moments of the simulated Friday (Lviv time): morning peak, mid-morning, evening, the night tram.
MOMENTS = [dt.time(7, 40), dt.time(10, 0), dt.time(17, 15), (dt.time(0, 20), 1)]
# Warnings that may appear (here and from gtfs-rt-validator), and why that is right for these feeds.
_ON_ROUTE_NO_TRIP = (
    "a bus heard on its route but on no run of the timetable (at a terminus, between runs) is published"
    " with a TripDescriptor naming its route alone (gtfs-realtime: all trips of the route)"
)
_CHANGED_RUN = (
    "a run canceled (by an operator, or detected as missed) or with stops skipped before its bus is out has"
    " a TripUpdate of its own and no vehicle"
)
JUSTIFIED_WARNINGS: dict[str, str] = {
    "W002": _CHANGED_RUN,
    "W003": _ON_ROUTE_NO_TRIP
    + ", so it has no TripUpdate; "
    + _CHANGED_RUN
    + ", so it is in no VehiclePosition",
    "W006": _ON_ROUTE_NO_TRIP + ", so that descriptor has no trip_id",
    "W009": _ON_ROUTE_NO_TRIP + ", no trip of the schedule, so no schedule_relationship",
}


def _epoch(timetable: Timetable, moment: dt.time | tuple[dt.time, int]) -> int:
    at, days = (moment, 0) if isinstance(moment, dt.time) else moment
    local = dt.datetime.combine(FRIDAY + dt.timedelta(days=days), at, tzinfo=timetable._zone)
    return int(local.timestamp())


def feeds_at(
    service: TransitService, store: SqliteStore, timetable: Timetable, buses: list[Bus], now_s: int
) -> rules.Feeds:
    store.write(list(fixes_between(timetable, buses, now_s - 150, now_s + 1)))
    store.write([validator_point(bus, at) for bus in buses for at in (now_s - 1200, now_s - 30)])
    snapshot = service.snapshot(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
    return rules.Feeds(
        snapshot.feeds[FeedKind.VEHICLE_POSITIONS],
        snapshot.feeds[FeedKind.TRIP_UPDATES],
        snapshot.feeds[FeedKind.ALERTS],
        timetable,
        now_s,
    )


@pytest.mark.parametrize("moment", MOMENTS, ids=lambda m: str(m))
def test_feeds_from_simulated_buses_pass_every_rule(
    moment: dt.time | tuple[dt.time, int],
    transit: TransitService,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
) -> None:
    now_s = _epoch(timetable, moment)
    first = feeds_at(transit, store, timetable, friday, now_s)
    second = feeds_at(transit, store, timetable, friday, now_s + 7)

    # The rules must have something to look at: buses, matched trips, predictions.
    assert first.positions()  # after midnight only the night tram is out
    assert any(p.trip.trip_id for p in first.positions())
    assert first.updates()
    for feeds in (first, second):
        assert rules.check(feeds, rules.ERRORS) == {}
        warnings = rules.check(feeds, rules.WARNINGS)
        assert set(warnings) <= set(JUSTIFIED_WARNINGS), warnings
    for kind in FeedKind:
        before, after = first.all()[list(FeedKind).index(kind)], second.all()[list(FeedKind).index(kind)]
        for rule in rules.SEQUENCE_ERRORS:
            assert rule(before, after) == [], (kind, rules.rule_id(rule))


def test_the_rules_catch_what_they_are_about(timetable: Timetable) -> None:
    """A broken feed is reported: the rules are not vacuous."""
    vp, tu, alerts = rt.FeedMessage(), rt.FeedMessage(), rt.FeedMessage()
    for feed in (vp, tu, alerts):
        feed.header.gtfs_realtime_version = "2.0"
        feed.header.incrementality = rt.FeedHeader.FULL_DATASET
        feed.header.timestamp = 1_800_000_000
    position = vp.entity.add(id="a").vehicle
    position.timestamp = 1_800_000_000_000  # milliseconds
    position.vehicle.id = "bus-1"
    position.position.latitude, position.position.longitude, position.position.bearing = 49.84, 24.03, 400
    position.trip.trip_id, position.trip.route_id, position.trip.start_date = "nope", "A29", "2027-01-15"
    other = vp.entity.add(id="d").vehicle  # on the trip the TripUpdate gives to another bus
    other.vehicle.id, other.trip.trip_id = "bus-3", "T1-weekday-0-0540"
    update = tu.entity.add(id="b").trip_update
    update.vehicle.id = "bus-2"
    update.trip.trip_id = "T1-weekday-0-0540"
    update.trip.start_time = "5:40:00"
    update.trip.schedule_relationship = rt.TripDescriptor.UNSCHEDULED
    for sequence, time in ((20, 100), (10, 90)):
        stop = update.stop_time_update.add(stop_sequence=sequence, stop_id="T1-0-02")
        stop.arrival.time, stop.departure.time = 1_800_000_000 + time, 1_800_000_000 + time - 5
    alerts.entity.add(id="c").alert.informed_entity.add()
    feeds = rules.Feeds(vp, tu, alerts, timetable, 1_800_000_000)
    found = rules.check(feeds, rules.ERRORS)
    expected = {
        "E001",
        "E002",
        "E003",
        "E012",
        "E020",
        "E021",
        "E022",
        "E025",
        "E027",
        "E033",
        "E045 / E051",
        "E047",
        "S010",
    }
    assert expected <= set(found), found
    warnings = rules.check(feeds, rules.WARNINGS)
    assert {"W003", "W009"} <= set(warnings)
