"""Remote config and commands on a real Mosquitto, with simulated devices (ECOdim DALI gateway)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from edge.agent import Agent
from edge.commands import dali_arc_level, dali_percent, holds
from edge.poller import now_ms
from firmware_bridge import dali
from firmware_bridge.profile import PROFILES_DIR, load_profile
from firmware_bridge.simulators import DaliGatewaySimulator, ModbusDeviceSimulator, serve_tcp
from tests.edge.conftest import AGENT, Watcher, agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def line(port: int, line_id: str = "tcp-sim", timeout: float = 0.2) -> dict[str, Any]:
    return {"id": line_id, "kind": "tcp", "host": "127.0.0.1", "port": port, "timeout": timeout}


def device(device_id: str, profile: str, unit: int, line_id: str = "tcp-sim") -> dict[str, Any]:
    return {"id": device_id, "profile": profile, "line": line_id, "unit": unit, "poll_s": 0.2}


async def say(url: str, channel: wire.Channel, payload: bytes, *, retain: bool = False) -> None:
    port = int(url.rsplit(":", 1)[1])
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"api-{uuid.uuid4().hex[:6]}") as client:
        await client.publish(wire.topic(AGENT, channel), payload, qos=1, retain=retain)


def desired(version: int, lines: list[dict[str, Any]], devices: list[dict[str, Any]]) -> bytes:
    return wire.encode(
        wire.DesiredConfig(
            agent=AGENT, version=version, issued_at=now_ms(), site="test-site", lines=lines, devices=devices
        )
    )


def states(watcher: Watcher) -> list[wire.ConfigState]:
    return [wire.ConfigState.model_validate_json(m.payload) for m in watcher.on(wire.Channel.CONFIG_STATE)]


def results(watcher: Watcher) -> list[wire.CommandResult]:
    return [wire.CommandResult.model_validate_json(m.payload) for m in watcher.on(wire.Channel.CMD_RESULT)]


async def test_remote_config_applied_refused_redelivered_rolled_back_and_kept(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    async with serve_tcp([aq]) as aq_end, serve_tcp([meter]) as meter_end:
        file_lines = [line(aq_end.port)]
        file_devices = [device("aq-1", "vaisala_aqt530", 1)]
        config = agent_config(
            tmp_path, mosquitto.url, lines=file_lines, devices=file_devices, remote={"grace_s": 1.5}
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("aq readings", lambda: bool(readings_of(watcher, "aq-1")))
            aq_task = agent._lines["tcp-sim"][1]

            # v1 adds a meter on a new line; the aq line keeps running untouched.
            v1_lines = [*file_lines, line(meter_end.port, "tcp-meter")]
            v1_devices = [*file_devices, device("meter-1", "eastron_sdm120", 2, "tcp-meter")]
            await say(mosquitto.url, wire.Channel.CONFIG, desired(1, v1_lines, v1_devices), retain=True)
            await watcher.wait_for("v1 applied", lambda: len(states(watcher)) == 1)
            assert states(watcher)[0].state is wire.ConfigOutcome.APPLIED
            assert states(watcher)[0].applied_version == 1
            assert agent._lines["tcp-sim"][1] is aq_task, "an untouched line must not restart"
            # The meter's first reading may still be crossing the broker when `applied` arrives.
            await watcher.wait_for("meter readings", lambda: bool(readings_of(watcher, "meter-1")))

            # v2 names a line that does not exist: refused with file/field/fix reasons.
            bad = [*v1_devices, device("meter-2", "eastron_sdm120", 3, "nowhere")]
            await say(mosquitto.url, wire.Channel.CONFIG, desired(2, v1_lines, bad), retain=True)
            await watcher.wait_for("v2 refused", lambda: len(states(watcher)) == 2)
            refused = states(watcher)[1]
            assert (refused.version, refused.state, refused.applied_version) == (
                2,
                wire.ConfigOutcome.REFUSED,
                1,
            )
            assert refused.reasons == [
                "config v2: devices[2].line: unknown line 'nowhere'; defined lines: tcp-sim, tcp-meter; "
                "fix: use one of them"
            ]

            # v3 points the meter at a unit that does not answer: rolled back after the grace period.
            wrong_unit = [*file_devices, device("meter-1", "eastron_sdm120", 9, "tcp-meter")]
            await say(mosquitto.url, wire.Channel.CONFIG, desired(3, v1_lines, wrong_unit), retain=True)
            await watcher.wait_for("v3 rolled back", lambda: len(states(watcher)) == 3, within=10)
            rolled = states(watcher)[2]
            assert (rolled.state, rolled.applied_version) == (wire.ConfigOutcome.ROLLED_BACK, 1)
            assert "meter-1" in rolled.reasons[0]
            served = len(meter.requests)
            await asyncio.sleep(0.6)
            assert len(meter.requests) > served, "the meter is polled again with the v1 settings"
            assert agent.config.devices[1].unit == 2

            # A redelivery of v3 (the retained message on a new subscription) changes nothing.
            await say(mosquitto.url, wire.Channel.CONFIG, desired(3, v1_lines, wrong_unit), retain=True)
            await asyncio.sleep(0.5)
            assert len(states(watcher)) == 3
            status = wire.Status.model_validate_json(watcher.on(wire.Channel.STATUS)[-1].payload)
            assert status.config_version == 1

        # Restarted without a broker, the agent runs the kept v1, not the file.
        mosquitto.stop()
        again = Agent(config)
        async with running(again):
            assert [d.id for d in again.config.devices] == ["aq-1", "meter-1"]
            assert set(again._lines) == {"tcp-sim", "tcp-meter"}


def command(action: str, **kw: Any) -> dict[str, Any]:
    now = now_ms()
    return {
        "agent": AGENT,
        "id": str(uuid.uuid4()),
        "device": "lights-1",
        "action": action,
        "issued_at": now,
        "expires_at": now + 10_000,
        "requested_by": "engineer-olena",
        **kw,
    }


async def test_lighting_commands_on_the_dali_gateway(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gateway = DaliGatewaySimulator(unit=1, fade_s=0.3)
    async with serve_tcp([gateway]) as endpoint:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            lines=[line(endpoint.port)],
            devices=[device("lights-1", "ecodim_dali_gw2", 1)],
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("readings", lambda: bool(readings_of(watcher, "lights-1")))

            async def send(body: dict[str, Any], count: int) -> wire.CommandResult:
                await say(mosquitto.url, wire.Channel.CMD, json.dumps(body).encode())
                await watcher.wait_for(f"result {count}", lambda: len(results(watcher)) == count)
                result = results(watcher)[-1]
                assert result.id == body["id"]
                return result

            dim = command("dim", target={"kind": "group", "address": 1}, level=50)
            result = await send(dim, 1)
            # A group reports no level of its own (its brightness register is write-only): its fault
            # register is what there is to read.
            assert (result.outcome, result.level, result.value) == (wire.CommandOutcome.DONE, None, None)
            assert result.read == {"group1_fault": 0}
            assert gateway.get("group1_brightness") == 229

            lamp = command("dim", target={"kind": "lamp", "address": 1}, level=50)
            result = await send(lamp, 2)
            # Half the light is arc level 229 on DALI's logarithmic curve (127 would give 3 %); the level
            # read at the lamp once its 0.3 s fade is over is what that arc level gives: 50.5 %.
            assert (result.outcome, result.level, result.value) == (wire.CommandOutcome.DONE, 51, 229)
            assert result.read == {"lamp1_level": 229, "lamp1_status": dali.LAMP_ON}

            off = command("off", target={"kind": "lamp", "address": 2})
            assert (await send(off, 3)).outcome is wire.CommandOutcome.DONE
            assert gateway.get("lamp2_brightness") == 0

            field = command("set_field", field="lamp3_brightness", value=200)
            result = await send(field, 4)
            assert (result.outcome, result.value) == (wire.CommandOutcome.DONE, 200)

            too_bright = command("set_field", field="lamp3_brightness", value=300)
            result = await send(too_bright, 5)
            assert result.outcome is wire.CommandOutcome.REFUSED
            assert "outside 0.0..254.0" in (result.detail or "")
            read_only = command("set_field", field="bus_load", value=3)
            assert (await send(read_only, 6)).outcome is wire.CommandOutcome.REFUSED
            no_lamp = command("on", target={"kind": "lamp", "address": 40})
            assert "no field lamp40_brightness" in ((await send(no_lamp, 7)).detail or "")

            late = command("on", target={"kind": "lamp", "address": 2})
            late["expires_at"] = now_ms() - 1
            assert (await send(late, 8)).outcome is wire.CommandOutcome.EXPIRED
            assert gateway.get("lamp2_brightness") == 0, "an expired command never runs"

            # The same id again: answered with the first result, not run again.
            gateway.set("group1_brightness", 10)
            again = await send(dim, 9)
            assert again == results(watcher)[0]
            assert gateway.get("group1_brightness") == 10

            not_json = b'{"id": "0123456789", "action": "on"'
            await say(mosquitto.url, wire.Channel.CMD, not_json)
            incomplete = command("dim", target={"kind": "cabinet"})
            result = await send(incomplete, 10)
            assert result.outcome is wire.CommandOutcome.REFUSED
            assert "dim needs a level" in (result.detail or "")

        # Ids are remembered across a restart: a redelivery after a reboot is not run again.
        again_agent = Agent(config)
        async with watching(mosquitto.url, client_id="w2") as watcher2, running(again_agent):
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(dim).encode())
            await watcher2.wait_for("result", lambda: bool(results(watcher2)))
            assert results(watcher2)[0].ts == results(watcher)[0].ts
            assert gateway.get("group1_brightness") == 10


def quick_settling_gateway(tmp_path: Path, settle_ms: int) -> Path:
    """The shipped DALI GW2 profile with a shorter settle time, so that a test need not wait 6 s."""
    shipped = PROFILES_DIR / "ecodim_dali_gw2.yaml"
    text = shipped.read_text(encoding="utf-8").replace("settle_ms: 6000", f"settle_ms: {settle_ms}")
    assert f"settle_ms: {settle_ms}" in text
    path = tmp_path / "ecodim_dali_gw2.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def lamp_results(
    tmp_path: Path, url: str, gateway: DaliGatewaySimulator, profile: str, bodies: list[dict[str, Any]]
) -> list[tuple[wire.CommandResult, float]]:
    """Each command sent in turn to an agent polling ``gateway``: its result and how long it took."""
    async with serve_tcp([gateway]) as endpoint:
        config = agent_config(
            tmp_path, url, lines=[line(endpoint.port)], devices=[device("lights-1", profile, 1)]
        )
        async with watching(url) as watcher, running(Agent(config)):
            await watcher.wait_for("readings", lambda: bool(readings_of(watcher, "lights-1")))
            answered = []
            for n, body in enumerate(bodies, start=1):
                started = asyncio.get_running_loop().time()
                await say(url, wire.Channel.CMD, json.dumps(body).encode())
                await watcher.wait_for(f"result {n}", lambda n=n: len(results(watcher)) == n, within=15)
                answered.append((results(watcher)[-1], asyncio.get_running_loop().time() - started))
            return answered


async def test_a_lamp_command_is_judged_by_what_the_lamp_reports(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Not the set point: the actual level after the fade, and the DALI status byte's failure bits."""
    gateway = DaliGatewaySimulator(unit=1, fade_s=0.8, values={"lamp0_brightness": 0, "lamp2_brightness": 0})
    gateway.fail(1)  # lamp 1's LED module is dead
    gateway.fail(3, ballast=True)
    on = [command("on", target={"kind": "lamp", "address": lamp}) for lamp in (0, 1, 3)]
    off = command("off", target={"kind": "lamp", "address": 1})
    (faded, took), (dark, _), (no_gear, _), (off_dark, _) = await lamp_results(
        tmp_path, mosquitto.url, gateway, "ecodim_dali_gw2", [*on, off]
    )
    # Lamp 0 fades from 0 to 254 in 0.8 s: answered done once the lamp is there, not at the write.
    assert (faded.outcome, faded.value, faded.level) == (wire.CommandOutcome.DONE, 254, 100)
    assert faded.read == {"lamp0_level": 254, "lamp0_status": dali.LAMP_ON}
    assert 0.8 <= took < 5.0, took
    # A failed lamp or ballast: written, but dark; the result says what was read at the lamp.
    assert (dark.outcome, dark.value, dark.level) == (wire.CommandOutcome.DONE_BUT_DARK, 0, 0)
    assert dark.read == {"lamp1_level": 0, "lamp1_status": dali.LAMP_FAIL}
    assert dark.detail == "lamp1: lamp failure (status 2), level 0"
    assert no_gear.outcome is wire.CommandOutcome.DONE_BUT_DARK
    assert no_gear.detail == "lamp3: ballast failure (status 1), level 0"
    assert (6, 3005, 1) in gateway.requests, "lamp 1's set point was written all the same"
    # Off is what a failed lamp can do: done.
    assert (off_dark.outcome, off_dark.value) == (wire.CommandOutcome.DONE, 0)


async def test_a_lamp_that_does_not_reach_its_level_within_the_settle_time_fails(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    profile = quick_settling_gateway(tmp_path, settle_ms=600)
    gateway = DaliGatewaySimulator(
        load_profile(profile), unit=1, fade_s=30, values={"lamp0_brightness": 0, "lamp2_brightness": 100}
    )
    gateway.fail(2)
    on = command("on", target={"kind": "lamp", "address": 0})
    dim = command("dim", target={"kind": "cabinet"}, level=50)
    (slow, took), (cabinet, _) = await lamp_results(tmp_path, mosquitto.url, gateway, str(profile), [on, dim])
    assert slow.outcome is wire.CommandOutcome.FAILED
    assert 0.6 <= took < 5.0, took
    level = slow.read["lamp0_level"] if slow.read else None
    assert isinstance(level, int)
    assert 0 < level < 254, "read while still fading"
    assert slow.detail == f"lamp0_level reads {level} after writing 254"
    # A cabinet: one lamp still fading (failed) beats one dark (done_but_dark); every lamp is named.
    assert cabinet.outcome is wire.CommandOutcome.FAILED
    assert cabinet.read is not None
    assert cabinet.read["lamp2_status"] == dali.LAMP_FAIL
    assert "lamp2: lamp failure (status 2), level 0" in (cabinet.detail or "")
    assert "lamp0_level reads" in (cabinet.detail or "")


async def test_commands_on_a_line_that_restarts_are_answered_failed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A new config restarts the line while one command is on the wire and one waits: both are answered."""
    gateway = ModbusDeviceSimulator("ecodim_dali_gw2", unit=1)
    async with serve_tcp([gateway]) as endpoint:

        def config(timeout: float) -> AgentConfig:
            return agent_config(
                tmp_path,
                mosquitto.url,
                lines=[line(endpoint.port, timeout=timeout)],
                devices=[device("lights-1", "ecodim_dali_gw2", 1)],
            )

        agent = Agent(config(5.0))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("readings", lambda: bool(readings_of(watcher, "lights-1")))
            gateway.delay = 2.0  # a slow answer: the write stays on the wire
            on_wire = command("set_field", field="lamp3_brightness", value=200)
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(on_wire).encode())
            await watcher.wait_for("the write on the wire", lambda: any(r[0] == 6 for r in gateway.requests))
            waiting = command("off", target={"kind": "lamp", "address": 2})
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(waiting).encode())
            await asyncio.sleep(0.3)  # queued behind the write

            assert agent.reconfigure(config(4.0)) == {"tcp-sim"}
            await watcher.wait_for("both results", lambda: len(results(watcher)) == 2, within=3)
            by_id = {r.id: r for r in results(watcher)}
            assert by_id[on_wire["id"]].outcome is wire.CommandOutcome.FAILED
            assert "line restarted while the command was on the wire" in (by_id[on_wire["id"]].detail or "")
            assert by_id[waiting["id"]].outcome is wire.CommandOutcome.FAILED
            assert "line restarted before the command ran; not run" in (by_id[waiting["id"]].detail or "")

            # Redelivered, each is answered with its result: the ids are no longer running.
            gateway.delay = 0.0
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(on_wire).encode())
            await watcher.wait_for("the redelivery answered", lambda: len(results(watcher)) == 3)
            assert results(watcher)[2] == by_id[on_wire["id"]]


async def test_a_push_to_a_device_polled_every_15_min_is_verified_at_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A restarted line reads each device once at once, then keeps its phase (aq-1 at 900 s: ~471 s in)."""
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    async with serve_tcp([aq]) as endpoint:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            lines=[line(endpoint.port)],
            devices=[device("aq-1", "vaisala_aqt530", 1)],
            remote={"grace_s": 1.5},
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("aq readings", lambda: bool(readings_of(watcher, "aq-1")))
            every_15_min = [{**device("aq-1", "vaisala_aqt530", 1), "poll_s": 900}]
            await say(mosquitto.url, wire.Channel.CONFIG, desired(1, [line(endpoint.port)], every_15_min))
            await watcher.wait_for("v1", lambda: len(states(watcher)) == 1)
            assert states(watcher)[0].state is wire.ConfigOutcome.APPLIED, states(watcher)[0].reasons

            # A harmless change (the line's timeout) on the 900 s meter: verified, not rolled back.
            slower = [line(endpoint.port, timeout=0.5)]
            await say(mosquitto.url, wire.Channel.CONFIG, desired(2, slower, every_15_min))
            await watcher.wait_for("v2", lambda: len(states(watcher)) == 2)
            assert states(watcher)[1].state is wire.ConfigOutcome.APPLIED, states(watcher)[1].reasons
            asked = len(aq.requests)
            await asyncio.sleep(1.0)
            assert len(aq.requests) == asked, "after its first read the meter waits for its phase"


SETPOINT_PROFILE = """\
model: test_setpoint
vendor: CityGW tests
source: test fixture
verified: modelled
measurement: heating
protocol: modbus
word_order: ABCD
registers:
  - {field: setpoint_c, table: holding, address: 0x10, type: u16, scale: 0.1, unit: °C,
     writable: true, min: 5, max: 30, typical: 20.0}
"""


async def test_set_field_is_done_when_the_device_holds_the_value_at_its_resolution(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """7.3 in an f32 reads back 7.300000190734863, 21.55 on a 0.1 °C register 21.6: done, as read back."""
    profile = tmp_path / "test_setpoint.yaml"
    profile.write_text(SETPOINT_PROFILE, encoding="utf-8")
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=1)
    thermostat = ModbusDeviceSimulator(load_profile(profile), unit=2)
    async with serve_tcp([meter, thermostat]) as endpoint:
        devices = [device("meter-1", "eastron_sdm630", 1), device("heat-1", str(profile), 2)]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[line(endpoint.port)], devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("readings", lambda: bool(readings_of(watcher, "heat-1")))
            f32 = command("set_field", device="meter-1", field="demand_period_min", value=7.3)
            scaled = command("set_field", device="heat-1", field="setpoint_c", value=21.55)
            for body in (f32, scaled):
                await say(mosquitto.url, wire.Channel.CMD, json.dumps(body).encode())
            await watcher.wait_for("two results", lambda: len(results(watcher)) == 2)
        by_id = {r.id: r for r in results(watcher)}
        done_f32, done_scaled = by_id[f32["id"]], by_id[scaled["id"]]
        assert (done_f32.outcome, done_f32.value, done_f32.detail) == (
            wire.CommandOutcome.DONE,
            7.300000190734863,
            None,
        )
        assert (done_scaled.outcome, done_scaled.value) == (wire.CommandOutcome.DONE, 21.6)
        spec = thermostat.profile.register("setpoint_c")
        assert holds(spec, 21.55, 21.5), "a device rounding its own way is within half a step"
        assert not holds(spec, 21.55, 21.7)
        assert not holds(meter.profile.register("demand_period_min"), 7.3, 7.31)


@pytest.mark.parametrize(
    ("percent", "arc"),
    # IEC 62386-102's curve: 254 is 100 %, 1 is 0.1 %, every 253/3 steps a decade; 0 is off.
    [(100, 254), (10, 170), (1, 85), (0.1, 1), (50, 229), (0, 0), (0.01, 1)],
)
def test_dim_levels_follow_the_dali_logarithmic_curve(percent: float, arc: int) -> None:
    assert dali_arc_level(percent) == arc
    if percent >= 0.1 or percent == 0:
        assert abs(dali_percent(arc) - percent) <= 0.015 * percent


def settings_push(
    version: int, lines: list[dict[str, Any]], devices: list[dict[str, Any]], **sections: Any
) -> bytes:
    body = wire.DesiredConfig(
        agent=AGENT,
        version=version,
        issued_at=now_ms(),
        site="test-site",
        lines=lines,
        devices=devices,
        **sections,
    )
    return wire.encode(body)


async def test_pushed_publish_journal_and_health_settings_apply_and_roll_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Settings push like devices do: applied live, refused when they name the journal's path, and
    rolled back when readings stop reaching the broker under them."""
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    async with serve_tcp([aq]) as aq_end:
        lines, devices = [line(aq_end.port)], [device("aq-1", "vaisala_aqt530", 1)]
        config = agent_config(tmp_path, mosquitto.url, lines=lines, devices=devices, remote={"grace_s": 1.0})
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("aq readings", lambda: bool(readings_of(watcher, "aq-1")))
            assert agent.journal is not None

            # v1: a quota, a stricter fsync, faster health, bigger batches: all applied to the running agent.
            v1 = settings_push(
                1,
                lines,
                devices,
                journal={"quota_mb": 5, "on_full": "drop_newest", "fsync": "full"},
                health={"interval": 0.2},
                publish={"batch_max_readings": 200, "interval": 0.1},
            )
            await say(mosquitto.url, wire.Channel.CONFIG, v1, retain=True)
            await watcher.wait_for("v1 applied", lambda: len(states(watcher)) == 1, within=10)
            assert states(watcher)[0].state is wire.ConfigOutcome.APPLIED, states(watcher)[0].reasons
            assert (agent.journal.quota_bytes, agent.journal.policy) == (5_000_000, "drop_newest")
            assert agent.config.health.interval == 0.2
            assert agent.publisher is not None
            assert agent.publisher.config.publish.batch_max_readings == 200

            # v2 moves the journal: the path is the agent's own, refused.
            v2 = settings_push(2, lines, devices, journal={"path": "/tmp/elsewhere.sqlite"})
            await say(mosquitto.url, wire.Channel.CONFIG, v2, retain=True)
            await watcher.wait_for("v2 refused", lambda: len(states(watcher)) == 2)
            assert states(watcher)[1].state is wire.ConfigOutcome.REFUSED
            assert "journal.path: the journal's path is the agent's own" in states(watcher)[1].reasons[0]

            # v3 holds live readings for an hour before they share a batch: nothing reaches the broker.
            v3 = settings_push(3, lines, devices, publish={"interval": 3600})
            await say(mosquitto.url, wire.Channel.CONFIG, v3, retain=True)
            await watcher.wait_for("v3 judged", lambda: len(states(watcher)) == 3, within=10)
            said = states(watcher)[2]
            assert said.state is wire.ConfigOutcome.ROLLED_BACK, said
            assert "publishing:" in said.reasons[0]
            assert said.applied_version == 1
            assert agent.publisher.config.publish.interval == 0.1
            heard = len(readings_of(watcher, "aq-1"))
            await watcher.wait_for("readings again", lambda: len(readings_of(watcher, "aq-1")) > heard + 3)
