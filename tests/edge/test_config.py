"""Config errors name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from citygw.contract.agent_config import BROKER_URL_ENV, AgentConfigError
from edge.config_file import load_agent_config

EXAMPLE = Path(__file__).parents[2] / "edge" / "examples" / "agent.yaml"


def profile_check(name: str) -> object:
    raise LookupError(f"no profile {name}")


def base() -> dict[str, Any]:
    return {
        "agent_id": "pi-7",
        "site": "depot-north",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "journal": "/tmp/j.sqlite",
        "lines": [
            {"id": "rs485-1", "kind": "rtu", "port": "/dev/ttyUSB0"},
            {"id": "tcp-aq", "kind": "tcp", "host": "10.0.0.5"},
            {"id": "gps", "kind": "nmea", "port": "/dev/ttyAMA0"},
        ],
        "devices": [
            {"id": "aq-1", "profile": "aq", "line": "tcp-aq", "unit": 1, "poll_s": 5},
            {"id": "meter-1", "profile": "aq", "line": "rs485-1", "unit": 2, "poll_s": 5},
            {"id": "bus-gps", "line": "gps", "poll_s": 2, "vehicle": {"id": "bus-1", "label": "Bus 1"}},
        ],
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def accept_aq(name: str) -> object:
    if name != "aq":
        raise LookupError(f"no profile named {name!r}")
    return object()


def errors(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, data)
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path, profiles=accept_aq)
    assert all(str(line).startswith(f"{path}: ") for line in str(caught.value).splitlines())
    return str(caught.value)


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, base()), profiles=accept_aq)
    assert config.agent_id == "pi-7"
    assert config.journal.path == Path("/tmp/j.sqlite")
    assert config.journal.fsync == "normal"
    assert [line.kind for line in config.lines] == ["rtu", "tcp", "nmea"]
    assert config.broker.hostname == "127.0.0.1"
    assert config.broker.port == 1883
    assert [d.id for d in config.devices_on("gps")] == ["bus-gps"]


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)
    config = load_agent_config(EXAMPLE)
    assert config.devices
    assert {line.kind for line in config.lines} == {"tcp", "rtu", "nmea"}


def test_unknown_line_names_field_and_defined_lines(tmp_path: Path) -> None:
    data = base()
    data["devices"][1]["line"] = "rs485-9"
    text = errors(tmp_path, data)
    assert "devices[1].line: unknown line 'rs485-9'; defined lines: rs485-1, tcp-aq, gps" in text


def test_a_ca_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    data = base()
    data["broker"] = {"url": "mqtts://broker.city.example", "ca_file": str(tmp_path / "missing-ca.pem")}
    text = errors(tmp_path, data)
    assert (
        f"broker.ca_file: cannot read {tmp_path / 'missing-ca.pem'}: No such file or directory; fix: " in text
    )
    data["broker"]["ca_file"] = str(tmp_path)
    assert "broker.ca_file: cannot read" in errors(tmp_path, data)  # a directory
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    data["broker"]["ca_file"] = str(ca)
    assert load_agent_config(write(tmp_path, data), profiles=accept_aq).broker.ca_file == ca


def test_a_client_certificate_or_key_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    data = base()
    cert, key = tmp_path / "depot-north-1.crt", tmp_path / "depot-north-1.key"
    data["broker"] = {"url": "mqtts://broker.city.example:8884", "cert_file": str(cert), "key_file": str(key)}
    text = errors(tmp_path, data)
    assert f"broker.cert_file: cannot read {cert}: No such file or directory; fix: " in text
    assert "citygw pki issue agent" in text
    assert f"broker.key_file: cannot read {key}: No such file or directory; fix: " in text
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.mkdir()
    text = errors(tmp_path, data)
    assert f"broker.key_file: cannot read {key}: Is a directory; fix: " in text
    assert "broker.cert_file" not in text
    key.rmdir()
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    loaded = load_agent_config(write(tmp_path, data), profiles=accept_aq).broker
    assert (loaded.cert_file, loaded.key_file) == (cert, key)


@pytest.mark.parametrize(
    ("broker", "says"),
    [
        ({"url": "mqtts://b.example:8884", "cert_file": "a.crt"}, "cert_file and key_file go together"),
        ({"url": "mqtts://b.example:8884", "key_file": "a.key"}, "cert_file and key_file go together"),
        (
            {"url": "mqtt://b.example", "cert_file": "a.crt", "key_file": "a.key"},
            "cert_file needs an mqtts://",
        ),
    ],
)
def test_a_client_certificate_needs_its_key_and_tls(
    tmp_path: Path, broker: dict[str, str], says: str
) -> None:
    data = base()
    data["broker"] = broker
    text = errors(tmp_path, data)
    assert "broker" in text
    assert says in text


def test_schema_errors_have_dotted_paths(tmp_path: Path) -> None:
    data = base()
    data["devices"][0]["unit"] = 300
    data["devices"][2]["vehicle"]["lable"] = "x"
    del data["lines"][1]["host"]
    data["agent_id"] = "Pi 7"
    text = errors(tmp_path, data)
    assert "devices[0].unit: Input should be less than or equal to 247 (got 300); fix:" in text
    assert "devices[2].vehicle.lable: Extra inputs are not permitted" in text
    assert "remove it or correct its spelling" in text
    assert "lines[1].host: Field required; fix: add it" in text
    assert "agent_id: String should match pattern" in text


def test_cross_references(tmp_path: Path) -> None:
    data = base()
    data["devices"].append({"id": "aq-1", "profile": "nope", "line": "tcp-aq", "unit": 1, "poll_s": 1})
    data["devices"].append(
        {"id": "bus-2", "line": "gps", "poll_s": 1, "vehicle": {"id": "bus-2", "label": "B"}}
    )
    data["devices"][1]["tags"] = {"device": "x"}
    data["lines"].append({"id": "gps", "kind": "nmea", "port": "/dev/ttyS1"})
    text = errors(tmp_path, data)
    assert "lines[3].id: line id 'gps' is used twice" in text
    assert "devices[3].id: device id 'aq-1' is used twice" in text
    assert "devices[3].unit: unit 1 on line 'tcp-aq' is already 'aq-1'" in text
    assert "devices[3].profile: cannot load profile 'nope'" in text
    assert "devices[4].line: GPS line 'gps' already feeds device 'bus-gps'" in text
    assert "devices[1].tags.device: tag 'device' is set by the agent or the collector; fix: remove it" in text


def test_kind_specific_fields(tmp_path: Path) -> None:
    data = base()
    del data["devices"][0]["unit"]
    data["devices"][2]["unit"] = 3
    del data["devices"][2]["vehicle"]
    text = errors(tmp_path, data)
    assert "devices[0].unit: line 'tcp-aq' is a Modbus line; fix: add unit" in text
    assert "devices[2].vehicle: line 'gps' is a GPS line" in text
    assert "devices[2].unit: line 'gps' is a GPS line; fix: remove unit" in text


def test_unknown_line_kind(tmp_path: Path) -> None:
    data = base()
    data["lines"][0]["kind"] = "rs232"
    text = errors(tmp_path, data)
    assert "lines[0].kind: Input tag 'rs232' found using 'kind' does not match" in text
    assert "fix: set kind to tcp, rtu, nmea, mbus, opcua, lorawan, dialin or dlms" in text


def test_broker_url_from_environment_without_leaking_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, base())
    monkeypatch.setenv(BROKER_URL_ENV, "mqtts://pi-7:s3cret@broker.city.example")
    config = load_agent_config(path, profiles=accept_aq)
    assert (config.broker.tls, config.broker.port, config.broker.username, config.broker.password) == (
        True,
        8883,
        "pi-7",
        "s3cret",
    )
    assert "s3cret" not in config.broker.redacted_url
    monkeypatch.setenv(BROKER_URL_ENV, "http://pi-7:s3cret@broker")
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path, profiles=accept_aq)
    assert f"broker.url (from {BROKER_URL_ENV}): Value error, scheme must be mqtt:// or mqtts://" in str(
        caught.value
    )
    assert "s3cret" not in str(caught.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"missing\.yaml: \(file\): cannot read it"):
        load_agent_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent_id: [unclosed\n")
    with pytest.raises(AgentConfigError, match=r"bad\.yaml: line \d+: not valid YAML"):
        load_agent_config(bad)


def test_report_by_exception_settings_name_the_field_and_the_fix(tmp_path: Path) -> None:
    data = base()
    data["devices"][0].update(heartbeat_s=2, report={"pm25": -0.5, "no2": "five", "co": "5%"})
    data["devices"][1]["report"] = {"pm25": 1}
    data["devices"][2]["heartbeat_s"] = 60
    text = errors(tmp_path, data)
    assert "devices[0].report.pm25: deadband -0.5 is negative or not finite; fix: use 0 or more" in text
    assert (
        "devices[0].report.no2: 'five' is no deadband; fix: write a number in the field's unit (0.5)" in text
    )
    assert "report.co" not in text
    del data["devices"][0]["report"]
    text = errors(tmp_path, data)
    assert "devices[0].heartbeat_s: heartbeat_s 2 is shorter than poll_s 5" in text
    assert "fix: set heartbeat_s to 5 or more (e.g. 900), or remove it to publish every poll" in text
    assert (
        "devices[1].report: deadbands without a heartbeat: a steady device would never be heard; fix: add "
        in text
    )
    assert "devices[2].heartbeat_s: a GPS device already reports by exception" in text


def test_report_names_fields_the_profile_reads_and_suits_their_kind(tmp_path: Path) -> None:
    data = base()
    data["devices"][0].update(profile="vaisala_aqt530", heartbeat_s=900, report={"pm25": "10%", "pm2_5": 1})
    data["devices"][1].update(
        profile="ticket_validator", heartbeat_s=900, report={"taps_student": 5, "status": "on_change"}
    )
    del data["devices"][2]
    path = write(tmp_path, data)
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path)
    text = str(caught.value)
    assert (
        "devices[0].report.pm2_5: profile 'vaisala_aqt530' reads no field 'pm2_5'; "
        "fix: use one of its fields: no2," in text
    )
    assert (
        "devices[1].report.taps_student: taps_student is a counter, published whenever it changes; "
        "fix: remove its deadband" in text
    )
    assert "report.pm25" not in text
    data["devices"][0]["report"] = {"pm25": "10%", "co": 0}
    data["devices"][1]["report"] = {"taps_student": "on_change"}
    config = load_agent_config(write(tmp_path, data))
    assert [d.heartbeat_s for d in config.devices] == [900, 900]
