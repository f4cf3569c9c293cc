"""The agent with device overlays, TCP timing quirks and RTU over TCP, against real Mosquitto and sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from citygw.contract import wire
from edge.agent import Agent
from edge.poller import now_ms
from firmware_bridge.errors import DeviceError
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.overlay import ProfileOverlay, apply_overlay
from firmware_bridge.simulators import ModbusDeviceSimulator, TcpEndpoint, serve_tcp
from tests.edge.conftest import AGENT, Watcher, agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def tcp_line(endpoint: TcpEndpoint) -> dict[str, Any]:
    return {"id": "tcp-sim", "kind": "tcp", "host": endpoint.host, "port": endpoint.port, "timeout": 0.3}


def device(device_id: str, profile: str, unit: int, **more: Any) -> dict[str, Any]:
    return {"id": device_id, "profile": profile, "line": "tcp-sim", "unit": unit, "poll_s": 0.2, **more}


async def test_rtu_frames_through_a_serial_server_end_to_end(tmp_path: Path, mosquitto: Mosquitto) -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1, values={"pm25": 17.5})
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    async with serve_tcp([aq, meter], framer="rtu") as server:
        line = {
            "id": "tcp-sim",
            "kind": "rtu",
            "port": f"socket://{server.host}:{server.port}",
            "baudrate": 9600,
            "timeout": 0.3,
        }
        devices = [device("aq-1", "vaisala_aqt530", 1), device("meter-1", "eastron_sdm120", 2)]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[line], devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for(
                "both devices", lambda: bool(readings_of(watcher, "aq-1") and readings_of(watcher, "meter-1"))
            )
    first = readings_of(watcher, "aq-1")[0]
    assert first.fields == aq.expected()
    assert first.fields["pm25"] == 17.5
    assert first.measurement == "air_quality"
    assert readings_of(watcher, "meter-1")[0].fields == meter.expected()


async def test_an_overlay_reads_a_subset_scaled_in_the_devices_word_order(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=1, values={"voltage": 231.5, "current": 0.125})
    meter.word_swapped = True  # this meter's firmware sends its floats word-swapped (CDAB)
    overlay = {
        "fields": ["voltage", "current"],
        "word_order": "CDAB",
        "registers": {"current": {"scale": 40}},  # behind a 200/5 A current transformer
    }
    async with serve_tcp([meter]) as endpoint:
        devices = [device("meter-1", "eastron_sdm120", 1, overlay=overlay)]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[tcp_line(endpoint)], devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("readings", lambda: len(readings_of(watcher, "meter-1")) >= 2)
    assert readings_of(watcher, "meter-1")[0].fields == {"voltage": 231.5, "current": 5.0}
    assert {(address, count) for _, address, count in meter.requests} == {(0x00, 8)}


async def _other_master(
    endpoint: TcpEndpoint, profile: Any, *, wanted: int, within: float
) -> tuple[int, int]:
    """A second client (a vendor's tool) trying to read the device until it read ``wanted`` times or
    ``within`` seconds passed: (reads that got through, attempts)."""
    through = attempts = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while through < wanted and loop.time() < deadline:
        await asyncio.sleep(0.1)
        attempts += 1
        with contextlib.suppress(DeviceError):
            async with ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=0.3) as line:
                await line.read(1, profile)
                through += 1
    return through, attempts


@pytest.mark.parametrize("close", [True, False])
async def test_a_single_slot_device_closed_between_polls_lets_another_master_in(
    tmp_path: Path, mosquitto: Mosquitto, close: bool
) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=1)
    timing = {"connect_delay_s": 0.05, "close_between_polls": close}
    async with serve_tcp([meter], slots=1, deaf_after_connect_s=0.04) as endpoint:
        devices = [device("meter-1", "eastron_sdm120", 1, poll_s=0.3, overlay={"timing": timing})]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[tcp_line(endpoint)], devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("a reading", lambda: bool(readings_of(watcher, "meter-1")))
            patient = apply_overlay(meter.profile, ProfileOverlay(timing={"connect_delay_s": 0.05}))
            through, attempts = await _other_master(endpoint, patient, wanted=3, within=6.0 if close else 1.5)
            await watcher.wait_for("more readings", lambda: len(readings_of(watcher, "meter-1")) >= 3)
            polls = len(readings_of(watcher, "meter-1"))
        seen = endpoint.connections
    assert seen.dropped == 0, "a request left sooner than connect_delay_s after connecting"
    if close:
        assert through == 3
        assert seen.opened >= polls + through  # a connection per poll
    else:
        assert through == 0
        assert seen.refused == attempts
        assert seen.opened == 1 + attempts  # the agent's one connection, held


def dimmer_profile(tmp_path: Path) -> str:
    path = tmp_path / "test_dimmer.yaml"
    profile = {
        "model": "test_dimmer",
        "vendor": "test",
        "measurement": "lighting",
        "source": "modelled for this test",
        "verified": "modelled",
        "registers": [
            {"field": "level", "table": "holding", "address": 10, "type": "u16", "writable": True},
        ],
    }
    path.write_text(yaml.safe_dump(profile))
    return str(path)


async def _command(url: str, watcher: Watcher, field: str, value: int) -> wire.CommandResult:
    now = now_ms()
    body = {
        "agent": AGENT,
        "id": str(uuid.uuid4()),
        "device": "dimmer-1",
        "action": "set_field",
        "field": field,
        "value": value,
        "issued_at": now,
        "expires_at": now + 10_000,
        "requested_by": "engineer-olena",
    }
    port = int(url.rsplit(":", 1)[1])
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"api-{uuid.uuid4().hex[:6]}") as client:
        await client.publish(wire.topic(AGENT, wire.Channel.CMD), json.dumps(body).encode(), qos=1)

    def answered() -> list[wire.CommandResult]:
        messages = watcher.on(wire.Channel.CMD_RESULT)
        found = [wire.CommandResult.model_validate_json(m.payload) for m in messages]
        return [r for r in found if r.id == body["id"]]

    await watcher.wait_for("the command's result", lambda: bool(answered()))
    return answered()[-1]


@pytest.mark.parametrize("overlay", [{"registers": {"level": {"write_function": 16}}}, None])
async def test_a_device_refusing_fc06_is_written_with_fc16_when_its_overlay_says_so(
    tmp_path: Path, mosquitto: Mosquitto, overlay: dict[str, Any] | None
) -> None:
    profile = dimmer_profile(tmp_path)
    dimmer = ModbusDeviceSimulator(profile, unit=1, values={"level": 20})
    dimmer.refused_functions = {6}
    async with serve_tcp([dimmer]) as endpoint:
        extra = {"overlay": overlay} if overlay is not None else {}
        devices = [device("dimmer-1", profile, 1, **extra)]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[tcp_line(endpoint)], devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("a reading", lambda: bool(readings_of(watcher, "dimmer-1")))
            result = await _command(mosquitto.url, watcher, "level", 200)
    writes = [request for request in dimmer.requests if request[0] in (6, 16)]
    if overlay is not None:
        assert (result.outcome, result.value) == (wire.CommandOutcome.DONE, 200)
        assert writes == [(16, 10, 1)]
        assert dimmer.get("level") == 200
    else:
        assert result.outcome is not wire.CommandOutcome.DONE
        assert "exception response 01" in (result.detail or ""), result.detail
        assert writes == [(6, 10, 1)]
        assert dimmer.get("level") == 20


async def test_a_pushed_overlay_is_applied_and_a_bad_one_refused_keeping_the_running_config(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=1, values={"voltage": 229.5, "current": 2.0})
    async with serve_tcp([meter]) as endpoint:
        lines = [tcp_line(endpoint)]
        plain = device("meter-1", "eastron_sdm120", 1)
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=lines, devices=[plain]))

        async def push(version: int, overlay: dict[str, Any]) -> wire.ConfigState:
            body = wire.DesiredConfig(
                agent=AGENT,
                version=version,
                issued_at=now_ms(),
                site="test-site",
                lines=lines,
                devices=[{**plain, "overlay": overlay}],
            )
            port = int(mosquitto.url.rsplit(":", 1)[1])
            async with aiomqtt.Client("127.0.0.1", port, identifier=f"api-{uuid.uuid4().hex[:6]}") as client:
                await client.publish(
                    wire.topic(AGENT, wire.Channel.CONFIG), wire.encode(body), qos=1, retain=True
                )

            def answered() -> list[wire.ConfigState]:
                found = [
                    wire.ConfigState.model_validate_json(m.payload)
                    for m in watcher.on(wire.Channel.CONFIG_STATE)
                ]
                return [state for state in found if state.version == version]

            await watcher.wait_for(f"v{version}'s state", lambda: bool(answered()))
            return answered()[-1]

        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("a reading", lambda: bool(readings_of(watcher, "meter-1")))
            refused = await push(1, {"fields": ["voltage", "amps"]})
            assert refused.state is wire.ConfigOutcome.REFUSED
            assert refused.reasons == [
                "config v1: devices[0].overlay.fields[1]: device 'meter-1': profile eastron_sdm120 has "
                "no field 'amps'; fix: use field names of profile eastron_sdm120: voltage, current, "
                "total_power, power_factor, frequency, import_energy_kwh, export_energy_kwh, total_energy_kwh"
            ]
            before = len(readings_of(watcher, "meter-1"))
            await watcher.wait_for(
                "readings go on", lambda: len(readings_of(watcher, "meter-1")) > before + 2
            )
            assert set(readings_of(watcher, "meter-1")[-1].fields) >= {"voltage", "total_power"}

            applied = await push(
                2, {"fields": ["voltage", "current"], "registers": {"current": {"scale": 40}}}
            )
            assert applied.state is wire.ConfigOutcome.APPLIED
            await watcher.wait_for(
                "overlaid readings",
                lambda: set(readings_of(watcher, "meter-1")[-1].fields) == {"voltage", "current"},
            )
    assert readings_of(watcher, "meter-1")[-1].fields == {"voltage": 229.5, "current": 80.0}
