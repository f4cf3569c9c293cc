"""set_field through the API on a real Mosquitto: checked by the device's profile (a LoRaWAN profile's
commands, a Modbus profile's writable registers), refused with the settable fields named and audited,
sent on ``cmd`` as a wire set_field when due, tracked to the agent's result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import wire
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, NOW_MS, FakeClock, bearer, on_every_registry
from tests.api.routes.test_agents import AGENT, CABINET, LINES, LVIV, METER, audit_log, eventually
from tests.api.routes.test_agents import field_agent as field_agent  # a fixture, found by name
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, on_every_registry]

LORA = {
    "kind": "lorawan",
    "id": "lora",
    "server": "chirpstack",
    "application": "17c82e96-be03-4f38-aef3-f83d48582d97",
    "broker": {"url": "mqtt://10.20.0.20:1883"},
}
BIN = {
    "id": "bin-12",
    "line": "lora",
    "profile": "dingtek_df703",
    "dev_eui": "70b3d57ed0000001",
    "poll_s": 60,
}
DINGTEK_SETTABLE = (
    "upload_interval_h, detect_interval_min, level_threshold_cm, fire_threshold_degc, tilt_threshold_deg"
)


@pytest.fixture
def fleet(
    mosquitto: Mosquitto,
    store: SqliteStore,
    settings: ApiSettings,
    registry: Registry,
    keys: dict[Role, str],
    clock: FakeClock,
) -> Iterator[TestClient]:
    """The API linked to the broker; the agent has a LoRaWAN bin sensor, a meter and a cabinet."""
    linked = settings.model_copy(update={"broker_url": mosquitto.url})
    app = create_app(store, settings=linked, clock=clock, registry=registry)
    with TestClient(app, headers=bearer(keys[Role.ENGINEER])) as client:
        assert app.state.context.agent_link.wait_connected(10)
        response = client.post(
            "/v1/agents", json={"id": AGENT, "site": ENGINEER_SITE, "location": LVIV, "lines": [*LINES, LORA]}
        )
        assert response.status_code == 201, response.text
        for device in (BIN, METER, CABINET):
            added = client.post(f"/v1/agents/{AGENT}/devices", json=device)
            assert added.status_code == 201, added.text
        yield client


def send(fleet: TestClient, **body: Any) -> Any:
    return fleet.post(f"/v1/agents/{AGENT}/commands", json=body)


def test_a_downlink_is_sent_as_set_field_and_tracked_to_its_result(
    fleet: TestClient, field_agent: Any, registry: Registry
) -> None:
    sent = send(fleet, device="bin-12", action="set_field", field="upload_interval_h", value=4)
    assert sent.status_code == 202, sent.text
    assert (sent.json()["target"], sent.json()["field"], sent.json()["value"]) == (
        None,
        "upload_interval_h",
        4,
    )
    command = field_agent.next(wire.Channel.CMD)
    wire.Command.model_validate(command)
    assert (command["id"], command["device"], command["action"]) == (sent.json()["id"], "bin-12", "set_field")
    assert (command["field"], command["value"], command.get("target")) == ("upload_interval_h", 4, None)
    field_agent.say(
        wire.Channel.CMD_RESULT,
        wire.CommandResult(
            agent=AGENT,
            id=command["id"],
            outcome=wire.CommandOutcome.DONE,
            ts=NOW_MS,
            value=4,
            detail="queued at the network server on fPort 3: 3830303239393939303130343831",
        ),
    )
    url = f"/v1/agents/{AGENT}/commands/{command['id']}"
    eventually(lambda: fleet.get(url).json()["status"] == "done")
    shown = fleet.get(url).json()
    assert (shown["field"], shown["value"], shown["target"]) == ("upload_interval_h", 4, None)
    assert "fPort 3" in shown["detail"]
    (entry,) = audit_log(registry, "command.send")
    assert entry["result"] == "ok"
    assert (entry["after"]["field"], entry["after"]["value"]) == ("upload_interval_h", 4)


def test_a_modbus_writable_register_is_set_within_its_range(fleet: TestClient, field_agent: Any) -> None:
    refused = send(fleet, device="meter-1", action="set_field", field="demand_period_min", value=90)
    assert refused.status_code == 422
    assert refused.json()["detail"]["problems"] == [
        "field: demand_period_min=90 is outside 0.0..60.0 of eastron_sdm630"
    ]
    sent = send(fleet, device="meter-1", action="set_field", field="demand_period_min", value=15)
    assert sent.status_code == 202, sent.text
    command = field_agent.next(wire.Channel.CMD)
    assert (command["field"], command["value"]) == ("demand_period_min", 15)


def test_the_devices_overlay_is_applied_before_the_check(fleet: TestClient) -> None:
    # A register scaled 0.001 by the device's overlay holds 254 as 254000: more than its u16 takes.
    scaled = {
        **CABINET,
        "id": "cab-scaled",
        "unit": 2,
        "overlay": {"registers": {"lamp0_brightness": {"scale": 0.001}}},
    }
    assert fleet.post(f"/v1/agents/{AGENT}/devices", json=scaled).status_code == 201
    refused = send(fleet, device="cab-scaled", action="set_field", field="lamp0_brightness", value=254)
    assert refused.json()["detail"]["problems"] == ["field: lamp0_brightness: 254 does not fit in a u16"]
    plain = send(fleet, device="cab-rynok", action="set_field", field="lamp0_brightness", value=254)
    assert plain.status_code == 202, plain.text


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (
            {"device": "bin-12", "field": "upload_interval_hours", "value": 4},
            [f"field: upload_interval_hours cannot be set on dingtek_df703; settable: {DINGTEK_SETTABLE}"],
        ),
        (
            {"device": "bin-12", "field": "upload_interval_h", "value": 0},
            ["field: upload_interval_h=0 is outside 1 or more"],
        ),
        (
            {"device": "bin-12", "field": "upload_interval_h", "value": 400},
            ["field: upload_interval_h=400 does not fit in a u8"],
        ),
        (
            {"device": "bin-12", "field": "upload_interval_h", "value": "4"},
            ["field: upload_interval_h takes a number, not '4'"],
        ),
        (
            {"device": "meter-1", "field": "voltage_l1", "value": 230},
            ["field: voltage_l1 cannot be set on eastron_sdm630; settable: demand_period_min"],
        ),
        (
            {"device": "bin-12", "field": "upload_interval_h"},
            ["value: set_field needs a value"],
        ),
        (
            {"device": "bin-12", "field": "upload_interval_h", "value": 4, "target": {"kind": "cabinet"}},
            ["target: set_field has no target; remove it"],
        ),
        (
            {"device": "no-such", "field": "upload_interval_h", "value": 4},
            [f"device: no device 'no-such' on agent {AGENT!r}"],
        ),
    ],
)
def test_a_field_the_profile_does_not_let_set_is_refused_and_audited(
    fleet: TestClient, registry: Registry, body: dict[str, Any], problems: list[str]
) -> None:
    response = send(fleet, action="set_field", **body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["problems"] == problems
    (entry,) = audit_log(registry, "command.send")
    assert (entry["result"], entry["detail"]) == ("refused", "; ".join(problems))


def test_lighting_commands_take_no_field_and_need_a_target(fleet: TestClient) -> None:
    response = send(fleet, device="cab-rynok", action="on", field="lamp1_brightness", value=3)
    assert response.json()["detail"]["problems"] == [
        "field: only set_field takes a field",
        "value: only set_field takes a value",
        "target: on needs a target (lamp, group or cabinet)",
    ]
    assert send(fleet, device="bin-12", action="on", target={"kind": "cabinet"}).json()["detail"][
        "problems"
    ] == ["device: 'bin-12' is not a lighting controller"]


def test_a_set_field_waits_for_its_time_or_for_dusk(
    fleet: TestClient, field_agent: Any, clock: FakeClock
) -> None:
    later = send(fleet, device="bin-12", action="set_field", field="upload_interval_h", value=6, at="+30m")
    assert later.status_code == 202, later.text
    assert (later.json()["status"], later.json()["due_at"]) == ("scheduled", "2027-01-15T08:30:00.000Z")
    dusk = send(
        fleet,
        device="bin-12",
        action="set_field",
        field="detect_interval_min",
        value=10,
        sun={"event": "dusk"},
    )
    # NOW_MS is 2027-01-15 08:00 UTC; civil dusk in Lviv that day is 15:27 UTC.
    assert dusk.json()["due_at"].startswith("2027-01-15T15:27")
    clock.now_ms = NOW_MS + 30 * 60_000  # due: the dispatcher sends it on its next tick, not the dusk one
    command = field_agent.next(wire.Channel.CMD)
    assert (command["id"], command["field"], command["value"]) == (later.json()["id"], "upload_interval_h", 6)
    url = f"/v1/agents/{AGENT}/commands"
    eventually(lambda: fleet.get(f"{url}/{later.json()['id']}").json()["status"] == "sent")
    assert fleet.get(f"{url}/{dusk.json()['id']}").json()["status"] == "scheduled"
