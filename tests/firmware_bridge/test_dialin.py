"""Dial-in modems against the listener: registration, heartbeats, reconnects, garbage, unit-id probing.

The modems are ``DialinModem`` simulators speaking real RTU / Modbus TCP frames (pymodbus framers)
over real TCP connections; the packets are the manuals' examples in dialin/packets.yaml.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from firmware_bridge.dialin import DialinListener, Registrations, UnitProbe, modem_name
from firmware_bridge.errors import DeviceCrcError, DeviceTimeout, LineUnavailable
from firmware_bridge.planner import plan_reads
from firmware_bridge.simulators.dialin_modem import DialinModem
from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator

PROFILE = "vaisala_aqt530"
PACKETS = yaml.safe_load((Path(__file__).parent / "dialin" / "packets.yaml").read_text())
LOGIN = bytes.fromhex(PACKETS["usr_gprs232_701_register"]["hex"])  # "LOGIN:1001"
LOG = bytes.fromhex(PACKETS["usr_gprs232_701_heartbeat"]["hex"])  # "LOG", a prefix of it
IMEI = bytes.fromhex(PACKETS["irtu_imei_register"]["hex"])


async def until(what: str, check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_registration_wins_over_a_heartbeat_that_is_its_prefix() -> None:
    known = Registrations({LOGIN: "LOGIN:1001", IMEI: "imei"}, heartbeat=LOG)
    assert known.match(LOGIN) == ("LOGIN:1001", len(LOGIN))
    assert known.match(LOG + LOG + LOGIN + b"\r\n\x01\x03") == ("LOGIN:1001", 2 * len(LOG) + len(LOGIN) + 2)
    assert known.match(LOGIN[:4]) == (None, 0)  # more may come
    assert known.match(IMEI[:7]) == (None, 0)
    assert known.match(IMEI) == ("imei", 15)


def test_an_unknown_registration_is_named() -> None:
    known = Registrations({LOGIN: "LOGIN:1001"}, heartbeat=LOG)
    with pytest.raises(ValueError, match="unknown registration 'LOGIN:9999'"):
        known.match(b"LOGIN:9999")
    with pytest.raises(ValueError, match="unknown registration 'LOGIN:10'"):
        known.match(b"LOGIN:10", final=True)  # nothing more came before the deadline
    with pytest.raises(ValueError, match="9c a5 25"):
        Registrations({LOGIN: "x"}).match(bytes.fromhex("9CA525F01B3C"))


def rtu_listener(**kw: object) -> DialinListener:
    packets = {LOGIN: "LOGIN:1001", IMEI: "356307042441013"}
    return DialinListener("127.0.0.1", 0, framing="rtu", packets=packets, heartbeat=LOG, **kw)  # type: ignore[arg-type]


async def test_two_modems_with_the_same_unit_are_read_apart() -> None:
    one = ModbusDeviceSimulator(PROFILE, unit=1, values={"pm25": 11.0})
    two = ModbusDeviceSimulator(PROFILE, unit=1, values={"pm25": 22.0})
    async with rtu_listener() as listener:
        modems = [
            DialinModem(
                "127.0.0.1", listener.port, [one], registration=LOGIN, heartbeat=LOG, heartbeat_s=0.02
            ),
            DialinModem("127.0.0.1", listener.port, [two], registration=IMEI),
        ]
        for modem in modems:
            await modem.start()
        await until("both registered", lambda: all(m.connection for m in listener.modems.values()))
        async with (
            listener.modems["LOGIN:1001"].modbus_line(timeout=1.0) as first,
            listener.modems["356307042441013"].modbus_line(timeout=1.0) as second,
        ):
            for _ in range(5):  # heartbeats keep arriving between the answers
                assert await first.read(1, one.profile) == one.expected()
                assert await second.read(1, two.profile) == two.expected()
                await asyncio.sleep(0.03)
        assert listener.heartbeats > 0
        for modem in modems:
            await modem.stop()


async def test_unknown_registration_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "firmware_bridge.dialin")
    async with rtu_listener() as listener:
        stranger = DialinModem("127.0.0.1", listener.port, [], registration=b"LOGIN:6666")
        await stranger.start()
        await asyncio.wait_for(stranger.wait_closed(), 3.0)  # the agent hung up
        assert listener.refused == 1
        assert not any(m.connection for m in listener.modems.values())
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert "127.0.0.1:" in record.getMessage()
    assert "'LOGIN:6666'" in record.getMessage()


async def test_a_silent_connection_is_refused_after_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "firmware_bridge.dialin")
    async with rtu_listener(identify_timeout=0.2) as listener:
        mute = DialinModem("127.0.0.1", listener.port, [])
        await mute.start()
        await asyncio.wait_for(mute.wait_closed(), 3.0)
    assert "no registration packet: it sent nothing within 0.2 s" in caplog.text


async def test_a_modem_that_dials_again_replaces_its_connection() -> None:
    sim = ModbusDeviceSimulator(PROFILE, unit=3)
    async with rtu_listener() as listener:
        modem = listener.modems["LOGIN:1001"]
        first = DialinModem("127.0.0.1", listener.port, [sim], registration=LOGIN)
        await first.start()
        await until("registered", lambda: modem.connection is not None)
        async with modem.modbus_line(timeout=1.0) as line:
            assert await line.read(3, sim.profile) == sim.expected()
            again = DialinModem("127.0.0.1", listener.port, [sim], registration=LOGIN)  # new socket, same id
            await again.start()
            await until("replaced", lambda: modem.connections == 2)
            await asyncio.wait_for(first.wait_closed(), 3.0)  # the old connection is closed
            sim.set("pm25", 33.0)
            assert await line.read(3, sim.profile) == sim.expected()
            assert again.answered >= 1
        await again.stop()


async def test_garbage_before_an_answer_and_a_dropped_connection_are_clear_errors() -> None:
    sim = ModbusDeviceSimulator(PROFILE, unit=1)
    async with rtu_listener() as listener:
        modem = listener.modems["LOGIN:1001"]
        dtu = DialinModem("127.0.0.1", listener.port, [sim], registration=LOGIN, heartbeat=LOG)
        await dtu.start()
        await until("registered", lambda: modem.connection is not None)
        async with modem.modbus_line(timeout=0.5) as line:
            dtu.heartbeat_before_answer = True  # heartbeat glued to the answer: dropped, answer read
            assert await line.read(1, sim.profile) == sim.expected()
            dtu.heartbeat_before_answer = False
            dtu.garbage_before_answer = b"\xff\x00\x13\x37"
            with pytest.raises(DeviceCrcError, match="corrupted answer"):  # noise glued to a frame: no answer
                await line.read(1, sim.profile)
            assert await line.read(1, sim.profile) == sim.expected()  # and the next read is clean
            dtu.drop_on_request = True
            with pytest.raises(LineUnavailable, match=r"connection lost"):
                await line.read(1, sim.profile)
            with pytest.raises(LineUnavailable, match="modem LOGIN:1001 is not connected"):
                await line.read(1, sim.profile)
            back = DialinModem("127.0.0.1", listener.port, [sim], registration=LOGIN)
            await back.start()
            await until("back", lambda: modem.connection is not None)
            assert await line.read(1, sim.profile) == sim.expected()
            await back.stop()


async def test_without_registration_the_unit_that_answers_names_the_modem() -> None:
    meters = [ModbusDeviceSimulator(PROFILE, unit=n) for n in (4, 7)]
    probes = {
        modem_name(s.unit): UnitProbe(s.unit, plan_reads(s.profile, ("fast", "slow"))[0]) for s in meters
    }
    async with DialinListener("127.0.0.1", 0, framing="tcp", probes=probes, probe_timeout=0.3) as listener:
        modems = [DialinModem("127.0.0.1", listener.port, [s], framing="tcp") for s in reversed(meters)]
        for modem in modems:
            await modem.start()
        await until("both bound", lambda: all(m.connection for m in listener.modems.values()))
        for sim in meters:
            async with listener.modems[modem_name(sim.unit)].modbus_line(timeout=1.0) as line:
                assert await line.read(sim.unit, sim.profile) == sim.expected()
        nobody = DialinModem(
            "127.0.0.1", listener.port, [ModbusDeviceSimulator(PROFILE, unit=9)], framing="tcp"
        )
        await nobody.start()
        await asyncio.wait_for(nobody.wait_closed(), 5.0)
        assert listener.refused == 1
        for modem in modems:
            await modem.stop()


async def test_a_silent_modem_times_out_and_its_dead_link_is_closed() -> None:
    sim = ModbusDeviceSimulator(PROFILE, unit=1)
    async with rtu_listener() as listener:
        modem = listener.modems["LOGIN:1001"]
        dtu = DialinModem("127.0.0.1", listener.port, [sim], registration=LOGIN)
        await dtu.start()
        await until("registered", lambda: modem.connection is not None)
        async with modem.modbus_line(timeout=0.1) as line:
            dtu.silent = True  # the cellular link died without a FIN: requests vanish
            for _ in range(5):
                with pytest.raises(DeviceTimeout, match=r"no answer within 0\.1 s"):
                    await line.read(1, sim.profile)
            await asyncio.wait_for(dtu.wait_closed(), 2.0)  # closed after five unanswered requests
            assert dtu.requests == 5
            assert modem.connection is None
