"""A LoRaWAN line end to end: a network server's MQTT integration (real Mosquitto, the simulator
speaking ChirpStack v4 and The Things Stack v3) -> the agent -> CityGW's broker (real Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfigError
from citygw.contract.agent_config_check import validate_agent_config
from edge.agent import Agent
from edge.config_file import load_agent_config
from edge.poller import now_ms
from firmware_bridge.simulators.lorawan import NetworkServerSimulator
from tests.edge.conftest import AGENT, Watcher, agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.edge.test_remote import desired, results, say, states
from tests.firmware_bridge.test_lorawan import EXAMPLES, GOLDEN
from tests.services import Mosquitto

BIN_EUI, BAY_EUI, STRAY_EUI = "70b3d57ed0000001", "70b3d57ed0000002", "70b3d57ed00000ff"
TTS_APP = "city-sensors@city"
CHIRPSTACK_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"


@pytest.fixture
def network_server(tmp_path: Path) -> Iterator[Mosquitto]:
    """The network server's own broker (its MQTT integration), apart from CityGW's."""
    broker = Mosquitto(tmp_path / "ns-mosquitto")
    broker.start()
    yield broker
    broker.stop()


def lorawan_config(tmp_path: Path, citygw_url: str, ns_url: str, server: str, **line: Any) -> Any:
    application = TTS_APP if server == "tts" else CHIRPSTACK_APP
    return agent_config(
        tmp_path,
        citygw_url,
        lines=[
            {
                "id": "lora",
                "kind": "lorawan",
                "server": server,
                "application": application,
                "broker": {"url": ns_url, "keepalive": 5, "reconnect_min": 0.1, "reconnect_max": 0.5},
                **line,
            }
        ],
        devices=[
            {"id": "bin-12", "line": "lora", "profile": "dingtek_df703", "dev_eui": BIN_EUI, "poll_s": 60},
            {
                "id": "bay-7",
                "line": "lora",
                "profile": "nwave_nps405",
                "dev_eui": BAY_EUI.upper(),
                "poll_s": 60,
            },
        ],
    )


def simulator(server: str, ns: Mosquitto) -> NetworkServerSimulator:
    return NetworkServerSimulator(server, TTS_APP if server == "tts" else CHIRPSTACK_APP, ns.url)  # type: ignore[arg-type]


def health(watcher: Watcher) -> wire.Health | None:
    messages = watcher.on(wire.Channel.HEALTH)
    return wire.Health.model_validate_json(messages[-1].payload) if messages else None


def fields_of(watcher: Watcher, device: str) -> list[dict[str, wire.FieldValue]]:
    return [r.fields for r in readings_of(watcher, device)]


@pytest.mark.parametrize("server", ["chirpstack", "tts"])
async def test_uplinks_become_readings_with_the_vendors_values(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto, server: str
) -> None:
    agent = Agent(lorawan_config(tmp_path, mosquitto.url, network_server.url, server))
    ns = simulator(server, network_server)
    bins, bays = EXAMPLES["dingtek_df703"]["uplinks"], EXAMPLES["nwave_nps405"]["uplinks"]
    async with watching(mosquitto.url) as watcher, running(agent), ns.running():
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        # The vendors' frames with what their codecs decode from them, as the server publishes both.
        first, second = (bytes(b["bytes"]) for b in bins)
        await ns.uplink(BIN_EUI, bins[0]["decoded"], f_cnt=0, f_port=3, frame=first, rssi=-97, snr=-3.25)
        await ns.uplink(BIN_EUI, bins[1]["decoded"], f_cnt=3, f_port=3, frame=second, rssi=-101, snr=-6.0)
        for f_cnt, example in enumerate(bays, start=40):  # 1 and 2 of the bin were lost
            await ns.uplink(
                BAY_EUI,
                example["decoded"],
                f_cnt=f_cnt,
                f_port=example["f_port"],
                frame=bytes(example["bytes"]),
            )
        await watcher.wait_for(
            "5 readings", lambda: len(readings_of(watcher, "bin-12") + readings_of(watcher, "bay-7")) == 5
        )

        bin_fields, bay_fields = fields_of(watcher, "bin-12"), fields_of(watcher, "bay-7")
        for got, expected in zip(
            bin_fields + bay_fields, GOLDEN["dingtek_df703"] + GOLDEN["nwave_nps405"], strict=True
        ):
            assert {k: got[k] for k in expected} == pytest.approx(expected)
        assert [(f["f_cnt"], f["uplinks_lost"], f["rssi_dbm"], f["snr_db"]) for f in bin_fields] == [
            (0, 0, -97.0, -3.25),
            (3, 2, -101.0, -6.0),
        ]
        assert [f["uplinks_lost"] for f in bay_fields] == [0, 0, 0]
        reading = readings_of(watcher, "bin-12")[0]
        assert (reading.measurement, reading.tags) == ("waste_bin", {"site": "test-site"})
        assert readings_of(watcher, "bay-7")[0].measurement == "parking"
        await watcher.wait_for(
            "health", lambda: (h := health(watcher)) is not None and h.devices["bay-7"].reads == 3
        )
        state = health(watcher)
        assert state is not None
        assert state.devices["bin-12"].state is wire.DeviceState.OK
        assert state.devices["bin-12"].reads == 2


async def test_bad_frames_and_unknown_devices_lose_nothing_valid(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto
) -> None:
    agent = Agent(lorawan_config(tmp_path, mosquitto.url, network_server.url, "chirpstack"))
    ns = simulator("chirpstack", network_server)
    park = EXAMPLES["nwave_nps405"]["uplinks"][0]["decoded"]
    bay_topic = f"application/{CHIRPSTACK_APP}/device/{BAY_EUI}/event/up"
    async with watching(mosquitto.url) as watcher, running(agent), ns.running():
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        await ns.uplink(BAY_EUI, park, f_cnt=1, f_port=1)
        await ns.publish(
            bay_topic, b'{"deviceInfo": {"devEui": "70b3d57ed0000002"}, "fCnt": 2, "obj'
        )  # cut off
        await ns.uplink(STRAY_EUI, park, f_cnt=9, f_port=1)  # a device nobody configured
        await ns.uplink(BAY_EUI, None, f_cnt=3, f_port=1)  # no codec ran
        await ns.uplink(BAY_EUI, {"luminosity": 3}, f_cnt=4, f_port=1)  # another device's codec
        await ns.uplink(BAY_EUI, {**park, "occupied": False}, f_cnt=5, f_port=1)
        await watcher.wait_for("2 readings", lambda: len(readings_of(watcher, "bay-7")) == 2)
        await asyncio.sleep(0.3)  # nothing else comes
        assert [f["occupied"] for f in fields_of(watcher, "bay-7")] == [True, False]
        assert fields_of(watcher, "bay-7")[1]["uplinks_lost"] == 0  # frames 2-4 arrived, unusable
        assert readings_of(watcher, "bin-12") == []
        assert agent.bridges["lora"].unknown == {STRAY_EUI: 1}
        await watcher.wait_for(
            "health", lambda: (h := health(watcher)) is not None and h.devices["bay-7"].failures >= 3
        )
        state = health(watcher)
        assert state is not None
        bay = state.devices["bay-7"]
        assert bay.state is wire.DeviceState.OK  # the last uplink was good
        assert bay.failures == 3
        assert STRAY_EUI not in state.devices
    bridge = agent.bridges["lora"]
    # What each bad frame says, as the device's health carries it when it is the latest.
    bridge.take(bay_topic, b"{not json")
    assert "not JSON" in (agent.board.record("bay-7").error or "")
    bridge.take(bay_topic, json.dumps({"deviceInfo": {"devEui": BAY_EUI}, "fCnt": 6, "fPort": 1}).encode())
    assert "no decoded object: the network server ran no codec" in (agent.board.record("bay-7").error or "")
    bridge.take(
        bay_topic, json.dumps({"deviceInfo": {"devEui": BAY_EUI}, "fCnt": 7, "object": {"x": 1}}).encode()
    )
    assert "no field of profile nwave_nps405 in the decoded object (keys: x)" in (
        agent.board.record("bay-7").error or ""
    )


async def test_a_silent_device_is_a_timeout(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto
) -> None:
    config = lorawan_config(tmp_path, mosquitto.url, network_server.url, "chirpstack", missed_uplinks=2)
    devices = [d.model_copy(update={"poll_s": 0.3}) for d in config.devices]
    agent = Agent(config.model_copy(update={"devices": devices}))
    ns = simulator("chirpstack", network_server)
    async with watching(mosquitto.url) as watcher, running(agent), ns.running():
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        for f_cnt in range(1, 8):  # the bay keeps talking, the bin never does
            await ns.uplink(BAY_EUI, {"occupied": True}, f_cnt=f_cnt, f_port=1)
            await asyncio.sleep(0.15)
        await watcher.wait_for(
            "bin timeout",
            lambda: (
                (h := health(watcher)) is not None and h.devices["bin-12"].state is wire.DeviceState.TIMEOUT
            ),
        )
        state = health(watcher)
        assert state is not None
        assert "no uplink for" in (state.devices["bin-12"].error or "")
        assert "expected every 0.3 s, timeout after 2 missed" in (state.devices["bin-12"].error or "")
        assert state.devices["bay-7"].state is wire.DeviceState.OK


def set_field(
    device: str, field: str, value: wire.FieldValue, *, expires_in_ms: int = 5000
) -> dict[str, Any]:
    now = now_ms()
    return {
        "schema": 1,
        "agent": AGENT,
        "id": f"cmd-{uuid.uuid4().hex[:12]}",
        "device": device,
        "action": "set_field",
        "field": field,
        "value": value,
        "issued_at": now,
        "expires_at": now + expires_in_ms,
        "requested_by": "waste-team",
    }


@pytest.mark.parametrize("server", ["chirpstack", "tts"])
async def test_a_command_goes_out_as_the_vendors_downlink(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto, server: str
) -> None:
    agent = Agent(lorawan_config(tmp_path, mosquitto.url, network_server.url, server))
    ns = simulator(server, network_server)
    example = next(d for d in EXAMPLES["dingtek_df703"]["downlinks"] if "uploadInterval" in d["data"])
    async with watching(mosquitto.url) as watcher, running(agent), ns.running():
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        # The agent listens for commands once it is connected (its first health message follows).
        await watcher.wait_for("health", lambda: health(watcher) is not None)
        if server == "tts":  # its downlink topic names the device id, learned from an uplink
            body = set_field("bin-12", "upload_interval_h", 4)
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(body).encode())
            await watcher.wait_for("refusal", lambda: len(results(watcher)) == 1)
            assert results(watcher)[0].outcome is wire.CommandOutcome.REFUSED
            assert "set ns_device_id" in (results(watcher)[0].detail or "")
            await ns.uplink(BIN_EUI, {"level": 1200}, f_cnt=1, f_port=3, device_id="bin-12-ttn")
            await watcher.wait_for("reading", lambda: bool(readings_of(watcher, "bin-12")))
        done = len(results(watcher))
        body = set_field("bin-12", "upload_interval_h", 4)
        await say(mosquitto.url, wire.Channel.CMD, json.dumps(body).encode())
        await watcher.wait_for("result", lambda: len(results(watcher)) == done + 1)
        result = results(watcher)[-1]
        assert (result.id, result.outcome, result.value) == (body["id"], wire.CommandOutcome.DONE, 4)
        assert "queued at the network server on fPort 3: 3830303239393939303130343831" in (
            result.detail or ""
        )
        await watcher.wait_for("the downlink", lambda: bool(ns.downlinks), within=5)
        (downlink,) = ns.downlinks
        assert (downlink.data, downlink.f_port) == (bytes(example["bytes"]), example["f_port"])
        if server == "chirpstack":
            assert downlink.topic == f"application/{CHIRPSTACK_APP}/device/{BIN_EUI}/command/down"
            assert downlink.message["devEui"] == BIN_EUI
        else:
            assert downlink.topic == f"v3/{TTS_APP}/devices/bin-12-ttn/down/push"
            assert downlink.message["downlinks"][0]["priority"] == "NORMAL"

        for bad, says in (
            (
                set_field("bay-7", "upload_interval_h", 4),
                "profile nwave_nps405 has no command for 'upload_interval_h'",
            ),
            (set_field("bin-12", "upload_interval_h", 400), "does not fit in a u8"),
        ):
            await say(mosquitto.url, wire.Channel.CMD, json.dumps(bad).encode())
            await watcher.wait_for(
                "refusal", lambda cid=bad["id"]: any(r.id == cid for r in results(watcher))
            )
            refusal = next(r for r in results(watcher) if r.id == bad["id"])
            assert refusal.outcome is wire.CommandOutcome.REFUSED
            assert says in (refusal.detail or "")
        assert len(ns.downlinks) == 1


async def test_network_server_broker_down_and_back_loses_no_uplink(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto
) -> None:
    """ChirpStack publishes at QoS 1 to the agent's persistent session: uplinks published while the
    agent is cut off from the server's broker wait there; CityGW's broker down too: the journal."""
    config = lorawan_config(tmp_path, mosquitto.url, network_server.url, "chirpstack")
    line = config.lines[0]
    slow = line.broker.model_copy(update={"reconnect_min": 3.0, "reconnect_max": 3.0})  # away >= 1.5 s
    agent = Agent(config.model_copy(update={"lines": [line.model_copy(update={"broker": slow})]}))
    ns = simulator("chirpstack", network_server)
    async with watching(mosquitto.url) as watcher, running(agent):
        bridge = agent.bridges["lora"]
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with ns.running():
            await ns.uplink(BAY_EUI, {"occupied": True}, f_cnt=1, f_port=1)
        await watcher.wait_for("first reading", lambda: len(readings_of(watcher, "bay-7")) == 1)
        network_server.stop()
        await watcher.wait_for("the agent to see it", lambda: not bridge.connected.is_set(), within=10)
        mosquitto.stop()  # and CityGW's broker
        network_server.start()
        async with ns.running():  # the server publishes as soon as its broker is back
            for f_cnt in range(2, 12):
                await ns.uplink(BAY_EUI, {"occupied": f_cnt % 2 == 0}, f_cnt=f_cnt, f_port=1)
        assert not bridge.connected.is_set()  # all ten went out while the agent was away
        await asyncio.wait_for(bridge.connected.wait(), 10)
        mosquitto.start()
        await watcher.wait_for(
            "11 readings",
            lambda: len({r.fields["f_cnt"] for r in readings_of(watcher, "bay-7")}) == 11,
            within=30,
        )
        f_cnts = sorted({r.fields["f_cnt"] for r in readings_of(watcher, "bay-7")})  # type: ignore[type-var]
        assert f_cnts == list(range(1, 12))
        assert all(r.fields["uplinks_lost"] == 0 for r in readings_of(watcher, "bay-7"))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"dev_eui": None}, "devices[0].dev_eui: line 'lora' is a LoRaWAN line; fix: add dev_eui"),
        (
            {"dev_eui": BAY_EUI},
            "devices[1].dev_eui: DevEUI 70B3D57ED0000002 on line 'lora' is already 'bin-12'",
        ),
        (
            {"profile": "eastron_sdm120"},
            "speaks modbus; a device on a LoRaWAN line (lorawan) needs a lorawan profile",
        ),
        ({"unit": 3}, "devices[0].unit: line 'lora' is a LoRaWAN line; fix: remove unit"),
        ({"heartbeat_s": 900}, "a LoRaWAN device reports when it transmits"),
        ({"ns_device_id": "bin-12"}, "ChirpStack addresses devices by DevEUI; fix: remove ns_device_id"),
    ],
)
def test_lorawan_config_mistakes_name_the_field_and_the_fix(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    config = lorawan_config(tmp_path, "mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884", "chirpstack")
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["devices"][0].update(change)
    raw["devices"][0] = {k: v for k, v in raw["devices"][0].items() if v is not None}
    with pytest.raises(AgentConfigError) as caught:
        validate_agent_config(raw, tmp_path / "agent.yaml")
    assert says in str(caught.value)


def test_tts_serves_qos_0_only(tmp_path: Path) -> None:
    config = lorawan_config(tmp_path, "mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884", "tts")
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["lines"][0]["qos"] = 1
    with pytest.raises(AgentConfigError, match="serves QoS 0 only: set qos 0 or remove it"):
        validate_agent_config(raw, tmp_path / "agent.yaml")


def test_the_lorawan_example_loads() -> None:
    config = load_agent_config(Path(__file__).parents[2] / "edge" / "examples" / "lorawan.yaml")
    kinds = {line.id: (line.kind, getattr(line, "server", None)) for line in config.lines}
    assert kinds == {"chirpstack": ("lorawan", "chirpstack"), "ttn": ("lorawan", "tts")}
    assert [d.profile for d in config.devices] == ["dingtek_df703", "nwave_nps405"]


async def test_a_pushed_lorawan_line_is_not_rolled_back_for_sensors_that_have_not_spoken(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto
) -> None:
    """A bin uplinking once a day cannot answer within the grace period: it is not awaited."""
    config = agent_config(tmp_path, mosquitto.url, remote={"grace_s": 0.5})
    line = lorawan_config(tmp_path, mosquitto.url, network_server.url, "chirpstack").lines[0]
    bin_12 = {"id": "bin-12", "line": "lora", "profile": "dingtek_df703", "dev_eui": BIN_EUI, "poll_s": 86400}
    agent = Agent(config)
    async with watching(mosquitto.url) as watcher, running(agent):
        await watcher.wait_for("health", lambda: health(watcher) is not None)
        await say(
            mosquitto.url,
            wire.Channel.CONFIG,
            desired(1, [line.model_dump(mode="json", exclude_none=True)], [bin_12]),
            retain=True,
        )
        await watcher.wait_for("config state", lambda: bool(states(watcher)))
        assert [(s.version, s.state) for s in states(watcher)] == [(1, wire.ConfigOutcome.APPLIED)]
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)


async def test_the_network_server_password_comes_from_the_environment(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TTS API key stays out of config files and pushed configs: ``password_env`` names where it is."""
    passwords = tmp_path / "passwd"
    command = ["mosquitto_passwd", "-b", "-c", str(passwords), "city-sensors@city", "NNSXS.KEY"]
    await asyncio.to_thread(subprocess.run, command, check=True)
    ns_broker = Mosquitto(tmp_path / "ns", extra_config=f"allow_anonymous false\npassword_file {passwords}\n")
    ns_broker.start()
    try:
        # The fixture's config has a `listener ... allow_anonymous true` line first; ours wins as the last.
        url = ns_broker.url.replace("mqtt://", "mqtt://city-sensors%40city@")
        config = lorawan_config(tmp_path, mosquitto.url, url, "tts", password_env="CITYGW_TTS_API_KEY")
        monkeypatch.delenv("CITYGW_TTS_API_KEY", raising=False)
        agent = Agent(config)
        async with running(agent):
            deadline = asyncio.get_running_loop().time() + 10
            while "CITYGW_TTS_API_KEY" not in (agent.board.record("bin-12").error or ""):
                assert asyncio.get_running_loop().time() < deadline, agent.board.record("bin-12").error
                await asyncio.sleep(0.05)
            assert not agent.bridges["lora"].connected.is_set()
            assert "password_env of line lora) is not set" in (agent.board.record("bin-12").error or "")
            monkeypatch.setenv("CITYGW_TTS_API_KEY", "NNSXS.KEY")
            await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        raw = config.model_dump(mode="json", exclude_none=True)
        raw["lines"][0]["broker"]["url"] = ns_broker.url.replace("mqtt://", "mqtt://u:secret@")
        with pytest.raises(AgentConfigError, match="keep the password in the environment only"):
            validate_agent_config(raw, tmp_path / "agent.yaml")
    finally:
        ns_broker.stop()
