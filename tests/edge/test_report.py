"""Report by exception: deadbands (absolute, percent), on change, counters, the heartbeat's timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citygw.contract.agent_config import Device
from edge.report import ExceptionReport, rules_for
from firmware_bridge.profile import ReportRule, load_profile

AQ = load_profile("vaisala_aqt530")
VALIDATOR = load_profile("ticket_validator")


def report(profile_name: str = "vaisala_aqt530", **config: object) -> ExceptionReport:
    profile = load_profile(profile_name)
    device = Device.model_validate(
        {
            "id": "d",
            "line": "l",
            "profile": profile_name,
            "unit": 1,
            "poll_s": 10,
            "heartbeat_s": 900,
            **config,
        }
    )
    found = ExceptionReport.for_device(device, profile)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("rule", "before", "now", "moved"),
    [
        (ReportRule("absolute", 1.0), 8.4, 9.4, False),  # exactly the deadband: not beyond it
        (ReportRule("absolute", 0.2), 0.1, 0.1 + 0.2, False),  # 0.2000...04 in floats: still exactly 0.2
        (ReportRule("absolute", 1.0), 8.4, 9.5, True),
        (ReportRule("absolute", 1.0), 8.4, 7.3, True),
        (ReportRule("absolute", 0.0), 5, 5, False),
        (ReportRule("absolute", 0.0), 5, 6, True),
        (ReportRule("percent", 5.0), 310, 325, False),  # 15.5 is 5 % of 310
        (ReportRule("percent", 5.0), 310, 326, True),
        (ReportRule("percent", 5.0), -20.0, -21.5, True),  # of the magnitude
        (ReportRule("percent", 5.0), 0, 0.001, True),  # any move away from 0
        (ReportRule("change"), "ok", "ok", False),
        (ReportRule("change"), "ok", "fault", True),
        (ReportRule("change"), False, True, True),
        (ReportRule("absolute", 1.0), True, False, True),  # a value that is no number: any change
    ],
)
def test_rules(rule: ReportRule, before: object, now: object, moved: bool) -> None:
    assert rule.moved(before, now) is moved


def test_the_device_config_replaces_the_profile_and_a_counter_reports_any_change() -> None:
    rules = rules_for(
        Device(
            id="d", line="l", profile="vaisala_aqt530", unit=1, poll_s=1, heartbeat_s=60, report={"pm25": 3}
        ),
        AQ,
    )
    assert rules["pm25"] == ReportRule("absolute", 3.0)
    assert rules["co"] == ReportRule("percent", 5.0)  # the profile's
    validator = rules_for(
        Device(id="v", line="l", profile="ticket_validator", unit=1, poll_s=1, heartbeat_s=60), VALIDATOR
    )
    assert set(validator.values()) == {
        ReportRule("change")
    }  # counters, and fields the profile says nothing of


def test_a_device_without_heartbeat_publishes_every_poll() -> None:
    device = Device(id="d", line="l", profile="vaisala_aqt530", unit=1, poll_s=10)
    assert ExceptionReport.for_device(device, AQ) is None


def test_the_heartbeat_falls_on_the_poll_nearest_it() -> None:
    state = report()
    fields = {"pm25": 8.4, "co": 310}
    assert state.due(fields, 0.0), "nothing published yet"
    state.sent(fields, 0.0)
    assert not state.due(fields, 10.0)
    assert not state.due(fields, 894.9)
    assert state.due(fields, 895.0), "a poll 5 s early (half a poll) is the heartbeat's"
    assert state.due({"pm25": 8.4, "co": 310, "no2_ugm3": 27}, 20.0), "a field not published yet"
    assert state.due({"pm25": 9.5}, 20.0)
    state.forget()  # the device failed: its next good read is published
    assert state.due(fields, 30.0)


def test_a_field_is_compared_with_its_last_published_value_so_a_slow_drift_is_published() -> None:
    state = report(report={"pm25": 1})
    state.sent({"pm25": 8.0}, 0.0)
    drift = [8.3, 8.6, 8.9, 9.2]
    assert [state.due({"pm25": v}, 10.0 * (i + 1)) for i, v in enumerate(drift)] == [
        False,
        False,
        False,
        True,
    ]


CASES = json.loads((Path(__file__).parent / "deadband_cases" / "open62541.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["source"].rsplit(": ", 1)[-1] for c in CASES])
def test_deadbands_report_what_open62541_reports(case: dict[str, Any]) -> None:
    """OPC UA's absolute deadband, as open62541's server applies it (tests/edge/deadband_cases)."""
    deadband = case["deadband"]
    rule = ReportRule("change") if deadband is None else ReportRule("absolute", deadband)
    state = ExceptionReport({"value": rule}, heartbeat_s=86_400, poll_s=1)
    state.sent({"value": case["last_reported"]}, 0.0)
    reported = []
    for t, value in enumerate(case["writes"], start=1):
        if state.due({"value": value}, float(t)):
            state.sent({"value": value}, float(t))
            reported.append(value)
    assert reported == case["reported"]
