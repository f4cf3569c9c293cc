"""Golden NMEA cases (testcases/<case>/input.nmea): a recorded sentence stream read through the case's
profile gives the expected fixes, no-fixes and refused sentences (``end``: when the stream ends).
Adding a case adds a folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from firmware_bridge.nmea import FixAssembler, GpsFix, NmeaError, NoFix, fix_fields
from firmware_bridge.profile import NmeaProfile, load_nmea_profile

CASES_DIR = Path(__file__).parent / "testcases"
NMEA_CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "input.nmea").exists())


def epoch_ms(ts: dt.datetime | None) -> int | None:
    return None if ts is None else round(ts.timestamp() * 1000)


def outcome(result: GpsFix | NoFix, profile: NmeaProfile) -> dict[str, Any]:
    if isinstance(result, NoFix):
        return {"no_fix": {"ts": result.ts_ms, "reason": result.reason}}
    return {"fix": {"ts": result.ts_ms, "fields": fix_fields(result, profile)}}


def test_there_is_a_gps_case() -> None:
    assert "gps_nmea" in NMEA_CASES


@pytest.mark.parametrize("name", NMEA_CASES)
def test_recorded_sentences_give_the_expected_fixes(name: str) -> None:
    expected: dict[str, Any] = yaml.safe_load((CASES_DIR / name / "expected.yaml").read_text("utf-8"))
    profile = load_nmea_profile(expected["profile"])
    assembler = FixAssembler.for_profile(profile)
    got: list[dict[str, Any]] = []
    lines = (CASES_DIR / name / "input.nmea").read_text("ascii").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            results = assembler.feed(line)
        except NmeaError as exc:
            got.append({"line": number, "error": str(exc)})
            continue
        got += [{"line": number, **outcome(result, profile)} for result in results]
    got += [{"line": "end", **outcome(result, profile)} for result in assembler.flush()]
    assert [g["line"] for g in got] == [e["line"] for e in expected["results"]]
    for g, e in zip(got, expected["results"], strict=True):
        if "error" in e:
            assert e["error"] in g.get("error", ""), g
        elif "no_fix" in e:
            assert g["no_fix"]["ts"] == epoch_ms(e["no_fix"]["ts"])
            assert e["no_fix"]["reason"] in g["no_fix"]["reason"]
        else:
            assert g["fix"]["ts"] == epoch_ms(e["fix"]["ts"])
            fields = e["fix"]["fields"]
            assert g["fix"]["fields"] == pytest.approx(fields, rel=1e-9)
            assert [type(v) for v in g["fix"]["fields"].values()] == [type(v) for v in fields.values()]
