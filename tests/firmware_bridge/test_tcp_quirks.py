"""Device quirks over real sockets: FC16-only writes, a gateway deaf just after connect, single-slot
connections closed between polls, and RTU frames through a serial server (``socket://``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from firmware_bridge.errors import DeviceExceptionResponse, DeviceTimeout
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import Profile, load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator, TcpEndpoint, serve_tcp

TIMEOUT = 0.3
ILLEGAL_FUNCTION = 0x01


def dimmer(**changes: Any) -> Profile:
    """A street-light dimmer with a one-register setpoint and its actual level (modelled)."""
    data: dict[str, Any] = {
        "model": "test_dimmer",
        "vendor": "test",
        "measurement": "lighting",
        "source": "modelled for this test",
        "verified": "modelled",
        "registers": [
            {
                "field": "level",
                "table": "holding",
                "address": 10,
                "type": "u16",
                "writable": True,
                "min": 0,
                "max": 254,
            },
            {"field": "power", "table": "holding", "address": 11, "type": "u16", "unit": "W", "scale": 0.1},
        ],
    }
    data.update(changes)
    return Profile.model_validate(data)


def tcp_line(endpoint: TcpEndpoint) -> ModbusLine:
    return ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT)


async def test_a_profile_saying_write_function_16_writes_one_register_with_fc16() -> None:
    profile = dimmer(write_function=16)
    sim = ModbusDeviceSimulator(profile, unit=3)
    async with serve_tcp([sim]) as endpoint, tcp_line(endpoint) as line:
        assert await line.write(3, profile, "level", 120) == 120
    writes = [r for r in sim.requests if r[0] in (6, 16)]
    assert writes == [(16, 10, 1)]
    assert sim.get("level") == 120


async def test_a_field_saying_write_function_16_wins_over_the_profile() -> None:
    base = dimmer()
    registers = [r.model_dump() for r in base.registers]
    registers[0]["write_function"] = 16
    profile = dimmer(registers=registers)
    sim = ModbusDeviceSimulator(profile, unit=3)
    async with serve_tcp([sim]) as endpoint, tcp_line(endpoint) as line:
        await line.write(3, profile, "level", 7)
    assert [r for r in sim.requests if r[0] in (6, 16)] == [(16, 10, 1)]


async def test_a_device_that_takes_fc16_only_refuses_fc06() -> None:
    """What happens without write_function: the device answers ILLEGAL FUNCTION and keeps its value."""
    sim = ModbusDeviceSimulator(dimmer(write_function=16), unit=3, values={"level": 50})
    async with serve_tcp([sim]) as endpoint, tcp_line(endpoint) as line:
        with pytest.raises(DeviceExceptionResponse) as refused:
            await line.write(3, dimmer(), "level", 120)
    assert refused.value.code == ILLEGAL_FUNCTION
    assert sim.get("level") == 50


async def test_connect_delay_waits_for_a_gateway_deaf_after_connecting() -> None:
    sim = ModbusDeviceSimulator(dimmer(), unit=1, values={"level": 9})
    patient = dimmer(timing={"connect_delay_s": 0.4})
    async with serve_tcp([sim], deaf_after_connect_s=0.3) as endpoint:
        async with tcp_line(endpoint) as line:
            with pytest.raises(DeviceTimeout):
                await line.read(1, dimmer())  # the first request arrives too soon and is dropped
        assert endpoint.connections.dropped == 1
        async with tcp_line(endpoint) as line:
            assert (await line.read(1, patient))["level"] == 9
            assert (await line.read(1, patient))["level"] == 9  # later requests do not wait again
        assert endpoint.connections.dropped == 1


async def test_a_closed_connection_is_opened_again_by_the_next_request() -> None:
    sim = ModbusDeviceSimulator(dimmer(), unit=1)
    async with serve_tcp([sim], slots=1) as endpoint, tcp_line(endpoint) as line:
        await line.read(1, sim.profile)
        await line.close_connection()
        await _until(lambda: endpoint.connections.open_now == 0)
        async with tcp_line(endpoint) as other:  # another master takes the single slot meanwhile
            assert await other.read(1, sim.profile) == sim.expected()
        await _until(lambda: endpoint.connections.open_now == 0)
        assert await line.read(1, sim.profile) == sim.expected()
        assert (endpoint.connections.opened, endpoint.connections.refused) == (3, 0)


@pytest.mark.parametrize("name", ["eastron_sdm120", "vaisala_aqt530", "eastron_sdm630"])
async def test_rtu_frames_through_a_serial_server(name: str) -> None:
    profile = load_profile(name)
    sim = ModbusDeviceSimulator(profile, unit=5)
    async with (
        serve_tcp([sim], framer="rtu") as endpoint,
        ModbusLine.rtu_over_tcp(
            host=endpoint.host, port=endpoint.port, baudrate=9600, timeout=TIMEOUT
        ) as line,
    ):
        assert await line.read(5, profile) == sim.expected()
        with pytest.raises(DeviceTimeout):  # no device 6 on the server's bus: silence, as on RS-485
            await line.read(6, profile)


async def test_modbus_tcp_framing_is_not_rtu_framing() -> None:
    """The framer matters: a Modbus TCP client gets no answer it can use from a serial server."""
    sim = ModbusDeviceSimulator(dimmer(), unit=5)
    async with serve_tcp([sim], framer="rtu") as endpoint, tcp_line(endpoint) as line:
        with pytest.raises(DeviceTimeout):
            await line.read(5, sim.profile)


async def _until(check: Any, within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("register", "words"),
    [
        ({"type": "u32", "write_function": 6}, "FC06 writes one register and a u32 takes 2"),
        ({"writable": False, "write_function": 16}, "write_function is for writable holding registers"),
    ],
)
def test_a_write_function_that_cannot_work_is_refused(register: dict[str, Any], words: str) -> None:
    registers = [{"field": "level", "table": "holding", "address": 10, "type": "u16", "writable": True}]
    registers[0].update(register)
    with pytest.raises(ValueError, match=words):
        dimmer(registers=registers)
