"""The wire contract: topics, payload validation and the published JSON Schema files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from citygw.contract import wire

REPO = Path(__file__).resolve().parents[2]


def _batch(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "schema": 1,
        "agent": "depot-1",
        "seq": 7,
        "readings": [
            {
                "device": "aq-1",
                "measurement": "air_quality",
                "ts": 1_763_870_400_000,
                "fields": {"pm25": 12.5, "ok": True, "samples": 3, "state": "warm"},
                "tags": {"district": "Halytskyi"},
            }
        ],
    }
    payload.update(overrides)
    return payload


def test_topics_round_trip() -> None:
    name = wire.topic("depot-1", wire.Channel.CONFIG_STATE)
    assert name == "citygw/v1/depot-1/config/state"
    assert wire.parse_topic(name) == ("depot-1", wire.Channel.CONFIG_STATE)
    assert wire.parse_topic("citygw/v1/depot-1/nonsense") is None
    assert wire.parse_topic("citygw/v1/Bad Agent/telemetry") is None
    assert wire.parse_topic("other/v1/depot-1/telemetry") is None
    with pytest.raises(ValueError, match="agent id"):
        wire.topic("../etc", wire.Channel.TELEMETRY)


def test_shared_subscription() -> None:
    assert wire.subscription(wire.Channel.TELEMETRY) == "citygw/v1/+/telemetry"
    assert wire.subscription(wire.Channel.TELEMETRY, share_group="c") == "$share/c/citygw/v1/+/telemetry"


def test_valid_batch_keeps_field_types() -> None:
    batch = wire.TelemetryBatch.model_validate_json(json.dumps(_batch()))
    fields = batch.readings[0].fields
    assert [type(fields[k]) for k in ("pm25", "ok", "samples", "state")] == [float, bool, int, str]
    assert json.loads(wire.encode(batch)) == _batch()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            '{"schema": 1, "agent": "a", "seq": 1, "readings": [{"device": "d", "measurement": "m", '
            '"ts": 1, "fields": {"v": NaN}}]}',
            "finite",
        ),
        (json.dumps(_batch(schema=2)), "schema"),
        (json.dumps(_batch(agent="Depot 1")), "agent"),
        (json.dumps(_batch(seq=-1)), "seq"),
        (json.dumps(_batch(readings=[])), "readings"),
        (json.dumps(_batch(extra=1)), "extra"),
        (
            json.dumps(
                _batch(readings=[{"device": "d", "measurement": "Air Quality", "ts": 1, "fields": {"v": 1}}])
            ),
            "measurement",
        ),
        (
            json.dumps(_batch(readings=[{"device": "d\n", "measurement": "m", "ts": 1, "fields": {"v": 1}}])),
            "device",
        ),
        (json.dumps(_batch(readings=[{"device": "d", "measurement": "m", "ts": 1, "fields": {}}])), "fields"),
        (
            json.dumps(_batch(readings=[{"device": "d", "measurement": "m", "ts": "1", "fields": {"v": 1}}])),
            "ts",
        ),
    ],
)
def test_invalid_batches_are_refused_with_a_reason(raw: str, needle: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        wire.TelemetryBatch.model_validate_json(raw)
    assert needle in str(excinfo.value).lower()


def test_published_schemas_match_the_models() -> None:
    for name, schema in wire.json_schemas().items():
        path = REPO / "docs" / "wire" / name
        assert path.exists(), f"{path} missing: run `.venv/bin/python -m citygw.contract.wire`"
        assert json.loads(path.read_text()) == schema, (
            f"{path} is stale: run `.venv/bin/python -m citygw.contract.wire`"
        )


@pytest.mark.parametrize("check", [wire.is_agent_id, wire.is_name, wire.is_label])
def test_name_checks_refuse_a_trailing_newline_as_the_models_do(check: Callable[[str], object]) -> None:
    assert check("abc")
    assert not check("abc\n")


def test_a_topic_whose_agent_ends_in_a_newline_is_not_a_citygw_topic() -> None:
    assert wire.parse_topic("citygw/v1/agent-1\n/telemetry") is None
    assert wire.parse_topic("citygw/v1/agent-1/telemetry") == ("agent-1", wire.Channel.TELEMETRY)
    with pytest.raises(ValueError, match="agent id"):
        wire.topic("agent-1\n", wire.Channel.TELEMETRY)


def test_the_reserved_measurements_are_those_citygw_writes_itself() -> None:
    from api.recorder import COMMAND_MEASUREMENT, VEHICLE_MEASUREMENT
    from collector.dead_letter import DEAD_LETTER
    from collector.health import AGENT_HEALTH

    assert {DEAD_LETTER, AGENT_HEALTH, VEHICLE_MEASUREMENT, COMMAND_MEASUREMENT} == wire.RESERVED_MEASUREMENTS


def test_times_beyond_any_calendar_are_refused() -> None:
    with pytest.raises(ValidationError, match="last_ok"):
        wire.DeviceHealth(state=wire.DeviceState.OK, last_ok=-(10**400))
    with pytest.raises(ValidationError, match="ts"):
        wire.Health(
            agent="a", ts=wire.MAX_TS_MS + 1, devices={}, journal=wire.JournalHealth(backlog=0, dropped=0)
        )


def test_citygws_own_tags_are_never_field_names() -> None:
    """Issue 22.1: the collector refuses fields named like a tag; none of CityGW's own may be one."""
    from citygw.contract.agent_config import AGENT_TAGS, CONSOLE_FIELDS, VEHICLE_TAGS
    from firmware_bridge.lorawan import FCNT_FIELD, LOST_FIELD, RESET_FIELD, RSSI_FIELD, SNR_FIELD
    from firmware_bridge.profile import NmeaProfile, available_profiles, load_any_profile

    assert AGENT_TAGS | VEHICLE_TAGS | wire.RESERVED_TAGS <= wire.CITYGW_TAGS
    # the fields the agent adds itself
    names = {"lat", "lon", *CONSOLE_FIELDS, FCNT_FIELD, LOST_FIELD, RESET_FIELD, RSSI_FIELD, SNR_FIELD}
    for name in available_profiles(None):
        profile = load_any_profile(name)
        specs = profile.fields if isinstance(profile, NmeaProfile) else profile.field_specs
        names |= {spec.field for spec in specs}
    assert len(names) > 50
    assert not names & wire.NOT_FIELD_NAMES


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("depot ", "ends with a space"),
        (" depot", "starts with a space"),
        ("met\u0435r-1", "character '\u0435' (U+0435 CYRILLIC SMALL LETTER IE) at 3 is not ASCII"),
        ("meter\u200b1", "character '\\u200b' (U+200B ZERO WIDTH SPACE) at 5 is not ASCII"),
        ("meter\u00a01", "(U+00A0 NO-BREAK SPACE) at 5 is not ASCII"),
        ('say "hi"', "character '\"' at 4 is not allowed"),
        ("", "is empty"),
        ("x" * 129, "is longer than 128 characters"),
    ],
)
def test_a_label_that_looks_like_another_is_refused_saying_why(label: str, problem: str) -> None:
    """Issue 22.10: a device id or tag value one cannot tell from another by eye is refused."""
    assert not wire.is_label(label)
    with pytest.raises(ValidationError, match="device"):
        wire.Reading(device=label, measurement="m", ts=0, fields={"x": 1})
    explained = wire.label_problem(label)
    assert problem in explained
    assert "A-Z a-z 0-9" in explained


def test_labels_with_inner_spaces_and_punctuation_stay_valid() -> None:
    for label in ("depot north", "a/b:c", "x.y+z", "M-1_2", "9", "x" * 128, "end-"):
        assert wire.is_label(label), label
        assert wire.label_problem(label) is None
