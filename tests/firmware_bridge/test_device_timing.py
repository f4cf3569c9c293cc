"""Device timing quirks from the profile: the ECOdim DALI gateway's 100 ms timeout and 5 ms guard."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from pymodbus.transaction import TransactionManager

from firmware_bridge.errors import DeviceTimeout
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import ProfileError, load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator, WireFrame, serve_serial_pty
from firmware_bridge.timing import SerialLine

DALI = "ecodim_dali_gw2"
PROFILE = """\
model: test_gateway
vendor: ACME
source: test fixture
verified: modelled
measurement: lighting
registers:
  - {field: level, table: holding, address: 0, type: u16}
"""


def test_the_dali_gateway_declares_its_timing() -> None:
    timing = load_profile(DALI).timing
    assert (timing.response_timeout, timing.guard) == (0.1, 0.005)
    assert load_profile("eastron_sdm630").timing.response_timeout is None


@pytest.mark.parametrize(
    ("timing", "says"),
    [
        ("{guard_ms: -1}", "timing.guard_ms: Input should be greater than or equal to 0"),
        ("{response_timeout_ms: 0}", "timing.response_timeout_ms: Input should be greater than 0"),
        ("{guard: 5}", "timing.guard: Extra inputs are not permitted — fix: remove this key"),
    ],
)
def test_a_bad_timing_section_is_refused_naming_the_field(tmp_path: Path, timing: str, says: str) -> None:
    path = tmp_path / "test_gateway.yaml"
    path.write_text(PROFILE + f"timing: {timing}\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=str(path)) as caught:
        load_profile(path)
    assert says in str(caught.value)


def test_the_device_timeout_replaces_a_serial_lines_and_only_lengthens_a_tcp_ones() -> None:
    timing = load_profile(DALI).timing
    rtu = ModbusLine.rtu(port="/dev/null", baudrate=9600, timeout=1.0)
    tcp = ModbusLine.tcp(host="127.0.0.1", timeout=1.0)
    assert (rtu.reply_timeout(timing), rtu.reply_timeout()) == (0.1, 1.0)
    assert tcp.reply_timeout(timing) == 1.0
    assert ModbusLine.tcp(host="127.0.0.1", timeout=0.05).reply_timeout(timing) == 0.1


async def test_a_frame_to_the_dali_gateway_waits_its_guard_after_the_previous_frame() -> None:
    """Its simulator, like the firmware, ignores a request inside the guard: every read must still answer."""
    meter = ModbusDeviceSimulator("jxbs_3001", unit=1)
    cabinet = ModbusDeviceSimulator(DALI, unit=2)
    frames: list[WireFrame] = []
    async with (
        serve_serial_pty([meter, cabinet], baudrate=9600, frames=frames) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.3) as line,
    ):
        for _ in range(3):
            assert await line.read(1, meter.profile) == meter.expected()
            assert await line.read(2, cabinet.profile) == cabinet.expected()
    gaps: dict[int, list[float]] = {1: [], 2: []}
    for before, frame in itertools.pairwise(frames):
        if not frame.answer:
            gaps[frame.unit].append(frame.start - before.end)
    assert len(gaps[2]) == 3 * 5  # five reads a poll
    assert min(gaps[2]) >= cabinet.profile.timing.guard
    assert min(gaps[1]) >= SerialLine(9600).silence


async def test_a_silent_dali_gateway_times_out_after_its_100_ms_not_the_lines_second() -> None:
    cabinet = ModbusDeviceSimulator(DALI, unit=2)
    cabinet.offline = True
    async with (
        serve_serial_pty([cabinet], baudrate=9600) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=1.0) as line,
    ):
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match=r"no answer within 0\.1 s"):
            await line.read(2, cabinet.profile)
        took = time.monotonic() - started
    assert 0.1 <= took < 0.4


async def test_the_guard_is_counted_from_the_answers_last_byte_not_from_when_it_was_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy agent takes the answer late: the silence it owes the line began when the answer's last
    byte came, so that time is not waited again (bench/bus.py's utilisation), and the guard is kept."""
    path = tmp_path / "test_gateway.yaml"
    path.write_text(PROFILE + "timing: {guard_ms: 300}\n", encoding="utf-8")
    gateway = ModbusDeviceSimulator(load_profile(path), unit=3)
    busy_s = 0.2
    execute = TransactionManager.execute

    async def slow_to_take_the_answer(self: TransactionManager, *args: Any, **kwargs: Any) -> Any:
        response = await execute(self, *args, **kwargs)
        await asyncio.sleep(busy_s)  # the answer is in; the agent gets to it only now
        return response

    monkeypatch.setattr(TransactionManager, "execute", slow_to_take_the_answer)
    frames: list[WireFrame] = []
    async with (
        serve_serial_pty([gateway], baudrate=9600, frames=frames) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.5) as line,
    ):
        for _ in range(3):
            assert await line.read(3, gateway.profile) == gateway.expected()
    gaps = [frame.start - before.end for before, frame in itertools.pairwise(frames) if not frame.answer]
    assert len(gaps) == 2
    assert min(gaps) >= 0.3  # the guard, from the last byte on the wire
    assert max(gaps) < 0.3 + busy_s - 0.05  # not the guard on top of the time taken to handle the answer
