"""Dial-in modems end to end: modem simulators → agent (listening) → real Mosquitto → collector → SQLite.

Two lines: cellular modems with RTU framing that register with a text packet (and send heartbeats),
and one with Modbus TCP framing known by its unit id. Along the way a stranger is refused, a modem
dials again, a modem dies and comes back, and the broker goes down: the store must hold exactly the
readings the devices served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from edge.agent import Agent
from firmware_bridge.simulators.dialin_modem import DialinModem
from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator
from tests.edge.conftest import agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.edge.test_faults import PROFILE, READ_HOLDING, Field, drained
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

LOGIN = b"LOGIN:1001"  # the USR-GPRS232-701 manual's register packet (tests/firmware_bridge/dialin)
HEARTBEAT = b"LOG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def dial(modem: DialinModem, within: float = 10.0) -> DialinModem:
    """Dial in, again until the agent listens."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await modem.start()
            return modem
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def fast_polls(sim: ModbusDeviceSimulator) -> int:
    """Fast polls the device answered (a unit-id probe reads one register: not a poll)."""
    return sum(1 for request in sim.requests if request == (READ_HOLDING, 0, 13))


def dialin_config(rtu_port: int, tcp_port: int) -> dict[str, Any]:
    return {
        "lines": [
            {
                "id": "cell-rtu",
                "kind": "dialin",
                "listen": f"127.0.0.1:{rtu_port}",
                "framing": "rtu",
                "registration": {"kind": "text", "timeout": 2},
                "heartbeat": {"hex": HEARTBEAT.hex()},
                "timeout": 0.5,
            },
            {
                "id": "cell-tcp",
                "kind": "dialin",
                "listen": f"127.0.0.1:{tcp_port}",
                "framing": "tcp",
                "timeout": 0.5,
            },
        ],
        "devices": [
            {
                "id": "aq-r1",
                "profile": PROFILE,
                "line": "cell-rtu",
                "modem": "LOGIN:1001",
                "unit": 1,
                "poll_s": 0.2,
            },
            {
                "id": "aq-r2",
                "profile": PROFILE,
                "line": "cell-rtu",
                "modem": "LOGIN:1001",
                "unit": 2,
                "poll_s": 0.2,
            },
            {"id": "aq-t5", "profile": PROFILE, "line": "cell-tcp", "unit": 5, "poll_s": 0.2},
        ],
    }


@pytest.mark.timeout(180)
async def test_dialin_modems_through_refusal_redial_death_and_outage_lose_nothing(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "firmware_bridge.dialin")
    judge = Field(tmp_path, mosquitto.url, 0)
    judge.sims = {
        "aq-r1": ModbusDeviceSimulator(PROFILE, unit=1, animate=True),
        "aq-r2": ModbusDeviceSimulator(PROFILE, unit=2, values={"pm25": 17.5}),
        "aq-t5": ModbusDeviceSimulator(PROFILE, unit=5, animate=True),
    }
    r1, r2, t5 = judge.sims.values()
    rtu_port, tcp_port = free_port(), free_port()
    judge.collector.start()
    try:
        assert await asyncio.to_thread(judge.collector.wait_subscribed, 15)
        agent = Agent(agent_config(tmp_path, mosquitto.url, **dialin_config(rtu_port, tcp_port)))
        async with watching(mosquitto.url) as watcher, running(agent):
            rtu = await dial(
                DialinModem(
                    "127.0.0.1", rtu_port, [r1, r2], registration=LOGIN, heartbeat=HEARTBEAT, heartbeat_s=0.05
                )
            )
            tcp = await dial(DialinModem("127.0.0.1", tcp_port, [t5], framing="tcp"))
            await watcher.wait_for(
                "readings of all three", lambda: all(readings_of(watcher, d) for d in judge.sims)
            )
            first = readings_of(watcher, "aq-r1")[0]
            assert first.measurement == "air_quality"
            assert first.tags == {"site": "test-site"}

            # A stranger is refused and nothing is polled through it.
            stranger = DialinModem(
                "127.0.0.1", rtu_port, [ModbusDeviceSimulator(PROFILE, unit=1)], registration=b"LOGIN:6666"
            )
            await stranger.start()
            await asyncio.wait_for(stranger.wait_closed(), 5)
            assert stranger.requests == 0
            assert "refused: unknown registration 'LOGIN:6666'" in caplog.text

            # The modem dials again (new socket, same id): the new connection replaces the old.
            again = DialinModem("127.0.0.1", rtu_port, [r1, r2], registration=LOGIN, heartbeat=HEARTBEAT)
            again.heartbeat_before_answer = True  # and it glues a heartbeat to each answer
            await dial(again)
            await asyncio.wait_for(rtu.wait_closed(), 5)
            answered = again.answered
            await watcher.wait_for("polls through the new connection", lambda: again.answered >= answered + 6)

            # Commands reach a device behind a modem through its poller.
            _, profile, poller = agent.commandable("aq-r2")
            assert await poller.submit_priority(lambda line: line.read_fields(2, profile, ["pm25"])) == {
                "pm25": 17.5
            }

            # The TCP modem dies: its device goes offline on health, the others go on; the broker goes too.
            await tcp.stop()
            await watcher.wait_for(
                "aq-t5 offline on health",
                lambda: any(
                    wire.Health.model_validate_json(m.payload).devices["aq-t5"].state
                    is wire.DeviceState.TIMEOUT
                    for m in watcher.on(wire.Channel.HEALTH)
                ),
            )
            health = [wire.Health.model_validate_json(m.payload) for m in watcher.on(wire.Channel.HEALTH)][-1]
            assert "modem unit 5 is not connected" in (health.devices["aq-t5"].error or "")
            mosquitto.stop()
            await asyncio.sleep(2)
            mosquitto.start()
            # It comes back, is known by its unit again, and its readings resume.
            before = fast_polls(t5)
            back = await dial(DialinModem("127.0.0.1", tcp_port, [t5], framing="tcp"))
            await watcher.wait_for("aq-t5 polled again", lambda: fast_polls(t5) >= before + 5, within=20)
            judge.freeze()  # every device offline: nothing is served after the count
            served = {name: fast_polls(sim) for name, sim in judge.sims.items()}
            await drained(agent)
            # A modem hung up mid-poll at most once per device: an answered read whose poll never ended.
            await judge.judge(served, in_flight=2)
            for modem in (again, back):
                await modem.stop()
        states = [
            wire.Health.model_validate_json(m.payload).devices["aq-r1"].state
            for m in watcher.on(wire.Channel.HEALTH)
        ]
        assert wire.DeviceState.CRC_ERROR not in states, "a heartbeat was taken for an answer"
        assert sum(served.values()) >= 30
    finally:
        await asyncio.to_thread(judge.collector.stop)
    assert "modem LOGIN:1001 dialled in again" in caplog.text
