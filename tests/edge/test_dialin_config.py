"""Config of dialin lines: the listen address, registrations, modem ids and heartbeats, each error named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config_file import load_agent_config
from tests.edge.test_config import accept_aq, base, errors, write


def dialin(**line: Any) -> dict[str, Any]:
    data = base()
    data["lines"].append(
        {"id": "cell", "kind": "dialin", "listen": "0.0.0.0:9502", "registration": {"kind": "text"}, **line}
    )
    data["devices"] += [
        {"id": "aq-5", "profile": "aq", "line": "cell", "modem": "LOGIN:1001", "unit": 1, "poll_s": 60},
        {"id": "aq-6", "profile": "aq", "line": "cell", "modem": "LOGIN:1002", "unit": 1, "poll_s": 60},
    ]
    return data


def test_a_dialin_line_loads(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, dialin(heartbeat={"hex": "4c 4f 47"})), profiles=accept_aq)
    line = config.line("cell")
    assert line.kind == "dialin"
    assert line.address == ("0.0.0.0", 9502)
    assert line.framing == "rtu"
    assert line.heartbeat is not None
    assert line.heartbeat.data == b"LOG"
    assert [d.modem for d in config.devices_on("cell")] == ["LOGIN:1001", "LOGIN:1002"]


def test_listen_must_be_host_and_port(tmp_path: Path) -> None:
    text = errors(tmp_path, dialin(listen="9502"))
    assert "lines[3].listen: Value error, listen is host:port, e.g. 0.0.0.0:9502 (got '9502')" in text


def test_a_device_without_its_modem_is_named(tmp_path: Path) -> None:
    data = dialin()
    del data["devices"][3]["modem"]
    text = errors(tmp_path, data)
    assert "devices[3].modem: dialin line 'cell' knows its modems by their text registration" in text
    assert "fix: add modem: <the registration the modem sends, e.g. LOGIN:1001>" in text


def test_two_units_alike_behind_one_modem_are_refused(tmp_path: Path) -> None:
    data = dialin()
    data["devices"][4]["modem"] = "LOGIN:1001"
    text = errors(tmp_path, data)
    assert "devices[4].unit: unit 1 on line 'cell modem LOGIN:1001' is already 'aq-5'" in text
    data = dialin(registration={"kind": "hex"})
    data["devices"][3]["modem"] = "9C:A5:25:F0:1B:3C"
    data["devices"][4]["modem"] = "9ca525f01b3c"  # the same modem
    text = errors(tmp_path, data)
    assert "devices[4].unit: unit 1 on line 'cell modem 9ca525f01b3c' is already 'aq-5'" in text


def test_imei_and_hex_modems_are_checked(tmp_path: Path) -> None:
    text = errors(tmp_path, dialin(registration={"kind": "imei"}))
    assert "devices[3].modem: 'LOGIN:1001' is no IMEI: 15 digits" in text
    data = dialin(registration={"kind": "imei"})
    data["devices"][3]["modem"] = "356307042441013"  # Teltonika's example IMEI: a valid check digit
    data["devices"][4]["modem"] = "356307042441014"
    text = errors(tmp_path, data)
    assert "devices[3]" not in text
    assert "devices[4].modem: IMEI 356307042441014 fails its check digit (the last): a typo?" in text
    text = errors(tmp_path, dialin(registration={"kind": "hex"}))
    assert "devices[3].modem: 'LOGIN:1001' is not hex" in text


def test_modem_without_registration_or_off_a_dialin_line_is_refused(tmp_path: Path) -> None:
    data = dialin(registration=None)
    del data["lines"][3]["registration"]
    data["devices"][1]["modem"] = "LOGIN:1001"
    text = errors(tmp_path, data)
    assert "devices[1].modem: line 'rs485-1' is no dialin line; fix: remove modem" in text
    assert "devices[3].modem: dialin line 'cell' has no registration: its modems are known by unit id" in text


def test_a_heartbeat_is_text_or_hex(tmp_path: Path) -> None:
    text = errors(tmp_path, dialin(heartbeat={"text": "ping", "hex": "70"}))
    assert (
        "lines[3].heartbeat: Value error, give the bytes as text: ... or as hex: ..., one of the two" in text
    )
    text = errors(tmp_path, dialin(heartbeat={"hex": "pi ng"}))
    assert "lines[3].heartbeat.hex: Value error, 'pi ng' is not hex" in text


def test_one_hex_registration_spelt_two_ways_is_one_modem(tmp_path: Path) -> None:
    from edge.dialin import dialin_listener
    from firmware_bridge.profile import load_profile

    data = dialin(registration={"kind": "hex"})
    data["devices"][3].update(modem="9C:A5:25:F0:1B:3C", profile="vaisala_aqt530")
    data["devices"][4].update(modem="9ca525f01b3c", profile="vaisala_aqt530", unit=2)
    config = load_agent_config(
        write(tmp_path, data), profiles=lambda name: load_profile(name) if name != "aq" else object()
    )
    devices = config.devices_on("cell")
    listener, behind = dialin_listener(
        config.line("cell"), devices, {d.id: load_profile("vaisala_aqt530") for d in devices}
    )  # type: ignore[arg-type]
    assert listener.registrations is not None
    assert listener.registrations.packets == {bytes.fromhex("9CA525F01B3C"): "9C:A5:25:F0:1B:3C"}
    assert {name: [d.id for d in ds] for name, ds in behind.items()} == {
        "9C:A5:25:F0:1B:3C": ["aq-5", "aq-6"]
    }
