"""Config validation of the poll plan: a line whose devices need more wire time than it has is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from citygw.contract.agent_config import AgentConfigError, Device, RtuLine
from citygw.contract.bus_time import SLOW_EVERY, line_load, poll_wire_time, serial_line
from edge.config_file import load_agent_config
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.planner import plan_reads
from firmware_bridge.profile import DeviceTiming, load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty
from firmware_bridge.timing import SerialLine


def config(meters: int, poll_s: float, baudrate: int = 9600) -> dict[str, Any]:
    return {
        "agent_id": "pi-7",
        "site": "lviv-rynok",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "journal": "/tmp/j.sqlite",
        "lines": [
            {"id": "rs485-1", "kind": "rtu", "port": "/dev/ttyUSB0", "baudrate": baudrate},
            {"id": "tcp-gw", "kind": "tcp", "host": "10.0.0.5"},
        ],
        "devices": [
            {"id": f"meter-{n}", "profile": "eastron_sdm630", "line": "rs485-1", "unit": n, "poll_s": poll_s}
            for n in range(1, meters + 1)
        ]
        # A TCP gateway's serial side is not ours to schedule: never counted.
        + [{"id": "gw-meter", "profile": "eastron_sdm630", "line": "tcp-gw", "unit": 1, "poll_s": 0.01}],
    }


def load(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    load_agent_config(path)


def test_average_poll_counts_slow_points_once_every_slow_every() -> None:
    sdm630 = load_profile("eastron_sdm630")
    wire = SerialLine(9600)
    fast = sum(wire.read_time(r) for r in plan_reads(sdm630, "fast"))
    both = sum(wire.read_time(r) for r in plan_reads(sdm630, ("fast", "slow")))
    assert fast < poll_wire_time(sdm630, wire) < both
    assert poll_wire_time(sdm630, wire) == pytest.approx(fast + (both - fast) / SLOW_EVERY)
    assert poll_wire_time(sdm630, SerialLine(19200)) < poll_wire_time(sdm630, wire)


def test_a_plan_the_line_can_meet_loads(tmp_path: Path) -> None:
    load(tmp_path, config(meters=10, poll_s=5.0))


def test_an_overloaded_line_is_refused_saying_by_how_much(tmp_path: Path) -> None:
    data = config(meters=20, poll_s=1.0)
    with pytest.raises(AgentConfigError) as caught:
        load(tmp_path, data)
    [problem] = caught.value.problems
    line = RtuLine.model_validate(data["lines"][0])
    devices = [(Device.model_validate(d), load_profile("eastron_sdm630")) for d in data["devices"][:20]]
    need = sum(d.busy for d in line_load(line, devices))
    assert need > 1.0
    assert problem.field == "lines[0]"
    assert f"line rs485-1 needs {need:.2f} s of bus time per 1.0 s at 9600 baud" in problem.message
    assert "lengthen poll_s of meter-" in problem.fix
    assert "or split the line" in problem.fix
    assert str(caught.value).startswith(str(tmp_path / "agent.yaml"))
    # Following the fix makes the config load.
    factor = float(problem.fix.split(" times")[0].rsplit(" ", 1)[1])
    for device in data["devices"][:20]:
        device["poll_s"] = round(device["poll_s"] * factor + 0.05, 1)
    load(tmp_path, data)


def test_a_faster_line_carries_the_same_plan(tmp_path: Path) -> None:
    load(tmp_path, config(meters=20, poll_s=1.0, baudrate=38400))


async def test_the_model_matches_the_baud_paced_line() -> None:
    """The bus time the check computes is what a poll takes on a paced 9600-baud line (within 25 %)."""
    sims = [ModbusDeviceSimulator("eastron_sdm630", unit=u) for u in (1, 2)]
    line = RtuLine(id="rs485-1", kind="rtu", port="-", baudrate=9600)
    wire = serial_line(line)
    expected = sum(wire.read_time(r) for r in plan_reads(sims[0].profile, "fast"))
    async with (
        serve_serial_pty(sims, baudrate=9600) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.2) as modbus,
    ):
        await modbus.read(1, sims[0].profile, "fast")
        durations = []
        for _ in range(3):
            for sim in sims:
                started = time.monotonic()
                await modbus.read(sim.unit, sim.profile, "fast")
                durations.append(time.monotonic() - started)
    # The fastest poll: a loaded machine only ever adds time, the wire's pace is the floor.
    took = min(durations)
    assert expected <= took * 1.02
    assert took < 1.25 * expected
    await asyncio.sleep(0)


def test_one_greedy_device_is_named_alone(tmp_path: Path) -> None:
    data = config(meters=3, poll_s=5.0)
    data["devices"][0]["poll_s"] = 0.05
    with pytest.raises(
        AgentConfigError, match=r"fix: lengthen poll_s of meter-1 2\.9 times \(e\.g\. meter-1"
    ):
        load(tmp_path, data)
    data["devices"][0]["poll_s"] = 0.15
    load(tmp_path, data)


def test_guard_intervals_count_in_the_budget(tmp_path: Path) -> None:
    """Six DALI cabinets polled every second fit the wire at 9600 baud, but not with their 5 ms guards."""
    dali = load_profile("ecodim_dali_gw2")
    wire = SerialLine(9600)
    unguarded = dali.model_copy(update={"timing": DeviceTiming()})
    extra = poll_wire_time(dali, wire) - poll_wire_time(unguarded, wire)
    assert extra == pytest.approx(len(plan_reads(dali, "fast")) * (0.005 - wire.silence))
    data = config(meters=0, poll_s=1.0)
    data["devices"] = [
        {"id": f"cabinet-{n}", "profile": "ecodim_dali_gw2", "line": "rs485-1", "unit": n, "poll_s": 1.0}
        for n in range(1, 7)
    ]
    assert 6 * poll_wire_time(unguarded, wire) < 1.0
    with pytest.raises(AgentConfigError) as caught:
        load(tmp_path, data)
    assert f"needs {6 * poll_wire_time(dali, wire):.2f} s of bus time" in caught.value.problems[0].message
