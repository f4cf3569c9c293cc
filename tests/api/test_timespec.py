"""Times and durations in query strings."""

from __future__ import annotations

import pytest

from api.timespec import iso, parse_duration, parse_instant
from tests.api.factories import NOW_MS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW_MS),
        ("-1h", NOW_MS - 3_600_000),
        ("now-15m", NOW_MS - 900_000),
        ("-90s", NOW_MS - 90_000),
        ("-7d", NOW_MS - 7 * 86_400_000),
        ("-2w", NOW_MS - 14 * 86_400_000),
        ("-250ms", NOW_MS - 250),
        ("+1h", NOW_MS + 3_600_000),
        ("2027-01-15T08:00:00Z", NOW_MS),
        ("2027-01-15T09:00:00+01:00", NOW_MS),
        ("2027-01-15T08:00:00.250", NOW_MS + 250),
        ("2027-01-15", NOW_MS - 8 * 3_600_000),
        ("1800000000000", NOW_MS),
        (" -1h ", NOW_MS - 3_600_000),
        ("0" * 40, 0),
        ("0001800000000000", NOW_MS),
    ],
)
def test_instants(text: str, expected: int) -> None:
    assert parse_instant(text, now_ms=NOW_MS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "-1",
        "-1y",
        "1h",
        "2027-01-32",
        "-99999999999w",
        "99999999999999999",
        "9" * 5000,  # beyond int()'s digit limit
        "²",  # a digit to str.isdigit(), not to int()
        "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads it, people do not type it
        "-\u0663h",
    ],
)
def test_not_instants(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a time|outside"):
        parse_instant(text, now_ms=NOW_MS)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1w", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "10", "1.5h", "-5m", "10ms", "1y", "h"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_iso_is_utc_with_milliseconds() -> None:
    assert iso(NOW_MS) == "2027-01-15T08:00:00.000Z"
    assert iso(NOW_MS + 7) == "2027-01-15T08:00:00.007Z"
    assert iso(0) == "1970-01-01T00:00:00.000Z"
