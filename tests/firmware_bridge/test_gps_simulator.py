"""The GPS receiver simulator driven by a track: it prints where the track says, or no fix."""

from __future__ import annotations

import datetime as dt

import pynmea2
import pytest

from firmware_bridge.nmea import GpsFix, NoFix
from firmware_bridge.simulators import BusGpsSimulator

AT = dt.datetime(2027, 1, 15, 8, 0, 0, tzinfo=dt.UTC)


def test_a_track_sets_position_speed_and_course_at_each_instant() -> None:
    asked: list[float] = []

    def track(unix_s: float) -> tuple[float, float, float, float]:
        asked.append(unix_s)
        return 49.8419, 24.0315, 7.5, 271.25

    gps = BusGpsSimulator([], track=track)
    rmc, gga = (pynmea2.parse(line) for line in gps.sentences(AT))
    assert asked == [AT.timestamp()]
    assert (round(rmc.latitude, 5), round(rmc.longitude, 5)) == (49.8419, 24.0315)
    assert abs(rmc.spd_over_grnd * 0.514444 - 7.5) < 0.001
    assert rmc.true_course == 271.25
    assert gga.gps_qual == 1
    assert isinstance(gps.last_fix, GpsFix)
    assert gps.last_fix.course_deg == 271.25


def test_a_track_without_a_position_prints_no_fix() -> None:
    gps = BusGpsSimulator([], track=lambda _unix_s: None)
    rmc, gga = (pynmea2.parse(line) for line in gps.sentences(AT))
    assert rmc.status == "V"
    assert gga.gps_qual == 0
    assert isinstance(gps.last_fix, NoFix)


def test_without_a_track_a_route_of_two_points_is_needed() -> None:
    with pytest.raises(ValueError, match="two points"):
        BusGpsSimulator([(49.84, 24.03)])
