"""Read planning: few requests, never over the Modbus limits, never across forbidden registers."""

from __future__ import annotations

from firmware_bridge.planner import ReadRequest, plan_requests
from firmware_bridge.profile import AddressRange, RegisterSpec, load_profile


def spans(requests: list[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.address + r.count - 1) for r in requests]


def regs(table: str, *addresses: int, type_: str = "u16") -> list[RegisterSpec]:
    return [
        RegisterSpec.model_validate({"field": f"f{table}_{a}", "table": table, "address": a, "type": type_})
        for a in addresses
    ]


def test_sdm630_measurements_in_three_reads() -> None:
    profile = load_profile("eastron_sdm630")
    measured = [s for s in profile.registers if s.table == "input"]
    assert spans(plan_requests(measured)) == [
        ("input", 0x00, 0x11),
        ("input", 0x34, 0x4B),
        ("input", 0x156, 0x157),
    ]


def test_sdm630_fast_poll_leaves_out_the_energy_counters() -> None:
    profile = load_profile("eastron_sdm630")
    assert spans(plan_requests(profile.select("fast"))) == [("input", 0x00, 0x11), ("input", 0x34, 0x47)]


def test_aqt530_gases_and_weather_in_one_read() -> None:
    profile = load_profile("vaisala_aqt530")
    assert spans(plan_requests(profile.select("fast"))) == [("holding", 0x00, 0x0C)]


def test_every_field_is_in_exactly_one_request() -> None:
    profile = load_profile("eastron_sdm630")
    requests = plan_requests(profile.registers)
    fields = [s.field for r in requests for s in r.specs]
    assert sorted(fields) == sorted(s.field for s in profile.registers)
    for request in requests:
        for s in request.specs:
            assert request.address <= s.address
            assert s.end <= request.address + request.count - 1


def test_tables_are_never_mixed() -> None:
    requests = plan_requests(regs("holding", 0, 1) + regs("input", 0, 1))
    assert spans(requests) == [("holding", 0, 1), ("input", 0, 1)]


def test_gap_larger_than_max_gap_splits() -> None:
    specs = regs("holding", 0, 10)
    assert len(plan_requests(specs, max_gap=9)) == 1
    assert len(plan_requests(specs, max_gap=8)) == 2


def test_never_more_than_125_registers() -> None:
    requests = plan_requests(regs("holding", *range(0, 300, 2), type_="f32"))
    assert all(r.count <= 125 for r in requests)
    assert len(requests) == 3


def test_device_limit_is_honoured() -> None:
    requests = plan_requests(regs("input", *range(40)), max_registers=16)
    assert [r.count for r in requests] == [16, 16, 8]


def test_coils_up_to_2000_bits_a_read() -> None:
    requests = plan_requests(regs("coil", *range(0, 2500), type_="bit"), max_gap=0)
    assert [r.count for r in requests] == [2000, 500]


def test_never_across_a_forbidden_range() -> None:
    forbidden = [AddressRange(table="holding", start=4, end=5)]
    requests = plan_requests(regs("holding", 0, 2, 7, 9), forbidden=forbidden)
    assert spans(requests) == [("holding", 0, 2), ("holding", 7, 9)]
    other_table = [AddressRange(table="input", start=4, end=5)]
    assert spans(plan_requests(regs("holding", 0, 2, 7, 9), forbidden=other_table)) == [("holding", 0, 9)]
