"""Wire time of RTU frames, and a simulated serial line that takes that time."""

from __future__ import annotations

import time

import pytest

from firmware_bridge.modbus import ModbusLine
from firmware_bridge.planner import ReadRequest, plan_requests
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty
from firmware_bridge.timing import SerialLine, read_frame_sizes


def test_character_time_and_silence() -> None:
    assert SerialLine(9600).bits_per_character == 10
    assert SerialLine(9600, parity="E").bits_per_character == 11
    assert SerialLine(9600).character_time == pytest.approx(10 / 9600)
    assert SerialLine(9600).silence == pytest.approx(3.5 * 10 / 9600)
    assert SerialLine(38400).silence == 0.00175  # fixed above 19200 baud
    with pytest.raises(ValueError, match="positive"):
        SerialLine(0)


def test_frame_sizes_of_reads() -> None:
    assert read_frame_sizes(ReadRequest("input", 0, 10, ())) == (8, 25)
    assert read_frame_sizes(ReadRequest("discrete", 0, 9, ())) == (8, 7)
    # DEVICES.md: a 10-register read is ~33 bytes, ~34 ms at 9600 baud.
    assert SerialLine(9600).frame_time(8 + 25) == pytest.approx(0.0344, abs=1e-4)


def sdm630_wire_time(line: SerialLine) -> tuple[float, float]:
    """Seconds of the SDM630's frames alone, and with the silences between them, for a full read.

    The reader has its values at the last byte: the silence after the last answer is not waited for.
    """
    profile = load_profile("eastron_sdm630")
    requests = plan_requests(profile.select(("fast", "slow")))
    frames = sum(line.frame_time(sum(read_frame_sizes(r))) for r in requests)
    return frames, sum(line.read_time(r) for r in requests) - line.silence


@pytest.mark.parametrize("baudrate", [9600, 19200])
async def test_paced_line_takes_the_wire_time(baudrate: int) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    frames, with_silences = sdm630_wire_time(SerialLine(baudrate))
    async with (
        serve_serial_pty([meter], baudrate=baudrate) as port,
        ModbusLine.rtu(port=port, baudrate=baudrate, timeout=0.5) as line,
    ):
        started = time.monotonic()
        values = await line.read(1, meter.profile, poll=("fast", "slow"))
        took = time.monotonic() - started
    assert len(meter.requests) == 3
    assert values == {k: v for k, v in meter.expected().items() if k != "demand_period_min"}
    assert took >= with_silences > frames
    assert took < 1.5 * with_silences + 0.05, f"{took:.3f} s for {with_silences:.3f} s of wire time"


async def test_unpaced_line_answers_at_memory_speed() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    _, with_silences = sdm630_wire_time(SerialLine(9600))
    async with (
        serve_serial_pty([meter]) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.5) as line,
    ):
        started = time.monotonic()
        await line.read(1, meter.profile, poll=("fast", "slow"))
        assert time.monotonic() - started < with_silences / 2


async def test_after_a_silent_unit_the_neighbour_is_paced_as_usual() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=1)
    aq = ModbusDeviceSimulator("jxbs_3001", unit=2)
    meter.offline = True
    async with (
        serve_serial_pty([meter, aq], baudrate=9600) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.2) as line,
    ):
        with pytest.raises(Exception, match="no answer"):
            await line.read(1, meter.profile, poll="fast")
        started = time.monotonic()
        assert await line.read(2, aq.profile) == aq.expected()
        took = time.monotonic() - started
    nine_six = SerialLine(9600)
    wire = nine_six.read_time(plan_requests(aq.profile.registers)[0]) - nine_six.silence
    assert wire <= took < 1.5 * wire + 0.05
