"""Real receivers' NMEA (gpsd's regression captures) through the edge's GPS path, against gpsd's own fixes.

Each capture in tests/firmware_bridge/captures/nmea/ goes line by line through ``GpsPoller.take`` with
the default profile; every position journaled must be one gpsd reported for that epoch (time, lat,
lon, speed, course, altitude, fix quality) and every fix gpsd reported must be journaled. Where gpsd's
value is not comparable (its own fusion across epochs or sentences), ``not_comparable.yaml`` says
which epoch and field and why; such an entry must still differ, so the list cannot go stale.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from citygw.contract import wire
from citygw.contract.agent_config import Device, NmeaLine, Vehicle
from edge.journal import Journal
from edge.poller import GpsPoller, HealthBoard
from tests.edge.test_gps import _Positions

CAPTURES = Path(__file__).parents[1] / "firmware_bridge" / "captures" / "nmea"
NAMES = sorted(p.name for p in CAPTURES.glob("*.log"))
NOT_COMPARABLE: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (CAPTURES / "not_comparable.yaml").read_text("utf-8")
)
# GGA fix quality -> gpsd's TPV status (absent: 1, GPS); gpsd maps 4 RTK fixed to 3 and 5 float to 4.
GPSD_STATUS = {1: 1, 2: 2, 4: 3, 5: 4, 6: 5}
# field -> (TPV key, tolerance): gpsd prints 9 decimals of degrees, 3 of m/s, 4 of degrees and metres.
COMPARED = {
    "lat": ("lat", 1e-8),
    "lon": ("lon", 1e-8),
    "speed_mps": ("speed", 6e-4),
    "course_deg": ("track", 1e-4),
    "altitude_m": ("altMSL", 1e-4),
}


class _Board(HealthBoard):
    """The agent's health board, keeping each line it was told was refused."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def noted(self, device_id: str, error: str) -> None:
        self.refused.append(error)
        super().noted(device_id, error)


def iso(ts_ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def journaled(name: str) -> tuple[dict[str, dict[str, wire.FieldValue]], _Board]:
    """The positions the edge journals from a capture (poll_s short enough to keep every epoch)."""
    positions = _Positions()
    device = Device(id="gps", line="gps", poll_s=0.001, vehicle=Vehicle(id="bus-1", label="1"))
    poller = GpsPoller(
        NmeaLine(id="gps", kind="nmea", port="/dev/null"),
        device,
        journal=cast(Journal, positions),
        board=(board := _Board()),
        site="captures",
    )
    for line in (CAPTURES / name).read_text("latin-1").splitlines():
        if line.strip() and not line.startswith("#"):
            poller.take(line)
    poller.end_of_stream()
    times = [iso(r.ts) for r in positions.readings]
    assert len(times) == len(set(times)), f"{name}: one epoch journaled twice"
    return {iso(r.ts): r.fields for r in positions.readings}, board


def gpsd_fixes(name: str) -> dict[str, dict[str, Any]]:
    """gpsd's fix of each epoch: its last TPV with that time, when it has a position (mode 2 or 3)."""
    last: dict[str, dict[str, Any]] = {}
    for line in (CAPTURES / f"{name}.tpv.jsonl").read_text("ascii").splitlines():
        tpv = json.loads(line)
        if "time" in tpv:
            last[tpv["time"]] = tpv
    return {time: tpv for time, tpv in last.items() if tpv.get("mode", 0) >= 2}


def differences(ours: dict[str, wire.FieldValue] | None, peer: dict[str, Any] | None) -> set[str]:
    """The fields (or ``fix``: a fix on one side only) where our position and gpsd's differ."""
    if ours is None or peer is None:
        return {"fix"}
    found = set()
    for field, (key, tolerance) in COMPARED.items():
        mine, theirs = ours.get(field), peer.get(key)
        if mine is None or theirs is None:
            agree = mine is None and theirs is None
        else:
            agree = abs(cast(float, mine) - theirs) <= tolerance
        if not agree:
            found.add(field)
    quality = ours.get("fix_quality")
    if quality is not None and GPSD_STATUS.get(cast(int, quality)) != peer.get("status", 1):
        found.add("fix_quality")
    return found


def test_the_corpus_has_15_receivers_each_with_its_provenance() -> None:
    provenance = (CAPTURES / "PROVENANCE.md").read_text("utf-8")
    assert len(NAMES) >= 15
    for name in NAMES:
        assert f"`{name}`" in provenance, f"{name} is not in PROVENANCE.md"
        assert (CAPTURES / f"{name}.tpv.jsonl").exists()
    assert sum(p.stat().st_size for p in CAPTURES.iterdir()) < 1_000_000
    assert set(NOT_COMPARABLE) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_real_capture_gives_the_fixes_gpsd_gives(name: str) -> None:
    ours, board = journaled(name)
    peer = gpsd_fixes(name)
    assert ours, f"{name}: no position"
    excused = {(e["time"], field) for e in NOT_COMPARABLE.get(name, []) for field in e["fields"]}
    found = {
        (time, field)
        for time in sorted(set(ours) | set(peer))
        for field in differences(ours.get(time), peer.get(time))
    }
    assert found - excused == set(), f"{name}: differs from gpsd"
    assert excused - found == set(), f"{name}: not_comparable.yaml excuses what agrees now"
    matched = set(ours) & set(peer)
    assert len(matched) >= len(ours) / 2, f"{name}: most positions must be comparable"
    assert board.refused == GARBLED.get(name, []), f"{name}: lines refused"


# The lines of the corpus that are no NMEA sentence (refused, counted on health, never raised).
GARBLED = {
    "foretrex-201.log": ["not an NMEA sentence: '4.4343,N,01025.5386,E,200002,A,D*48' (ParseError)"],
    "sl869.log": ["sentence '$GPTXT,TELIT SW Version: SL869 v3.1.2.1 -STD -N96' has no checksum (*hh)"],
}
