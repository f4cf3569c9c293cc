"""ModbusLine over a serial line (a pseudo-terminal) against the simulators, as on an RS-485 bus."""

from __future__ import annotations

import time

import pytest

from citygw.contract.wire import DeviceState
from firmware_bridge.errors import DeviceCrcError, DeviceExceptionResponse, DeviceTimeout, LineUnavailable
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import available_profiles
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty

TIMEOUT = 0.3


async def test_every_shipped_profile_reads_exactly_on_one_bus() -> None:
    sims = [ModbusDeviceSimulator(name, unit=i + 1) for i, name in enumerate(available_profiles())]
    async with serve_serial_pty(sims) as port:
        assert port.startswith("/dev/")
        async with ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line:
            for sim in sims:
                assert await line.read(sim.unit, sim.profile) == sim.expected(), sim.profile.model


async def test_silent_unit_times_out_and_the_bus_carries_on() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=3)
    aq = ModbusDeviceSimulator("jxbs_3001", unit=4)
    meter.offline = True
    async with (
        serve_serial_pty([meter, aq]) as port,
        ModbusLine.rtu(port=port, baudrate=2400, timeout=TIMEOUT) as line,
    ):
        started = time.monotonic()
        with pytest.raises(DeviceTimeout) as caught:
            await line.read(3, meter.profile)
        # The line waits the device's turnaround plus the request's own wire time at 2400 baud.
        assert line.serial is not None
        wire = line.serial.read_time(line.plan(3, meter.profile)[0])
        assert TIMEOUT + wire <= time.monotonic() - started < TIMEOUT + wire + 0.2
        assert caught.value.state is DeviceState.TIMEOUT
        assert await line.read(4, aq.profile) == aq.expected()
        with pytest.raises(DeviceTimeout):
            await line.read(99, aq.profile)  # nobody on the bus has this address


async def test_exception_response_over_rtu() -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530")
    aq.exception_code = 6
    async with (
        serve_serial_pty([aq]) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line,
    ):
        with pytest.raises(DeviceExceptionResponse, match="06 server device busy"):
            await line.read(1, aq.profile)


async def test_wrong_crc_is_reported_as_crc_error() -> None:
    aq = ModbusDeviceSimulator("jxbs_3001")
    aq.crc_error = True
    async with (
        serve_serial_pty([aq]) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line,
    ):
        with pytest.raises(DeviceCrcError, match="CRC") as caught:
            await line.read(1, aq.profile)
        assert caught.value.state is DeviceState.CRC_ERROR
        aq.crc_error = False
        assert await line.read(1, aq.profile) == aq.expected()


async def test_write_over_rtu_reads_back() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    async with (
        serve_serial_pty([meter]) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line,
    ):
        assert await line.write(1, meter.profile, "demand_period_min", 30) == 30.0
    assert meter.get("demand_period_min") == 30.0


async def test_missing_port_is_line_unavailable() -> None:
    async with ModbusLine.rtu(port="/dev/does-not-exist", baudrate=9600, timeout=TIMEOUT) as line:
        with pytest.raises(LineUnavailable, match="line unavailable"):
            await line.read(1, ModbusDeviceSimulator("jxbs_3001").profile)
