"""Faults on demand: the faulty device reports the right state, its neighbour on the line reads on."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from citygw.contract.wire import DeviceState
from firmware_bridge.errors import (
    DecodeError,
    DeviceCrcError,
    DeviceError,
    DeviceExceptionResponse,
    DeviceTimeout,
)
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.simulators import ModbusDeviceSimulator
from tests.firmware_bridge.lines import TIMEOUT, TRANSPORTS, Transport, line_to


def street() -> tuple[ModbusDeviceSimulator, ModbusDeviceSimulator]:
    """A water meter (unit 1) and its neighbour, a ticket validator (unit 2), on one line."""
    return ModbusDeviceSimulator("tuf_2000m", unit=1), ModbusDeviceSimulator("ticket_validator", unit=2)


async def fails(line: ModbusLine, sim: ModbusDeviceSimulator) -> DeviceError:
    started = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        await line.read(sim.unit, sim.profile)
    assert time.monotonic() - started < TIMEOUT + 0.2  # a fault costs at most one timeout
    return caught.value


async def neighbour_reads(line: ModbusLine, sim: ModbusDeviceSimulator) -> None:
    assert await line.read(sim.unit, sim.profile) == sim.expected()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_offline_device_times_out(transport: Transport) -> None:
    meter, validator = street()
    meter.offline = True
    async with line_to(transport, [meter, validator]) as line:
        error = await fails(line, meter)
        await neighbour_reads(line, validator)
    assert isinstance(error, DeviceTimeout)
    assert error.state is DeviceState.TIMEOUT


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exception_code(transport: Transport) -> None:
    meter, validator = street()
    meter.exception_code = 4
    async with line_to(transport, [meter, validator]) as line:
        error = await fails(line, meter)
        await neighbour_reads(line, validator)
    assert isinstance(error, DeviceExceptionResponse)
    assert (error.code, error.state) == (4, DeviceState.EXCEPTION)


async def test_crc_error_on_the_serial_line() -> None:
    meter, validator = street()
    meter.crc_error = True
    async with line_to("serial", [meter, validator]) as line:
        error = await fails(line, meter)
        await neighbour_reads(line, validator)
    assert isinstance(error, DeviceCrcError)
    assert error.state is DeviceState.CRC_ERROR


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_device_within_the_timeout_is_read(transport: Transport) -> None:
    meter, validator = street()
    meter.delay = TIMEOUT / 3
    async with line_to(transport, [meter, validator]) as line:
        started = time.monotonic()
        assert await line.read(1, meter.profile, poll="fast") == {
            k: v for k, v in meter.expected().items() if meter.profile.register(k).poll == "fast"
        }
        # Every request of the poll waits for the slow device.
        requests = len(meter.requests)
        assert time.monotonic() - started >= requests * meter.delay
        await neighbour_reads(line, validator)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_device_slower_than_the_timeout(transport: Transport) -> None:
    meter, validator = street()
    meter.delay = TIMEOUT * 1.3
    # The neighbour takes its time too, so the meter's late answer arrives while it is being asked:
    # that answer must not be taken for the neighbour's.
    validator.delay = TIMEOUT * 0.5
    async with line_to(transport, [meter, validator]) as line:
        error = await fails(line, meter)
        await neighbour_reads(line, validator)
        await neighbour_reads(line, validator)
    assert isinstance(error, DeviceTimeout)
    assert error.state is DeviceState.TIMEOUT


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_word_swapped_device_is_a_decode_error(transport: Transport) -> None:
    meter, validator = street()
    meter.word_swapped = True
    async with line_to(transport, [meter, validator]) as line:
        error = await fails(line, meter)
        await neighbour_reads(line, validator)
    assert isinstance(error, DecodeError)
    assert error.state is DeviceState.DECODE_ERROR
    assert "flow_rate" in str(error)
    assert "check the word order (CDAB)" in str(error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reboot_is_silent_then_counters_restart(transport: Transport) -> None:
    meter, validator = street()
    async with line_to(transport, [meter, validator]) as line:
        before = await line.read(2, validator.profile)
        meter_before = await line.read(1, meter.profile)
        validator.reboot(downtime=TIMEOUT)
        error = await fails(line, validator)
        assert isinstance(error, DeviceTimeout)
        assert await line.read(1, meter.profile) == meter_before  # the neighbour is not disturbed
        await asyncio.sleep(TIMEOUT)
        after = await line.read(2, validator.profile)
    assert before["taps_resident"] == 18342
    assert after == {
        "taps_resident": 0,
        "taps_student": 0,
        "taps_pupil": 0,
        "taps_concession": 0,
        "status": 0,
    }


async def test_rebooted_counters_grow_again_from_zero() -> None:
    validator = ModbusDeviceSimulator("ticket_validator", animate=True, time_scale=360_000)
    validator.set("taps_student", 900)
    validator.reboot()
    assert validator.get("taps_student") == 0
    await asyncio.sleep(0.05)
    validator.advance()
    assert 0 < validator.get("taps_student") < 900  # type: ignore[operator]
    assert validator.get("status") == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_read_cancelled_while_waiting_leaves_no_stray_error_and_the_line_reads_on(
    transport: Transport,
) -> None:
    """Stopping a poller mid-request (Ctrl-C, a config change) abandons the request quietly."""
    meter, validator = street()
    meter.offline = True
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with line_to(transport, [meter, validator]) as line:
            read = asyncio.create_task(line.read(meter.unit, meter.profile))
            await asyncio.sleep(TIMEOUT / 4)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            await asyncio.sleep(TIMEOUT + 0.3)  # the abandoned request's own timeout has passed
            gc.collect()  # an unretrieved task exception is reported when the task is collected
            await neighbour_reads(line, validator)
    finally:
        loop.set_exception_handler(None)
    assert [str(c.get("message")) for c in reported] == []
