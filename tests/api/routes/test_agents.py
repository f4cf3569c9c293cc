"""Field engineers' registry on a real Mosquitto: agents, devices checked before a push, config versions,
commands tracked to their result, live status from the agent's own messages."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import wire
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, NOW_MS, FakeClock, bearer, insert_key, on_every_registry
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, on_every_registry]

AGENT = "lviv-depot-1"
LVIV = {"lat": 49.8397, "lon": 24.0297}
LINES = [
    {"kind": "rtu", "id": "bus1", "port": "/dev/ttyUSB0", "baudrate": 9600},
    {"kind": "tcp", "id": "cabinet", "host": "10.20.0.15", "port": 502},
]
METER = {"id": "meter-1", "line": "bus1", "profile": "eastron_sdm630", "unit": 1, "poll_s": 10}
CABINET = {"id": "cab-rynok", "line": "cabinet", "profile": "ecodim_dali_gw2", "unit": 1, "poll_s": 30}
NEIGHBOUR = {"id": "lviv-depot-2", "site": ENGINEER_SITE, "lines": LINES}


class FieldAgent:
    """Plays the edge agent on the broker: hears config and cmd, answers on config/state and cmd/result."""

    def __init__(self, url: str) -> None:
        self.heard: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="field-agent")
        self.client.on_message = lambda _c, _u, m: self.heard.put((m.topic, bytes(m.payload), m.retain))
        port = int(url.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(
            [(wire.topic(AGENT, wire.Channel.CONFIG), 1), (wire.topic(AGENT, wire.Channel.CMD), 1)]
        )

    def next(self, channel: wire.Channel, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic, payload, _ = self.heard.get(timeout=deadline - time.monotonic())
            if topic == wire.topic(AGENT, channel):
                parsed: dict[str, Any] = json.loads(payload)
                return parsed
        raise AssertionError(f"nothing on {channel.value}")

    def say(
        self,
        channel: wire.Channel,
        payload: wire.Status | wire.Health | wire.ConfigState | wire.CommandResult,
        *,
        retain: bool = False,
    ) -> None:
        self.client.publish(
            wire.topic(AGENT, channel), wire.encode(payload), qos=1, retain=retain
        ).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.05)


@pytest.fixture
def fleet(
    mosquitto: Mosquitto, store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    """The API linked to the broker, called by an engineer granted ENGINEER_SITE."""
    linked = settings.model_copy(update={"broker_url": mosquitto.url})
    app = create_app(store, settings=linked, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.ENGINEER])) as client:
        assert app.state.context.agent_link.wait_connected(10)
        response = client.post(
            "/v1/agents", json={"id": AGENT, "site": ENGINEER_SITE, "location": LVIV, "lines": LINES}
        )
        assert response.status_code == 201, response.text
        yield client


@pytest.fixture
def field_agent(mosquitto: Mosquitto) -> Iterator[FieldAgent]:
    agent = FieldAgent(mosquitto.url)
    yield agent
    agent.close()


def audit_log(registry: Registry, action: str) -> list[dict[str, Any]]:
    from api.registry.audit import entries

    with registry.session() as session:
        return [
            {"actor": e.actor, "result": e.result, "before": e.before, "after": e.after, "detail": e.detail}
            for e in entries(session, action=action)
        ]


def test_device_checked_against_the_line_before_anything_is_stored(
    fleet: TestClient, registry: Registry
) -> None:
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=METER).status_code == 201
    clash = fleet.post(f"/v1/agents/{AGENT}/devices", json={**METER, "id": "meter-2"})
    assert clash.status_code == 422
    assert [p["field"] for p in clash.json()["detail"]["problems"]] == ["devices[1].unit"]
    assert "already 'meter-1'" in clash.json()["detail"]["problems"][0]["message"]
    too_fast = fleet.post(
        f"/v1/agents/{AGENT}/devices", json={**METER, "id": "meter-3", "unit": 3, "poll_s": 0.05}
    )
    assert too_fast.status_code == 422
    # The same check as the agent's own (citygw.contract.bus_time): wire time, guard intervals, per line.
    [overload] = too_fast.json()["detail"]["problems"]
    assert overload["field"] == "lines[0]"
    assert "line bus1 needs" in overload["message"]
    assert "bus time per 1.0 s at 9600 baud" in overload["message"]
    assert "meter-3" in overload["fix"]
    no_profile = fleet.post(
        f"/v1/agents/{AGENT}/devices", json={**METER, "id": "m4", "unit": 4, "profile": "nope"}
    )
    assert no_profile.json()["detail"]["problems"][0]["field"] == "devices[1].profile"
    devices = fleet.get(f"/v1/agents/{AGENT}/devices").json()
    assert [d["spec"]["id"] for d in devices] == ["meter-1"]
    refused = audit_log(registry, "device.create")
    assert [e["result"] for e in refused] == ["refused", "refused", "refused", "ok"]
    assert refused[-1]["after"]["unit"] == 1
    assert refused[-1]["actor"].startswith("key:")


def test_the_agent_shows_where_each_device_profile_comes_from(fleet: TestClient) -> None:
    """A modelled map (the DALI gateway's) is marked so, next to a map checked against its datasheet."""
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=METER).status_code == 201
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=CABINET).status_code == 201
    devices = {d["id"]: d for d in fleet.get(f"/v1/agents/{AGENT}").json()["devices"]}
    assert devices["meter-1"]["profile"] == "eastron_sdm630"
    assert devices["meter-1"]["verified"] == "datasheet"
    assert devices["meter-1"]["source"].startswith("Eastron SDM630Modbus smart meter user manual")
    assert devices["cab-rynok"]["verified"] == "modelled"
    assert "was not found" in devices["cab-rynok"]["source"]
    assert devices["cab-rynok"]["line"] == "cabinet"


def test_an_overlay_is_checked_like_the_agent_checks_it_and_shown_applied(
    fleet: TestClient, field_agent: FieldAgent
) -> None:
    overlay = {
        "max_registers": 8,
        "fields": ["voltage_l1", "current_l1"],
        "registers": {"current_l1": {"scale": 40}},
    }
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json={**METER, "overlay": overlay}).status_code == 201
    # An unknown field and a bus-breaking guard are refused with the key and the fix; nothing is stored.
    typo = {**METER, "overlay": {**overlay, "fields": ["voltage_l1", "curent_l1"]}}
    refused = fleet.put(f"/v1/agents/{AGENT}/devices/meter-1", json=typo)
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]["problems"]
    assert problem["field"] == "devices[0].overlay.fields[1]"
    assert "'curent_l1'" in problem["message"]
    assert "current_l1" in problem["fix"]
    slow = {**METER, "id": "meter-2", "unit": 2, "poll_s": 1, "overlay": {"timing": {"guard_ms": 900}}}
    over = fleet.post(f"/v1/agents/{AGENT}/devices", json=slow)
    assert over.status_code == 422
    [budget] = over.json()["detail"]["problems"]
    assert budget["field"] == "devices[1].overlay"
    assert "overlay of device 'meter-2'" in budget["message"]
    [stored] = fleet.get(f"/v1/agents/{AGENT}/devices").json()
    assert stored["spec"]["overlay"] == overlay
    [meter] = fleet.get(f"/v1/agents/{AGENT}").json()["devices"]
    effective = meter["effective_profile"]
    assert effective["max_registers"] == 8
    assert [r["field"] for r in effective["registers"] if r["readable"]] == ["voltage_l1", "current_l1"]
    assert meter["overlaid"]["max_registers"] == {"profile": 80, "device": 8}  # SDM630: 80 a read
    assert meter["overlaid"]["registers.current_l1.scale"] == {"profile": 1.0, "device": 40.0}
    assert fleet.get("/v1/agents").json()[0]["devices"][0]["effective_profile"] is None  # detail only
    assert fleet.post(f"/v1/agents/{AGENT}/config").status_code == 201
    assert field_agent.next(wire.Channel.CONFIG)["devices"][0]["overlay"] == overlay


def test_report_by_exception_is_checked_like_the_agent_checks_it(fleet: TestClient) -> None:
    station = {
        "id": "aq-rynok",
        "line": "cabinet",
        "profile": "vaisala_aqt530",
        "unit": 7,
        "poll_s": 10,
        "heartbeat_s": 5,
        "report": {"pm25": -1, "no2": "10%"},
    }
    refused = fleet.post(f"/v1/agents/{AGENT}/devices", json=station)
    assert refused.status_code == 422
    # A body the device schema refuses: FastAPI's own 422, naming the field, the message saying the fix.
    [negative] = refused.json()["detail"]
    assert negative["loc"] == ["body", "report", "pm25"]
    assert "deadband -1 is negative or not finite: use 0 or more" in negative["msg"]
    station["report"] = {"pm25": 0.5, "no2": "10%"}
    short = fleet.post(f"/v1/agents/{AGENT}/devices", json=station)
    assert [p["field"] for p in short.json()["detail"]["problems"]] == ["devices[0].heartbeat_s"]
    assert "set heartbeat_s to 10 or more" in short.json()["detail"]["problems"][0]["fix"]
    station["heartbeat_s"] = 900
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=station).status_code == 201
    [stored] = fleet.get(f"/v1/agents/{AGENT}/devices").json()
    assert (stored["spec"]["heartbeat_s"], stored["spec"]["report"]) == (900, {"pm25": 0.5, "no2": "10%"})


def test_update_move_and_retire_are_validated_and_audited(fleet: TestClient, registry: Registry) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
    fleet.post(f"/v1/agents/{AGENT}/devices", json={**METER, "id": "meter-2", "unit": 2})
    assert (
        fleet.put(
            f"/v1/agents/{AGENT}/devices/meter-2", json={**METER, "id": "meter-2", "unit": 1}
        ).status_code
        == 422
    )
    updated = fleet.put(
        f"/v1/agents/{AGENT}/devices/meter-2", json={**METER, "id": "meter-2", "unit": 5, "poll_s": 20}
    )
    assert updated.status_code == 200
    assert audit_log(registry, "device.update")[0]["before"]["unit"] == 2
    move = fleet.post(
        f"/v1/agents/{AGENT}/device-moves", json={"device": "meter-2", "to_agent": AGENT, "line": "nowhere"}
    )
    assert move.status_code == 422
    assert fleet.delete(f"/v1/agents/{AGENT}/devices/meter-2").status_code == 200
    assert [d["spec"]["id"] for d in fleet.get(f"/v1/agents/{AGENT}/devices").json()] == ["meter-1"]
    assert [e["result"] for e in audit_log(registry, "device.move")] == ["refused"]


def at_once(requests: int, send: Callable[[], Any]) -> list[Any]:
    """``send`` from ``requests`` threads released together, each answer in the order they were sent."""
    start = threading.Barrier(requests)

    def sent() -> Any:
        start.wait(10)
        return send()

    with ThreadPoolExecutor(requests) as threads:
        return list(threads.map(lambda _: sent(), range(requests)))


def test_concurrent_config_pushes_each_get_their_own_version(fleet: TestClient, registry: Registry) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
    pushes = at_once(24, lambda: fleet.post(f"/v1/agents/{AGENT}/config"))
    assert [p.status_code for p in pushes] == [201] * 24, [p.text for p in pushes if p.status_code != 201]
    assert sorted(p.json()["version"] for p in pushes) == list(range(1, 25))
    assert [v["version"] for v in fleet.get(f"/v1/agents/{AGENT}/config").json()] == list(range(24, 0, -1))
    assert [e["result"] for e in audit_log(registry, "config.push")] == ["ok"] * 24


def test_one_id_registered_twice_at_once_is_a_conflict_not_an_error(fleet: TestClient) -> None:
    agents = at_once(8, lambda: fleet.post("/v1/agents", json=NEIGHBOUR))
    assert sorted(a.status_code for a in agents) == [201] + [409] * 7
    assert {a.json()["detail"] for a in agents if a.status_code == 409} == {
        "agent 'lviv-depot-2' is already registered"
    }
    devices = at_once(8, lambda: fleet.post(f"/v1/agents/{AGENT}/devices", json=METER))
    assert sorted(d.status_code for d in devices) == [201] + [409] * 7
    assert {d.json()["detail"] for d in devices if d.status_code == 409} == {
        f"device 'meter-1' is already on agent '{AGENT}'"
    }
    assert [d["spec"]["id"] for d in fleet.get(f"/v1/agents/{AGENT}/devices").json()] == ["meter-1"]


def test_a_retired_device_id_can_be_added_again_and_its_history_stays(
    fleet: TestClient, registry: Registry
) -> None:
    devices = f"/v1/agents/{AGENT}/devices"
    assert fleet.post(devices, json=METER).status_code == 201
    assert fleet.delete(f"{devices}/meter-1").status_code == 200
    again = fleet.post(devices, json={**METER, "poll_s": 20})
    assert again.status_code == 201, again.text
    assert fleet.post(devices, json=METER).status_code == 409
    history = fleet.get(devices, params={"include_retired": True}).json()
    assert [(d["spec"]["poll_s"], d["retired_at"] is None) for d in history] == [(10, False), (20, True)]
    # A device moved to another agent and back: each stay is a row of its own.
    assert fleet.post("/v1/agents", json=NEIGHBOUR).status_code == 201
    for source, destination in [(AGENT, "lviv-depot-2"), ("lviv-depot-2", AGENT)]:
        move = fleet.post(
            f"/v1/agents/{source}/device-moves",
            json={"device": "meter-1", "to_agent": destination, "line": "bus1"},
        )
        assert move.status_code == 200, move.text
        assert move.json()["agent"] == destination
    history = fleet.get(devices, params={"include_retired": True}).json()
    assert [d["retired_at"] is None for d in history] == [False, False, True]
    assert [e["result"] for e in audit_log(registry, "device.create")] == ["ok", "ok"]
    assert [e["result"] for e in audit_log(registry, "device.move")] == ["ok", "ok"]


def test_an_agent_heard_before_registration_is_assigned_by_an_admin_only(
    fleet: TestClient, field_agent: FieldAgent, keys: dict[Role, str]
) -> None:
    field_agent.client.publish(
        wire.topic("depot-9", wire.Channel.STATUS),
        wire.encode(wire.Status(agent="depot-9", state=wire.AgentState.ONLINE)),
        qos=1,
    ).wait_for_publish(5)
    admin = bearer(keys[Role.ADMIN])
    eventually(lambda: fleet.get("/v1/agents/depot-9", headers=admin).status_code == 200)
    assert fleet.get("/v1/agents/depot-9", headers=admin).json()["site"] == ""
    claim = {"id": "depot-9", "site": ENGINEER_SITE, "lines": LINES}
    refused = fleet.post("/v1/agents", json=claim)
    assert refused.status_code == 403
    assert "only an admin" in refused.json()["detail"]
    assert fleet.post("/v1/agents/depot-9/config").status_code == 403
    assigned = fleet.post("/v1/agents", json=claim, headers=admin)
    assert assigned.status_code == 201, assigned.text
    assert (assigned.json()["site"], assigned.json()["state"]) == (ENGINEER_SITE, "online")
    assert fleet.get("/v1/agents/depot-9").status_code == 200
    assert fleet.post("/v1/agents", json=claim, headers=admin).status_code == 409


def test_config_push_is_retained_and_the_agents_answer_is_shown(
    fleet: TestClient, field_agent: FieldAgent, registry: Registry
) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
    pushed = fleet.post(f"/v1/agents/{AGENT}/config")
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["version"] == 1
    config = field_agent.next(wire.Channel.CONFIG)
    assert config["version"] == 1
    assert [d["id"] for d in config["devices"]] == ["meter-1"]
    assert wire.DesiredConfig.model_validate(config).lines[0]["id"] == "bus1"
    field_agent.say(
        wire.Channel.CONFIG_STATE,
        wire.ConfigState(
            agent=AGENT,
            version=1,
            state=wire.ConfigOutcome.REFUSED,
            ts=NOW_MS,
            reasons=["bus1: no such port"],
        ),
    )
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}/config").json()[0]["state"] == "refused")
    assert fleet.get(f"/v1/agents/{AGENT}/config").json()[0]["reason"] == "bus1: no such port"
    assert fleet.post(f"/v1/agents/{AGENT}/config").json()["version"] == 2
    field_agent.next(wire.Channel.CONFIG)
    field_agent.say(
        wire.Channel.CONFIG_STATE,
        wire.ConfigState(agent=AGENT, version=2, state=wire.ConfigOutcome.APPLIED, ts=NOW_MS),
    )
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}").json()["applied_config_version"] == 2)
    assert [e["result"] for e in audit_log(registry, "config.push")] == ["ok", "ok"]


def test_live_status_comes_from_the_agents_messages(fleet: TestClient, field_agent: FieldAgent) -> None:
    assert fleet.get(f"/v1/agents/{AGENT}").json()["state"] == "unknown"
    field_agent.say(
        wire.Channel.STATUS,
        wire.Status(agent=AGENT, state=wire.AgentState.ONLINE, version="1.2.0"),
        retain=True,
    )
    field_agent.say(
        wire.Channel.HEALTH,
        wire.Health(
            agent=AGENT,
            ts=NOW_MS,
            journal=wire.JournalHealth(backlog=42, dropped=0),
            devices={"meter-1": wire.DeviceHealth(state=wire.DeviceState.TIMEOUT, failures=3)},
        ),
    )
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}").json()["journal_backlog"] == 42)
    agent = fleet.get(f"/v1/agents/{AGENT}").json()
    assert (agent["state"], agent["version"]) == ("online", "1.2.0")
    assert agent["device_health"]["meter-1"]["state"] == "timeout"
    field_agent.say(wire.Channel.STATUS, wire.Status(agent=AGENT, state=wire.AgentState.OFFLINE), retain=True)
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}").json()["state"] == "offline")


def test_a_command_is_sent_and_tracked_to_its_result(
    fleet: TestClient, field_agent: FieldAgent, registry: Registry
) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=CABINET)
    fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
    bad = fleet.post(
        f"/v1/agents/{AGENT}/commands",
        json={"device": "meter-1", "target": {"kind": "group", "address": 20}, "action": "on", "level": 5},
    )
    assert bad.status_code == 422
    assert len(bad.json()["detail"]["problems"]) == 3  # address, level with on, not a lighting controller
    sent = fleet.post(
        f"/v1/agents/{AGENT}/commands",
        json={"device": "cab-rynok", "target": {"kind": "group", "address": 2}, "action": "dim", "level": 40},
    )
    assert sent.status_code == 202, sent.text
    command = field_agent.next(wire.Channel.CMD)
    assert (command["id"], command["action"], command["level"]) == (sent.json()["id"], "dim", 40)
    assert command["target"] == {"kind": "group", "address": 2}
    field_agent.say(
        wire.Channel.CMD_RESULT,
        wire.CommandResult(
            agent=AGENT, id=command["id"], outcome=wire.CommandOutcome.DONE, ts=NOW_MS, level=40
        ),
    )
    url = f"/v1/agents/{AGENT}/commands/{command['id']}"
    eventually(lambda: fleet.get(url).json()["status"] == "done")
    assert fleet.get(url).json()["detail"] == "level read back: 40 %"
    assert [e["result"] for e in audit_log(registry, "command.send")] == ["ok", "refused"]


def test_a_lamp_found_dark_after_a_command_is_shown_with_what_was_read(
    fleet: TestClient, field_agent: FieldAgent, store: SqliteStore
) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=CABINET)
    sent = fleet.post(
        f"/v1/agents/{AGENT}/commands",
        json={"device": "cab-rynok", "target": {"kind": "lamp", "address": 3}, "action": "on"},
    )
    command = field_agent.next(wire.Channel.CMD)
    field_agent.say(
        wire.Channel.CMD_RESULT,
        wire.CommandResult(
            agent=AGENT,
            id=command["id"],
            outcome=wire.CommandOutcome.DONE_BUT_DARK,
            ts=NOW_MS + 2_000,
            value=0,
            level=0,
            read={"lamp3_level": 0, "lamp3_status": 2},
            detail="lamp3: lamp failure (status 2), level 0",
        ),
    )
    url = f"/v1/agents/{AGENT}/commands/{sent.json()['id']}"
    eventually(lambda: fleet.get(url).json()["status"] == "done_but_dark")
    assert fleet.get(url).json()["detail"] == (
        "lamp3: lamp failure (status 2), level 0; level read back: 0 %; "
        "read at the device: lamp3_level=0, lamp3_status=2"
    )


def test_a_dusk_command_waits_for_dusk_at_the_site(fleet: TestClient) -> None:
    scheduled = fleet.post(f"/v1/agents/{AGENT}/devices", json=CABINET)
    assert scheduled.status_code == 201
    response = fleet.post(
        f"/v1/agents/{AGENT}/commands",
        json={"device": "cab-rynok", "target": {"kind": "cabinet"}, "action": "on", "sun": {"event": "dusk"}},
    )
    # NOW_MS is 2027-01-15 08:00 UTC; civil dusk in Lviv that day is 17:27 local (15:27 UTC).
    assert response.json()["due_at"].startswith("2027-01-15T15:27")
    assert response.json()["status"] == "scheduled"


def test_engineers_manage_only_their_sites(fleet: TestClient, registry: Registry) -> None:
    with registry.session() as session:
        other = insert_key(session, Role.ENGINEER, sites=["ternopil-center"])
        session.commit()
    headers = bearer(other)
    assert fleet.get(f"/v1/agents/{AGENT}", headers=headers).status_code == 403
    assert fleet.get("/v1/agents", headers=headers).json() == []
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=METER, headers=headers).status_code == 403
    assert fleet.post(f"/v1/agents/{AGENT}/config", headers=headers).status_code == 403


def test_a_push_that_stops_running_devices_needs_them_named(
    fleet: TestClient, field_agent: FieldAgent, registry: Registry
) -> None:
    fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
    assert fleet.post(f"/v1/agents/{AGENT}/config").json()["version"] == 1
    field_agent.next(wire.Channel.CONFIG)
    field_agent.say(
        wire.Channel.CONFIG_STATE,
        wire.ConfigState(agent=AGENT, version=1, state=wire.ConfigOutcome.APPLIED, ts=NOW_MS),
    )
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}").json()["applied_config_version"] == 1)
    # The cabinet runs on the agent (its health says so) although the registry never knew it.
    field_agent.say(
        wire.Channel.HEALTH,
        wire.Health(
            agent=AGENT,
            ts=NOW_MS,
            journal=wire.JournalHealth(backlog=0, dropped=0),
            devices={
                "meter-1": wire.DeviceHealth(state=wire.DeviceState.OK),
                "cab-rynok": wire.DeviceHealth(state=wire.DeviceState.OK),
            },
        ),
    )
    eventually(lambda: "cab-rynok" in (fleet.get(f"/v1/agents/{AGENT}").json()["device_health"] or {}))
    assert fleet.delete(f"/v1/agents/{AGENT}/devices/meter-1").status_code == 200
    refused = fleet.post(f"/v1/agents/{AGENT}/config")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["stopping"] == ["cab-rynok", "meter-1"]
    partly = fleet.post(f"/v1/agents/{AGENT}/config", json={"remove": ["meter-1"]})
    assert partly.status_code == 409
    assert partly.json()["detail"]["stopping"] == ["cab-rynok"]
    assert [v["version"] for v in fleet.get(f"/v1/agents/{AGENT}/config").json()] == [1]  # nothing pushed
    confirmed = fleet.post(f"/v1/agents/{AGENT}/config", json={"remove": ["meter-1", "cab-rynok"]})
    assert confirmed.status_code == 201, confirmed.text
    assert field_agent.next(wire.Channel.CONFIG)["devices"] == []
    assert [e["result"] for e in audit_log(registry, "config.push")] == ["ok", "refused", "refused", "ok"]


def test_a_push_answered_503_whose_puback_comes_later_is_recorded_as_sent(
    mosquitto: Mosquitto, store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> None:
    """The broker stalls (SIGSTOP) past the publish timeout: 503 and "unsent"; then it takes the push
    after all and the agent gets it, so the registry and the audit log must say it was sent."""
    linked = settings.model_copy(update={"broker_url": mosquitto.url, "broker_publish_timeout_s": 0.5})
    app = create_app(store, settings=linked, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.ENGINEER])) as fleet:
        assert app.state.context.agent_link.wait_connected(10)
        agent = {"id": AGENT, "site": ENGINEER_SITE, "location": LVIV, "lines": LINES}
        assert fleet.post("/v1/agents", json=agent).status_code == 201
        fleet.post(f"/v1/agents/{AGENT}/devices", json=METER)
        field_agent = FieldAgent(mosquitto.url)
        try:
            assert mosquitto.proc is not None
            mosquitto.proc.send_signal(signal.SIGSTOP)
            try:
                stalled = fleet.post(f"/v1/agents/{AGENT}/config")
                assert stalled.status_code == 503, stalled.text
                assert fleet.get(f"/v1/agents/{AGENT}/config").json()[0]["state"] == "unsent"
            finally:
                mosquitto.proc.send_signal(signal.SIGCONT)
            assert field_agent.next(wire.Channel.CONFIG)["version"] == 1  # delivered after all
            eventually(lambda: fleet.get(f"/v1/agents/{AGENT}/config").json()[0]["state"] == "pending")
            assert "acknowledged it" in fleet.get(f"/v1/agents/{AGENT}/config").json()[0]["reason"]
            assert [e["result"] for e in audit_log(registry, "config.push")] == ["ok", "failed"]
        finally:
            field_agent.close()
