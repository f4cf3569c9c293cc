"""Holes a profile does not declare: a merged read that gets exception 02 is split, the hole is learned."""

from __future__ import annotations

import pytest

from firmware_bridge.errors import DeviceExceptionResponse
from firmware_bridge.planner import fewest_reads, gap_between, plan_reads, split_request
from firmware_bridge.profile import AddressRange, load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to

READ_HOLDING = 3


def spans(requests: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    return [(address, address + count - 1) for fc, address, count in requests if fc == READ_HOLDING]


def test_split_cuts_between_fields_and_names_the_gap() -> None:
    profile = load_profile("tuf_2000m")
    merged = plan_reads(profile)[0]  # flow_rate 0-1, velocity 4-5, positive_accumulator 8-9
    assert (merged.address, merged.count) == (0, 10)
    halves = split_request(merged)
    assert halves is not None
    left, right = halves
    assert [s.field for s in left.specs] == ["flow_rate"]
    assert [s.field for s in right.specs] == ["velocity", "positive_accumulator"]
    assert (right.address, right.count) == (4, 6)
    assert gap_between(left, right) == AddressRange(table="holding", start=2, end=3)
    one_field = plan_reads(profile, "fast")[2]  # error_code alone
    assert split_request(one_field) is None


def test_learned_holes_are_planned_around() -> None:
    profile = load_profile("tuf_2000m")
    learned = [AddressRange(table="holding", start=6, end=7)]
    assert [(r.address, r.count) for r in plan_reads(profile, learned=learned)][:2] == [(0, 6), (8, 2)]


def test_the_lower_bound_fills_every_gap() -> None:
    profile = load_profile("eastron_sdm630")
    assert len(fewest_reads(profile)) < len(plan_reads(profile))
    assert all(r.count <= profile.max_registers for r in fewest_reads(profile))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_hole_found_by_exception_02_is_learned_and_avoided(transport: Transport) -> None:
    meter = ModbusDeviceSimulator("tuf_2000m")
    # The firmware refuses two registers inside the merged read 0..9; the profile does not know.
    meter.holes = [
        AddressRange(table="holding", start=2, end=2),
        AddressRange(table="holding", start=6, end=7),
    ]
    async with line_to(transport, [meter]) as line:
        assert await line.read(1, meter.profile) == meter.expected(), "nothing valid is lost"
        assert line.learned_holes(1) == [AddressRange(table="holding", start=6, end=7, reason=HOLE_REASON)]
        assert await line.read(1, meter.profile) == meter.expected()
        assert [(h.start, h.end) for h in line.learned_holes(1)] == [(6, 7), (2, 3)]
        meter.requests.clear()
        assert await line.read(1, meter.profile) == meter.expected()
        # Now planned around both: one read per field run, no refused request any more.
        assert spans(meter.requests) == [(0, 1), (4, 5), (8, 9), (32, 35), (71, 71), (91, 91), (112, 117)]
        assert spans(meter.requests) == [
            (r.address, r.address + r.count - 1) for r in line.plan(1, meter.profile)
        ]
        assert line.learned_holes(2) == [], "holes belong to one device"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_field_whose_own_register_is_refused_is_named(transport: Transport) -> None:
    meter = ModbusDeviceSimulator("tuf_2000m")
    meter.holes = [AddressRange(table="holding", start=71, end=71)]
    async with line_to(transport, [meter]) as line:
        with pytest.raises(DeviceExceptionResponse, match="refuses the registers of error_code") as caught:
            await line.read(1, meter.profile, poll="fast")
    assert caught.value.code == 2


HOLE_REASON = "answered exception 02 (learned)"
