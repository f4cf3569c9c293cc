"""LineEncoder writes exactly what influxdb_client's Point writes (its escaping), only faster."""

from __future__ import annotations

from typing import Any

import pytest

from citygw.contract.wire import TELEMETRY_BATCH_DICT, ReadingDict
from collector.store import Point
from collector.store.line_protocol import LineEncoder, library_line_protocol

T0 = 1_700_000_000_000

POINTS = [
    Point("electricity", {"device": "meter-1", "agent": "agent-1"}, T0, {"kwh": 1.5, "n": 3, "ok": True}),
    Point("m", {}, T0, {"whole": 5.0, "big": 1e16, "tiny": 1e-7, "neg": -0.0, "off": False}),
    Point("weird measurement,x", {"a b": "c,d=e f", "z": "trailing\\"}, T0, {"f=g h": 1}),
    Point("m", {"t": "new\nline\ttab\rcr", "empty": ""}, T0, {"s": 'x" OR 1=1 \\ \n a,b=c d=e'}),
    Point("m", {"unicode": "Straße 5 ünïcode"}, T0, {"text": "🚌 line 12", "i": -(2**63)}),
    Point("m", {"d": "x"}, T0, {"nan": float("nan"), "inf": float("inf"), "ok": 1.0}),
    Point("m", {"d": "x"}, T0, {"nan": float("nan"), "inf": float("-inf")}),
]


@pytest.mark.parametrize("point", POINTS)
def test_lines_equal_the_librarys(point: Point) -> None:
    encoder = LineEncoder()
    assert encoder.line(point) == library_line_protocol(point)
    assert encoder.line(point) == library_line_protocol(point), "second call, from the caches"


def test_caches_stay_bounded_and_correct() -> None:
    encoder = LineEncoder(max_cached=10)
    points = [Point("m", {"device": f"d-{i}"}, T0 + i, {f"f{i % 15}": i}) for i in range(100)]
    for _ in range(2):
        assert [encoder.line(p) for p in points] == [library_line_protocol(p) for p in points]
    assert len(encoder._prefixes) <= 10
    assert len(encoder._layouts) <= 10


READINGS: list[ReadingDict] = [
    {"device": "meter-1", "measurement": "electricity", "ts": T0, "fields": {"kwh": 1.5, "n": 3, "ok": True}},
    {
        "device": "lamp 7/a:b+c.d",
        "measurement": "lighting",
        "ts": T0,
        "fields": {"z": 'x" OR 1=1 \\ \n a,b=c d=e', "a": -(2**63), "level": 5.0},
        "tags": {"site": "Depot North 2", "zone": "a/b"},
    },
]


@pytest.mark.parametrize("reading", READINGS)
def test_reading_lines_equal_the_librarys_for_the_point_with_identity_tags(reading: ReadingDict) -> None:
    (validated,) = TELEMETRY_BATCH_DICT.validate_python(
        {"agent": "agent-1", "seq": 0, "readings": [reading]}
    )["readings"]
    tags = {**validated.get("tags", {}), "device": validated["device"], "agent": "agent-1"}
    point = Point(validated["measurement"], tags, validated["ts"], validated["fields"])
    encoder = LineEncoder()
    for _ in range(2):  # the second time from the caches
        assert encoder.reading_line("agent-1", validated) == library_line_protocol(point)
        assert encoder.reading_line("agent-2", validated) != library_line_protocol(point)


def _as_read(line: str) -> tuple[str, dict[str, float | bool], str]:
    """Series, values and time as InfluxDB reads a line without string fields (``5`` and ``5.0`` alike)."""
    series, field_set, ts = line.rsplit(" ", 2)
    values: dict[str, float | bool] = {}
    for pair in field_set.split(","):
        key, _, text = pair.rpartition("=")
        values[key] = text == "true" if text in ("true", "false") else float(text.removesuffix("i"))
    return series, values, ts


NUMBERS: list[ReadingDict] = [
    {"device": "meter-1", "measurement": "electricity", "ts": T0, "fields": {"kwh": 1.5, "n": 3, "ok": True}},
    {
        "device": "lamp 7/a:b+c.d",
        "measurement": "lighting",
        "ts": T0 + 1,
        "fields": {"whole": 5.0, "big": 1e16, "tiny": 1e-7, "neg": -0.0, "min": -(2**63), "off": False},
        "tags": {"site": "Depot North 2", "zone": "a/b"},
    },
]


def test_a_messages_lines_are_its_readings_lines_as_influxdb_reads_them() -> None:
    encoder = LineEncoder()
    one_by_one = [encoder.reading_line("agent-1", reading) for reading in NUMBERS]
    at_once = encoder.reading_lines("agent-1", NUMBERS)
    assert list(map(_as_read, at_once)) == list(map(_as_read, one_by_one))
    assert at_once[1].endswith(f" {T0 + 1}")
    assert ",whole=5.0 " in at_once[1]  # orjson's form: the one-by-one path writes 5, as the library does
    assert ",min=-9223372036854775808i," in at_once[1]
    assert encoder.reading_lines("agent-1", []) == []


@pytest.mark.parametrize(
    "odd_field",
    [{"text": "a,b=c d"}, {"nan": float("nan")}, {"beyond_int64": 2**64}],
    ids=["a string", "NaN", "an integer beyond 64 bits"],
)
def test_a_message_with_a_value_orjson_cannot_write_takes_the_reading_path(odd_field: dict[str, Any]) -> None:
    odd: ReadingDict = {**NUMBERS[0], "fields": {**NUMBERS[0]["fields"], **odd_field}}
    encoder = LineEncoder()
    readings = [*NUMBERS, odd]
    expected = [encoder.reading_line("agent-1", reading) for reading in readings]
    assert encoder.reading_lines("agent-1", readings) == expected
