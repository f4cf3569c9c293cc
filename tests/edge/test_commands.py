"""How a lamp command is judged from what is read at the lamp (the cases the simulator cannot stage)."""

from __future__ import annotations

from citygw.contract import wire
from edge.commands import Look, Write, judge, looks_for
from firmware_bridge import dali
from firmware_bridge.profile import load_profile

GATEWAY = load_profile("ecodim_dali_gw2")


def look(field: str, value: int) -> list[Look]:
    return looks_for(GATEWAY, [Write(field, value, GATEWAY.register(field))])


def test_a_lamp_asked_to_light_that_stays_at_0_without_a_fault_is_dark_once_settled() -> None:
    (on,) = look("lamp0_brightness", 254)
    read: dict[str, wire.FieldValue] = {"lamp0_level": 0, "lamp0_status": 0}
    assert judge(on, read, final=False) is None, "still settling: look again"
    verdict = judge(on, read, final=True)
    assert verdict is not None
    assert verdict.outcome is wire.CommandOutcome.DONE_BUT_DARK
    assert verdict.detail == "lamp0: level 0 although 254 was asked, no failure reported"


def test_a_failure_bit_answers_at_once_and_off_ignores_it() -> None:
    (on,) = look("lamp0_brightness", 254)
    (off,) = look("lamp0_brightness", 0)
    read: dict[str, wire.FieldValue] = {"lamp0_level": 0, "lamp0_status": dali.LAMP_FAIL | dali.BALLAST_FAIL}
    verdict = judge(on, read, final=False)
    assert verdict is not None
    assert verdict.outcome is wire.CommandOutcome.DONE_BUT_DARK
    assert verdict.detail == "lamp0: lamp and ballast failure (status 3), level 0"
    off_verdict = judge(off, read, final=False)
    assert off_verdict is not None
    assert off_verdict.outcome is wire.CommandOutcome.DONE


def test_what_is_read_after_a_write_only_write() -> None:
    (lamp,) = look("lamp2_brightness", 100)
    (group,) = look("group1_brightness", 100)
    assert lamp.fields == ["lamp2_level", "lamp2_status"]
    assert group.fields == ["group1_fault"]  # a group reports no level, and its status is no DALI byte
    verdict = judge(group, {"group1_fault": 1}, final=False)
    assert verdict is not None
    assert verdict.outcome is wire.CommandOutcome.DONE_BUT_DARK
    assert verdict.detail == "group1: fault register 1"
