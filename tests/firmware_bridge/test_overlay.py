"""A device's overlay on its profile: applied as a profile, re-planned, refused with the key to fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from firmware_bridge.overlay import OverlayError, ProfileOverlay, apply_overlay, overlaid
from firmware_bridge.planner import plan_reads
from firmware_bridge.profile import load_profile
from firmware_bridge.registers import decode, encode

SDM120 = load_profile("eastron_sdm120")


def overlay(**keys: Any) -> ProfileOverlay:
    return ProfileOverlay.model_validate(keys)


def test_no_overlay_is_the_profile_itself() -> None:
    assert apply_overlay(SDM120, None) is SDM120
    assert overlaid(SDM120, None) == {}


def test_max_registers_is_planned_around() -> None:
    assert max(r.count for r in plan_reads(SDM120, "fast")) > 4
    small = apply_overlay(SDM120, overlay(max_registers=4))
    assert max(r.count for r in plan_reads(small, "fast")) <= 4
    assert len(plan_reads(small, "fast")) > len(plan_reads(SDM120, "fast"))


def test_a_field_subset_reads_only_those_fields() -> None:
    subset = apply_overlay(SDM120, overlay(fields=["voltage", "import_energy_kwh"]))
    assert [s.field for s in subset.select()] == ["voltage", "import_energy_kwh"]
    assert [(r.address, r.count) for r in plan_reads(subset, ("fast", "slow"))] == [(0x00, 2), (0x48, 2)]


def test_a_subset_keeps_writable_fields_writable_but_unread() -> None:
    sdm630 = load_profile("eastron_sdm630")
    writable = next(s.field for s in sdm630.registers if s.writable)
    subset = apply_overlay(sdm630, overlay(fields=["voltage_l1"]))
    assert [s.field for s in subset.select()] == ["voltage_l1"]
    assert subset.register(writable).writable
    assert not subset.register(writable).readable


def test_scale_offset_and_word_order_per_field() -> None:
    current_settings = {"scale": 40, "offset": 0.5, "order": "ABCD"}
    tuned = apply_overlay(SDM120, overlay(word_order="CDAB", registers={"current": current_settings}))
    current, voltage = tuned.register("current"), tuned.register("voltage")
    assert (current.scale, current.offset, current.order) == (40, 0.5, "ABCD")
    assert voltage.order == "CDAB"
    swapped = encode(voltage, 230.5)
    assert swapped == list(reversed(encode(SDM120.register("voltage"), 230.5)))
    assert decode(voltage, swapped) == 230.5
    assert decode(current, encode(SDM120.register("current"), 0.1)) == pytest.approx(4.5)


def test_timing_keys_given_replace_the_profiles_only() -> None:
    dali = load_profile("ecodim_dali_gw2")
    timed = apply_overlay(dali, overlay(timing={"connect_delay_s": 0.5, "close_between_polls": True}))
    assert timed.timing.connect_delay_s == 0.5
    assert timed.timing.close_between_polls
    assert (timed.timing.guard_ms, timed.timing.settle_ms) == (dali.timing.guard_ms, dali.timing.settle_ms)


def test_overlaid_says_what_differs_from_the_profile() -> None:
    changes = overlaid(
        SDM120,
        overlay(max_registers=8, timing={"settle_ms": 0}, registers={"voltage": {"scale": 0.1}}),
    )
    assert changes == {
        "max_registers": {"profile": 125, "device": 8},
        "registers.voltage.scale": {"profile": 1, "device": 0.1},
    }  # settle_ms 0 is the profile's already: not overlaid


@pytest.mark.parametrize(
    ("keys", "where", "words"),
    [
        ({"fields": ["voltage", "voltag"]}, "fields[1]", ["voltag", "voltage, current"]),
        ({"registers": {"amps": {"scale": 2}}}, "registers.amps", ["amps", "voltage, current"]),
        (
            {"registers": {"voltage": {"write_function": 16}}},
            "registers.voltage",
            ["write_function is for writable"],
        ),
        ({"max_registers": 1}, "max_registers", ["voltage takes 2 registers", "set max_registers to 2"]),
    ],
)
def test_an_overlay_that_cannot_apply_names_the_key_and_the_fix(
    keys: dict[str, Any], where: str, words: list[str]
) -> None:
    with pytest.raises(OverlayError) as refused:
        apply_overlay(SDM120, overlay(**keys))
    (problem,) = refused.value.problems
    assert problem.where == where
    text = f"{problem.what}; {problem.fix}"
    assert all(word in text for word in words), text


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"timing": {"conect_delay_s": 1}}, ["conect_delay_s is no timing setting", "connect_delay_s"]),
        ({"timing": {"guard_ms": -1}}, ["guard_ms"]),
        ({"registers": {"voltage": {"scale": 0}}}, ["non-zero scale"]),
        ({"word_order": "ADCB"}, ["ABCD"]),
        ({"max_registers": 126}, ["125"]),
    ],
)
def test_bad_overlay_values_are_refused_by_the_schema(keys: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValidationError) as refused:
        overlay(**keys)
    assert all(word in str(refused.value) for word in words), str(refused.value)
