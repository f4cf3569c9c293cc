"""Device overlays in the agent config: checked against the profile, re-planned, held to the bus budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from citygw.contract.agent_config import AgentConfigError, Problem
from edge.config_file import load_agent_config


def config(*devices: dict[str, Any], lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "agent_id": "pi-7",
        "site": "depot-north",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "journal": "/tmp/j.sqlite",
        "lines": lines
        or [
            {"id": "rs485-1", "kind": "rtu", "port": "/dev/ttyUSB0", "baudrate": 9600},
            {"id": "gw", "kind": "tcp", "host": "10.0.0.5"},
        ],
        "devices": list(devices),
    }


def meter(unit: int, **more: Any) -> dict[str, Any]:
    return {
        "id": f"meter-{unit}",
        "profile": "eastron_sdm630",
        "line": "rs485-1",
        "unit": unit,
        "poll_s": 1.0,
        **more,
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_agent_config(path)


def problems(tmp_path: Path, data: dict[str, Any]) -> tuple[str, list[Problem]]:
    with pytest.raises(AgentConfigError) as refused:
        load(tmp_path, data)
    return str(refused.value), refused.value.problems


def test_an_overlay_loads_and_keeps_what_it_says(tmp_path: Path) -> None:
    overlay = {
        "timing": {"response_timeout_ms": 400},
        "max_registers": 8,
        "fields": ["voltage_l1", "current_l1"],
        "word_order": "CDAB",
        "registers": {"current_l1": {"scale": 40}},
    }
    loaded = load(tmp_path, config(meter(1, overlay=overlay)))
    assert loaded.devices[0].overlay.model_dump(exclude_none=True) == overlay


def test_an_unknown_field_names_file_device_field_and_the_valid_names(tmp_path: Path) -> None:
    text, found = problems(tmp_path, config(meter(1), meter(2, overlay={"fields": ["voltage_l1", "volts"]})))
    (problem,) = found
    assert problem.field == "devices[1].overlay.fields[1]"
    assert "'meter-2'" in problem.message
    assert "'volts'" in problem.message
    assert "voltage_l1, voltage_l2" in problem.fix
    assert text.startswith(f"{tmp_path / 'agent.yaml'}: devices[1].overlay.fields[1]: ")


def test_every_bad_overlay_key_is_named(tmp_path: Path) -> None:
    text, found = problems(
        tmp_path,
        config(
            meter(1, overlay={"registers": {"voltage_l1": {"scale": 0}}}),
            meter(2, overlay={"timing": {"guard_m": 5}}),
        ),
    )
    fields = [p.field for p in found]
    assert fields == ["devices[0].overlay.registers.voltage_l1.scale", "devices[1].overlay.timing"]
    assert "non-zero scale" in text
    assert "timing takes response_timeout_ms, guard_ms" in text


def test_tcp_timing_on_a_serial_port_is_refused(tmp_path: Path) -> None:
    _, found = problems(tmp_path, config(meter(1, overlay={"timing": {"close_between_polls": True}})))
    (problem,) = found
    assert problem.field == "devices[0].overlay.timing.close_between_polls"
    assert "serial port /dev/ttyUSB0" in problem.message


def test_tcp_timing_on_a_tcp_line_or_a_serial_server_is_taken(tmp_path: Path) -> None:
    timing = {"timing": {"close_between_polls": True, "connect_delay_s": 0.5}}
    lines = [
        {"id": "rs485-1", "kind": "rtu", "port": "socket://10.0.4.7:4001"},
        {"id": "gw", "kind": "tcp", "host": "10.0.0.5"},
    ]
    loaded = load(
        tmp_path,
        config(meter(1, overlay=timing), {**meter(2, overlay=timing), "line": "gw"}, lines=lines),
    )
    assert loaded.lines[0].socket_address == ("10.0.4.7", 4001)


@pytest.mark.parametrize(
    "port", ["socket://10.0.4.7", "socket://:4001", "socket://host:port", "socket://h:1/x"]
)
def test_a_serial_server_url_needs_host_and_port(tmp_path: Path, port: str) -> None:
    lines = [{"id": "rs485-1", "kind": "rtu", "port": port}]
    _, found = problems(tmp_path, config(meter(1), lines=lines))
    assert [p.field for p in found] == ["lines[0].port"]
    assert "socket://10.0.4.7:4001" in found[0].message


def test_an_overlay_that_breaks_the_bus_budget_is_named_with_its_fix(tmp_path: Path) -> None:
    meters = [meter(unit) for unit in range(1, 7)]  # 6 x 0.12 s of wire per second at 9600 baud: fits
    load(tmp_path, config(*meters))
    meters[3] = meter(4, overlay={"timing": {"guard_ms": 200}})
    _, found = problems(tmp_path, config(*meters))
    (problem,) = found
    assert problem.field == "devices[3].overlay"
    assert "overlay of device 'meter-4'" in problem.message
    assert "without overlays" in problem.message
    assert "lower its timing.guard_ms on meter-4" in problem.fix


def test_a_smaller_max_registers_is_planned_into_the_budget(tmp_path: Path) -> None:
    meters = [meter(unit) for unit in range(1, 8)]
    load(tmp_path, config(*meters))
    meters = [meter(unit, overlay={"max_registers": 2}) for unit in range(1, 8)]
    _, found = problems(tmp_path, config(*meters))
    assert "max_registers" in found[0].fix


def test_a_gps_device_has_no_overlay(tmp_path: Path) -> None:
    lines = [{"id": "gps", "kind": "nmea", "port": "/dev/ttyAMA0"}]
    gps = {"id": "bus-gps", "line": "gps", "poll_s": 5, "vehicle": {"id": "bus-1", "label": "Bus 1"}}
    _, found = problems(tmp_path, config({**gps, "overlay": {"max_registers": 4}}, lines=lines))
    assert [(p.field, p.fix) for p in found] == [("devices[0].overlay", "remove overlay")]
