"""NOAA solar equations against published sunrise and sunset times (local summer time, EEST = UTC+3)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from api.sun import SunEvent, next_sun_event, sun_event

EEST = timezone(timedelta(hours=3))
EET = timezone(timedelta(hours=2))
LVIV = (49.8397, 24.0297)


@pytest.mark.parametrize(
    ("place", "lat", "lon", "day", "zone", "sunrise", "sunset"),
    [
        # Published for the solstice: Riga 2018 (04:29 / 22:22), Kyiv 2024 (04:46 / 21:13).
        ("Riga", 56.9496, 24.1052, date(2018, 6, 21), EEST, "04:29", "22:22"),
        ("Kyiv", 50.4501, 30.5234, date(2024, 6, 21), EEST, "04:46", "21:13"),
        # Lviv: solstice 05:15 / 21:36 EEST, winter solstice 08:19 / 16:25 EET, equinox 06:26 / 18:37 EET.
        ("Lviv", *LVIV, date(2024, 6, 21), EEST, "05:15", "21:36"),
        ("Lviv", *LVIV, date(2024, 12, 21), EET, "08:19", "16:25"),
        ("Lviv", *LVIV, date(2024, 3, 20), EET, "06:26", "18:37"),
    ],
)
def test_sunrise_and_sunset_within_a_minute(
    place: str, lat: float, lon: float, day: date, zone: timezone, sunrise: str, sunset: str
) -> None:
    for event, expected in ((SunEvent.SUNRISE, sunrise), (SunEvent.SUNSET, sunset)):
        moment = sun_event(day, event, lat=lat, lon=lon)
        assert moment is not None
        hours, minutes = map(int, expected.split(":"))
        published = datetime(day.year, day.month, day.day, hours, minutes, tzinfo=zone)
        assert abs((moment - published).total_seconds()) <= 60, (place, event, moment.astimezone(zone))


def test_civil_twilight_brackets_the_day() -> None:
    day = date(2024, 6, 21)
    times = {event: sun_event(day, event, lat=LVIV[0], lon=LVIV[1]) for event in SunEvent}
    assert times[SunEvent.DAWN] < times[SunEvent.SUNRISE] < times[SunEvent.SUNSET] < times[SunEvent.DUSK]  # type: ignore[operator]


def test_polar_day_has_no_sunset() -> None:
    assert sun_event(date(2024, 6, 21), SunEvent.SUNSET, lat=78.22, lon=15.65) is None  # Longyearbyen


def test_next_event_is_after_the_given_moment() -> None:
    after = datetime(2024, 6, 21, 19, 0, tzinfo=UTC)  # after Lviv's sunset that day (18:36 UTC)
    moment = next_sun_event(after, SunEvent.SUNSET, lat=LVIV[0], lon=LVIV[1])
    assert moment is not None
    assert moment.date() == date(2024, 6, 22)


@pytest.mark.parametrize(
    ("asked", "offset_min", "due"),
    [
        # Lviv's sunset on 2024-06-21 is 18:36 UTC, on the 22nd a few seconds later.
        (datetime(2024, 6, 21, 13, 0, tzinfo=UTC), -180, date(2024, 6, 21)),  # 15:36 today, ahead
        (datetime(2024, 6, 21, 16, 0, tzinfo=UTC), -180, date(2024, 6, 22)),  # 15:36 today has passed
        (datetime(2024, 6, 21, 19, 0, tzinfo=UTC), 120, date(2024, 6, 21)),  # 20:36 today, after sunset
        (datetime(2024, 6, 21, 21, 0, tzinfo=UTC), 120, date(2024, 6, 22)),
    ],
)
def test_an_offset_moves_the_moment_before_the_search(asked: datetime, offset_min: int, due: date) -> None:
    offset = timedelta(minutes=offset_min)
    moment = next_sun_event(asked, SunEvent.SUNSET, lat=LVIV[0], lon=LVIV[1], offset=offset)
    sunset = sun_event(due, SunEvent.SUNSET, lat=LVIV[0], lon=LVIV[1])
    assert sunset is not None
    assert moment == sunset + offset
    assert moment > asked
