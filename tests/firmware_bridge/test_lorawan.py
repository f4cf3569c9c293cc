"""LoRaWAN golden tests: the servers' documented messages and the vendors' codec examples.

Every expected value is the vendor's published decoded value (captures/lorawan), so a profile
that maps the wrong key, unit or kind fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from firmware_bridge import lorawan
from firmware_bridge.profile import ProfileError, available_profiles, load_lorawan_profile
from firmware_bridge.simulators.lorawan import uplink_message

CAPTURES = Path(__file__).parent / "captures" / "lorawan"
EXAMPLES: dict[str, Any] = yaml.safe_load((CAPTURES / "device_codec_examples.yaml").read_text("utf-8"))
# The vendor's downlink object key -> the profile's command field.
COMMANDS = {
    "uploadInterval": "upload_interval_h",
    "detectInterval": "detect_interval_min",
    "levelThreshold": "level_threshold_cm",
    "fireThreshold": "fire_threshold_degc",
    "fallThreshold": "tilt_threshold_deg",
    "report_interval": "report_interval_s",
}
# What each profile must read from each of its vendor's examples: the published decoded values.
GOLDEN: dict[str, list[dict[str, object]]] = {
    "dingtek_df703": [
        {
            "distance": 2000.0,
            "full_alarm": False,
            "fire_alarm": False,
            "tilt_alarm": False,
            "battery_alarm": False,
            "tilt_deg": 0.0,
            "temperature": 25.0,
        },
        {
            "distance": 2000.0,
            "full_alarm": False,
            "fire_alarm": False,
            "tilt_alarm": False,
            "battery_alarm": False,
            "tilt_deg": 0.0,
            "temperature": 25.0,
            "lat": 40.038999,
            "lon": 116.50743,
        },
    ],
    "nwave_nps405": [
        {"occupied": True, "previous_state_min": 74.0, "message_type": "parking_status"},
        {
            "occupied": False,
            "battery_voltage": 3.344,
            "temperature": -10.0,
            "battery_health": "normal",
            "hw_health_status": 0.0,
            "message_type": "heartbeat",
        },
        {
            "occupied": False,
            "firmware_version": "2.4.9",
            "reset_cause": "power_on",
            "message_type": "startup",
        },
    ],
    "milesight_em400_udl": [{"distance": 2116.0, "battery": 92.0, "temperature": 25.7, "position": "tilt"}],
}


def capture(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()


def test_every_lorawan_profile_has_vendor_examples() -> None:
    assert set(available_profiles("lorawan")) == set(GOLDEN) == set(EXAMPLES)


@pytest.mark.parametrize("model", sorted(GOLDEN))
def test_profiles_read_the_vendors_decoded_examples(model: str) -> None:
    profile = load_lorawan_profile(model)
    uplinks = EXAMPLES[model]["uplinks"]
    assert len(uplinks) == len(GOLDEN[model])
    for example, expected in zip(uplinks, GOLDEN[model], strict=True):
        mapped = lorawan.map_object(profile, example["decoded"])
        assert mapped.fields == pytest.approx(expected), example["description"]
        assert {k: type(v) for k, v in mapped.fields.items()} == {k: type(v) for k, v in expected.items()}
        assert mapped.left_out == {}


@pytest.mark.parametrize("model", sorted(GOLDEN))
def test_commands_encode_as_the_vendors_downlink_examples(model: str) -> None:
    profile = load_lorawan_profile(model)
    downlinks = EXAMPLES[model]["downlinks"]
    assert {COMMANDS[next(iter(d["data"]))] for d in downlinks} == {c.field for c in profile.commands}
    for example in downlinks:
        (key, value), *_ = example["data"].items()
        command = profile.command(COMMANDS[key])
        assert lorawan.encode_command(command, value) == bytes(example["bytes"]), example["data"]
        if example["f_port"] is not None:
            assert command.f_port == example["f_port"]


def test_a_chirpstack_v4_up_event_as_documented() -> None:
    uplink = lorawan.parse_uplink(
        "chirpstack", "application/x/device/0101010101010101/event/up", capture("chirpstack_v4_up.json")
    )
    assert (uplink.dev_eui, uplink.f_cnt, uplink.f_port) == ("0101010101010101", 0, 1)  # fCnt 0 is left out
    assert (uplink.rssi, uplink.snr, uplink.gateways) == (-36.0, 10.5, 1)
    assert uplink.received_ms == 1658136855775
    assert uplink.object is None  # the documented device has no codec
    with pytest.raises(lorawan.UplinkError, match="no decoded object: the network server ran no codec"):
        lorawan.map_object(load_lorawan_profile("nwave_nps405"), uplink.object)


def test_a_tts_v3_uplink_as_documented() -> None:
    uplink = lorawan.parse_uplink("tts", "v3/app1/devices/dev1/up", capture("tts_v3_up.json"))
    assert (uplink.dev_eui, uplink.device_id, uplink.f_cnt) == ("0004a30b001c0530", "dev1", 1)
    assert (uplink.rssi, uplink.snr) == (-35.0, 5.0)
    assert uplink.object == {"temperature": 1.0, "luminosity": 0.64}
    assert uplink.received_ms == 1581520545789
    plain = lorawan.parse_uplink(
        "tts", "v3/app1@tenant1/devices/dev1/up", capture("tts_v3_up_no_formatter.json")
    )
    assert (plain.f_cnt, plain.f_port, plain.object) == (0, 15, None)


def test_the_simulator_speaks_the_documented_shapes() -> None:
    """Same keys as the servers' own examples, so the agent is tested on the real format."""
    for server, name in (("chirpstack", "chirpstack_v4_up.json"), ("tts", "tts_v3_up.json")):
        documented = json.loads(capture(name))
        topic, payload = uplink_message(server, "app1", "0101010101010101", {"a": 1}, f_cnt=5, f_port=1)  # type: ignore[arg-type]
        ours = json.loads(payload)
        assert set(ours) <= set(documented) | {"fCnt", "object"}
        if server == "tts":
            assert set(ours["uplink_message"]) <= set(documented["uplink_message"]) | {"f_port"}
        assert lorawan.parse_uplink(server, topic, payload).f_cnt == 5  # type: ignore[arg-type]


def test_a_tts_downlink_as_documented() -> None:
    message = lorawan.downlink_message("tts", "0004a30b001c0530", 15, bytes.fromhex("BEEF"), confirmed=False)
    assert json.loads(message) == json.loads(capture("tts_v3_down_push.json"))
    assert lorawan.downlink_topic("tts", "app1@tenant1", "dev1") == "v3/app1@tenant1/devices/dev1/down/push"


def test_a_chirpstack_downlink_as_documented() -> None:
    message = json.loads(
        lorawan.downlink_message("chirpstack", "0102030405060708", 10, b"\x01", confirmed=True)
    )
    assert message == {"devEui": "0102030405060708", "confirmed": True, "fPort": 10, "data": "AQ=="}
    topic = lorawan.downlink_topic("chirpstack", "app", "0102030405060708")
    assert topic == "application/app/device/0102030405060708/command/down"


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"fCnt": 3}', "no deviceInfo: not a ChirpStack v4 uplink event"),
        (b'{"deviceInfo": {"devEui": "01"}}', "devEUI '01' is not 16 hex digits"),
        (b'{"deviceInfo": {"devEui": "0101010101010101"}, "fCnt": -1}', "fCnt -1 is not a frame counter"),
        (b'{"deviceInfo": {"devEui": "0101010101010101"}, "object": [1]}', "object is a list, not an object"),
    ],
)
def test_bad_chirpstack_messages_say_what_is_wrong(payload: bytes, says: str) -> None:
    with pytest.raises(lorawan.UplinkError, match=says):
        lorawan.parse_uplink("chirpstack", "application/a/device/x/event/up", payload)


def test_a_tts_message_that_is_no_uplink() -> None:
    with pytest.raises(lorawan.UplinkError, match="no end_device_ids or uplink_message"):
        lorawan.parse_uplink("tts", "v3/app1/devices/dev1/up", b'{"end_device_ids": {}, "join_accept": {}}')


def test_an_object_without_the_profiles_keys_and_unusable_values() -> None:
    profile = load_lorawan_profile("milesight_em400_udl")
    with pytest.raises(
        lorawan.UplinkError, match=r"no field of profile milesight_em400_udl .*keys: luminosity"
    ):
        lorawan.map_object(profile, {"luminosity": 0.64})
    mapped = lorawan.map_object(profile, {"distance": "far", "battery": 120, "temperature": 21.5})
    assert mapped.fields == {"temperature": 21.5}
    assert mapped.left_out == {
        "distance": "distance is 'far', not a number",
        "battery": "battery = 120 is outside 0..100",
    }
    nwave = load_lorawan_profile("nwave_nps405")
    registration = {"type": "user_registration", "occupied": None, "previous_state_duration": None}
    mapped = lorawan.map_object(nwave, registration)
    assert mapped.fields == {"message_type": "user_registration"}
    assert mapped.left_out["occupied"] == "occupied is None, not true or false"


def test_commands_refuse_what_they_cannot_encode() -> None:
    df703 = load_lorawan_profile("dingtek_df703")
    with pytest.raises(ValueError, match="does not fit in a u8"):
        lorawan.encode_command(df703.command("upload_interval_h"), 300)
    with pytest.raises(ValueError, match="upload_interval_h=0 is outside 1 or more"):
        lorawan.encode_command(df703.command("upload_interval_h"), 0)
    with pytest.raises(ValueError, match="not a whole number"):
        lorawan.encode_command(df703.command("upload_interval_h"), 2.5)
    with pytest.raises(ValueError, match="takes a number"):
        lorawan.encode_command(df703.command("upload_interval_h"), "often")
    with pytest.raises(KeyError, match="no command for 'open_lid'"):
        df703.command("open_lid")


def test_frame_counters_count_lost_uplinks_resets_and_repeats() -> None:
    counters = lorawan.FrameCounters()
    seen = [counters.observe("a", n) for n in (10, 11, 14, 14, 2, 3)]
    assert [(c.lost, c.reset, c.repeat) for c in seen] == [
        (0, False, False),
        (0, False, False),
        (2, False, False),  # 12 and 13 lost
        (0, False, True),  # the same frame again
        (0, True, False),  # the device rejoined
        (0, False, False),
    ]
    assert counters.observe("b", 7) == lorawan.Count()  # counters are per device


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{field: a, path: x, kind: bool, unit: V}", "a bool has no scale, offset or unit"),
        ("{field: a, path: 'x..y'}", "String should match pattern"),
        ("{field: a, path: x, scale: 0}", "scale 0"),
    ],
)
def test_bad_lorawan_fields_are_refused_with_the_fix(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model: bad\nvendor: x\nsource: none found, a test\nverified: modelled\nmeasurement: m\n"
        f"protocol: lorawan\nuplink_interval_s: 60\nfields:\n  - {line}\n"
    )
    with pytest.raises(ProfileError, match=says):
        load_lorawan_profile(path)


def test_a_command_template_needs_its_value_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model: bad\nvendor: x\nsource: none found, a test\nverified: modelled\nmeasurement: m\n"
        "protocol: lorawan\nuplink_interval_s: 60\nfields: [{field: a, path: a}]\n"
        "commands: [{field: b, f_port: 1, template: 'FF03', encoding: u8}]\n"
    )
    with pytest.raises(ProfileError, match=r"template needs \{value\} exactly once"):
        load_lorawan_profile(path)


def test_chirpstacks_own_definitions_take_the_capture_and_the_simulators_events() -> None:
    """The documented event is a real ``UplinkEvent``; the simulator's go through that definition."""
    from chirpstack_api import integration
    from google.protobuf import json_format

    documented = json_format.Parse(capture("chirpstack_v4_up.json"), integration.UplinkEvent())
    assert (documented.device_info.dev_eui, documented.rx_info[0].rssi) == ("0101010101010101", -36)
    decoded = EXAMPLES["nwave_nps405"]["uplinks"][1]["decoded"]
    topic, payload = uplink_message(
        "chirpstack", "app", "70b3d57ed0000002", decoded, f_cnt=0, f_port=2, rssi=-97
    )
    assert b'"fCnt"' not in payload  # 0 is protobuf's default: ChirpStack leaves it out
    assert b'"hw_health_status": 0.0' in payload  # a Struct's numbers are doubles; its keys stay as sent
    uplink = lorawan.parse_uplink("chirpstack", topic, payload)
    assert (uplink.f_cnt, uplink.rssi, uplink.object) == (0, -97.0, decoded)
    with pytest.raises(json_format.ParseError, match="fCount"):
        json_format.Parse(b'{"fCount": 3}', integration.UplinkEvent())
