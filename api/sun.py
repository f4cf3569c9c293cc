"""Sunrise, sunset, civil dawn and dusk for a site, by NOAA's solar equations (good to a minute or so).

Street lights switch at dusk and dawn computed for the cabinet's coordinates; the equations are
those of NOAA's Solar Calculator (Meeus), evaluated at the moment of the event and refined once.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

_J2000 = 2451545.0


class SunEvent(StrEnum):
    SUNRISE = "sunrise"
    SUNSET = "sunset"
    DAWN = "dawn"  # civil: the sun 6 degrees below the horizon, rising
    DUSK = "dusk"  # civil, setting


# Zenith angle of the sun's centre at the event: refraction and the disc's radius for rise and set.
_ZENITH = {SunEvent.SUNRISE: 90.833, SunEvent.SUNSET: 90.833, SunEvent.DAWN: 96.0, SunEvent.DUSK: 96.0}
_MORNING = frozenset({SunEvent.SUNRISE, SunEvent.DAWN})


def _julian_day(moment: datetime) -> float:
    return moment.timestamp() / 86400.0 + 2440587.5


def _declination_and_equation_of_time(jd: float) -> tuple[float, float]:
    """Solar declination (radians) and the equation of time (minutes) at Julian day ``jd``."""
    t = (jd - _J2000) / 36525.0
    mean_longitude = math.radians((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360)
    anomaly = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (
        math.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + math.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
        + math.sin(3 * anomaly) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * t)
    apparent_longitude = math.radians(
        math.degrees(mean_longitude) + centre - 0.00569 - 0.00478 * math.sin(omega)
    )
    mean_obliquity = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(omega))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_longitude))
    y = math.tan(obliquity / 2) ** 2
    equation_of_time = 4 * math.degrees(
        y * math.sin(2 * mean_longitude)
        - 2 * eccentricity * math.sin(anomaly)
        + 4 * eccentricity * y * math.sin(anomaly) * math.cos(2 * mean_longitude)
        - 0.5 * y * y * math.sin(4 * mean_longitude)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * anomaly)
    )
    return declination, equation_of_time


def sun_event(day: date, event: SunEvent, *, lat: float, lon: float) -> datetime | None:
    """When ``event`` happens on the UTC date ``day`` at (lat, lon), in UTC; None in polar day or night."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    minutes = 720.0 - 4 * lon  # first guess: solar noon without the equation of time
    for _ in range(3):
        declination, equation_of_time = _declination_and_equation_of_time(
            _julian_day(midnight + timedelta(minutes=minutes))
        )
        phi = math.radians(lat)
        cos_hour_angle = math.cos(math.radians(_ZENITH[event])) / (
            math.cos(phi) * math.cos(declination)
        ) - math.tan(phi) * math.tan(declination)
        if not -1.0 <= cos_hour_angle <= 1.0:
            return None
        hour_angle = math.degrees(math.acos(cos_hour_angle))
        noon = 720.0 - 4 * lon - equation_of_time
        minutes = noon - 4 * hour_angle if event in _MORNING else noon + 4 * hour_angle
    return midnight + timedelta(minutes=minutes)


def next_sun_event(
    after: datetime, event: SunEvent, *, lat: float, lon: float, offset: timedelta = timedelta(0)
) -> datetime | None:
    """The first ``event`` + ``offset`` strictly after ``after`` (looking a year ahead), in UTC.

    The offset moves the moment before the search: with sunset at 17:10, "three hours before
    sunset" asked at 13:00 is today's 14:10, asked at 15:00 tomorrow's; "two hours after sunset"
    asked at 18:00 is today's 19:10, not tomorrow's.
    """
    start = (after - offset).astimezone(UTC).date() - timedelta(days=1)
    for day in range(368):
        moment = sun_event(start + timedelta(days=day), event, lat=lat, lon=lon)
        if moment is not None and moment + offset > after:
            return moment + offset
    return None
