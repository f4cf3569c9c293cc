"""Agents speak only for their own devices, vehicles and site (collector/owners.py; issues 21.2, 22.3).

The configs are built as the API pushes them (``wire.DesiredConfig`` from an agent's ``site``,
``lines`` and ``devices``): the bus is the shipped example ``edge/examples/bus.yaml``. Conversion
tests run both paths (fast and exact) and compare them; the rest run on real Mosquitto and the
stores, with the configs retained on the broker as the API leaves them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from citygw.contract import wire
from collector.convert import EARLIEST_TS_MS, MAX_FUTURE_MS
from collector.dead_letter import Reason
from collector.owners import OwnerPolicy
from collector.service import Collector
from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import Agent, fast, now_ms, started, stored, wait_until
from tests.collector.test_fastpath import outcome
from tests.services import Mosquitto

BUS_YAML = Path(__file__).resolve().parents[2] / "edge" / "examples" / "bus.yaml"
BUS = yaml.safe_load(BUS_YAML.read_text())  # agent bus-4711, site depot-north, GPS bus-4711-gps in bus-4711
AQ = {
    "agent_id": "aq-harbour",
    "site": "harbour",
    "lines": [{"id": "rs485-1", "kind": "rtu", "port": "/dev/ttyUSB0", "baudrate": 9600}],
    "devices": [{"id": "aq-harbour-1", "line": "rs485-1", "profile": "jxbs_3001", "unit": 1, "poll_s": 10}],
}
BUS_GPS, BUS_VEHICLE = BUS["devices"][0]["id"], BUS["devices"][0]["vehicle"]["id"]


def config(agent: dict[str, Any], version: int = 1, devices: list[dict[str, Any]] | None = None) -> bytes:
    """The ``config`` payload the API pushes for ``agent`` (api/registry/fleet.py: desired_config)."""
    return wire.encode(
        wire.DesiredConfig(
            agent=agent["agent_id"],
            version=version,
            issued_at=now_ms(),
            site=agent["site"],
            lines=agent["lines"],
            devices=agent["devices"] if devices is None else devices,
        )
    )


def position(device: str, **tags: str) -> dict[str, Any]:
    return {
        "device": device,
        "measurement": "vehicle_position",
        "ts": now_ms() - 1000,
        "fields": {"lat": 52.52, "lon": 13.40},
        "tags": tags,
    }


def air(device: str = "aq-harbour-1", **tags: str) -> dict[str, Any]:
    return {
        "device": device,
        "measurement": "air_quality",
        "ts": now_ms() - 1000,
        "fields": {"pm25": 7.5},
    } | ({"tags": tags} if tags else {})


def telemetry(agent: str, *readings: dict[str, Any], seq: int = 0) -> bytes:
    return json.dumps({"schema": 1, "agent": agent, "seq": seq, "readings": list(readings)}).encode()


def both_paths(policy: OwnerPolicy) -> tuple[Collector, Collector]:
    """(with the fast path, without it), never started, holding the bus and AQ agents to their configs."""
    store = InfluxV1Store("http://127.0.0.1:9", "unused")
    pair = []
    for name in ("fast", "exact"):
        collector = Collector("mqtt://127.0.0.1:9", store, client_id=name, owners=policy)
        for agent in (BUS, AQ):
            assert collector.converter.owners.take(agent["agent_id"], config(agent)) is None
        # Field types known, so the fast path takes what it may (it leaves unknown ones to the exact path).
        collector.converter.field_types.check("vehicle_position", {"lat": 1.0, "lon": 1.0})
        collector.converter.field_types.check("air_quality", {"pm25": 1.0})
        pair.append(collector)
    pair[1].converter.fast = None
    return pair[0], pair[1]


@pytest.fixture(scope="module", params=list(OwnerPolicy))
def collectors(request: pytest.FixtureRequest) -> tuple[Collector, Collector]:
    return both_paths(request.param)


def topic(agent: str) -> str:
    return wire.topic(agent, wire.Channel.TELEMETRY)


STORE, REFUSED = "store", Reason.NOT_OWNED
CASES = [  # (what, agent, reading, under known, under strict); off stores every one
    (
        "AQ agent moves another agent's bus",
        "aq-harbour",
        position(BUS_GPS, vehicle=BUS_VEHICLE),
        REFUSED,
        REFUSED,
    ),
    (
        "AQ agent adds a ghost bus",
        "aq-harbour",
        position("aq-harbour-1", vehicle="bus-9999"),
        REFUSED,
        REFUSED,
    ),
    (
        "bus agent, its own bus",
        "bus-4711",
        position(BUS_GPS, vehicle=BUS_VEHICLE, site="depot-north"),
        STORE,
        STORE,
    ),
    ("bus agent, another bus", "bus-4711", position(BUS_GPS, vehicle="bus-0815"), REFUSED, REFUSED),
    ("AQ agent, its own device", "aq-harbour", air(), STORE, STORE),
    ("AQ agent tags another site", "aq-harbour", air(site="depot-north"), STORE, STORE),
    ("agent without a config", "aq-unknown", air("aq-unknown-1", site="harbour"), STORE, REFUSED),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_both_paths_hold_agents_to_their_configs_alike(
    collectors: tuple[Collector, Collector], case: tuple[str, str, dict[str, Any], str, str]
) -> None:
    fast_one, exact = collectors
    what, agent, reading, known, strict = case
    payload = telemetry(agent, reading)
    got = outcome(fast_one, payload, topic(agent))
    assert got == outcome(exact, payload, topic(agent)), what
    expected = {OwnerPolicy.OFF: STORE, OwnerPolicy.KNOWN: known, OwnerPolicy.STRICT: strict}
    if expected[fast_one.converter.owners.policy] == STORE:
        assert len(got["lines"]) == 1, what
        assert not got["dead"], what
    else:
        assert not got["lines"], what
        assert [reason for reason, _, _ in got["dead"]] == [REFUSED], what


def test_the_site_tag_is_the_configs_whatever_the_agent_says() -> None:
    for collector in both_paths(OwnerPolicy.KNOWN):
        forged = outcome(collector, telemetry("aq-harbour", air(site="depot-north")), topic("aq-harbour"))
        untagged = outcome(collector, telemetry("aq-harbour", air()), topic("aq-harbour"))
        for got in (forged, untagged):
            assert len(got["lines"]) == 1
            assert ",site=harbour " in got["lines"][0]
            assert "depot-north" not in got["lines"][0]
    off = both_paths(OwnerPolicy.OFF)[0]
    kept = outcome(off, telemetry("aq-harbour", air(site="depot-north")), topic("aq-harbour"))
    assert ",site=depot-north " in kept["lines"][0]  # off: today's behaviour, the agent's word


def test_a_new_config_is_checked_afresh_by_the_fast_path() -> None:
    """The fast path's templates remember the ownership check: a push must not leave a stale one."""
    collector, _ = both_paths(OwnerPolicy.KNOWN)
    assert collector.converter.fast is not None
    window = (EARLIEST_TS_MS, now_ms() + MAX_FUTURE_MS)
    new_device = {**AQ["devices"][0], "id": "aq-harbour-2"}
    payload = telemetry("aq-harbour", air("aq-harbour-2"))
    assert collector.converter.fast.convert(payload, "aq-harbour", *window) is None  # not owned: exact path
    collector.converter.owners.take("aq-harbour", config(AQ, 2, [*AQ["devices"], new_device]))
    taken = collector.converter.fast.convert(payload, "aq-harbour", *window)
    assert taken is not None
    assert "device=aq-harbour-2" in taken.lines[0]
    moved = {**AQ, "site": "harbour-east"}
    collector.converter.owners.take("aq-harbour", config(moved, 3, [new_device]))
    taken = collector.converter.fast.convert(payload, "aq-harbour", *window)
    assert taken is not None
    assert ",site=harbour-east " in taken.lines[0]
    assert taken.site == "harbour-east"
    own_before = telemetry("aq-harbour", air("aq-harbour-1"))
    assert collector.converter.fast.convert(own_before, "aq-harbour", *window) is None  # removed by v3


_PAIRS = {policy: both_paths(policy) for policy in OwnerPolicy}
_devices = st.sampled_from([BUS_GPS, "bus-4711-validator", "aq-harbour-1", "aq-harbour-2", "bus-4711"])
_tags = st.dictionaries(
    st.sampled_from(["vehicle", "site", "route", "district"]),
    st.sampled_from([BUS_VEHICLE, "bus-9999", "harbour", "depot-north", "A3"]),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    agent=st.sampled_from(["bus-4711", "aq-harbour", "aq-unknown"]),
    readings=st.lists(st.tuples(_devices, _tags, st.booleans()), min_size=1, max_size=4),
    policy=st.sampled_from(list(OwnerPolicy)),
)
def test_both_paths_agree_on_generated_readings(
    agent: str, readings: list[tuple[str, dict[str, str], bool]], policy: OwnerPolicy
) -> None:
    fast_one, exact = _PAIRS[policy]
    payload = telemetry(
        agent,
        *(
            position(device, **tags) if is_position else air(device, **tags)
            for device, tags, is_position in readings
        ),
    )
    assert outcome(fast_one, payload, topic(agent)) == outcome(exact, payload, topic(agent))


# -- on real Mosquitto and the stores --


def push(mosquitto: Mosquitto, *configs: tuple[str, bytes]) -> None:
    """Publish configs as the API does: QoS 1, retained (api/mqtt_link.py)."""
    api = Agent(mosquitto, "api")
    for agent, payload in configs:
        api.publish(payload, agent, wire.Channel.CONFIG, retain=True)
    api.close()


def dead_letters(store: Store) -> list[tuple[str, str]]:
    return sorted((row.tags["agent"], row.tags["reason"]) for row in stored(store, "dead_letter"))


def forge_and_send(mosquitto: Mosquitto) -> None:
    """The AQ agent moves the bus, adds a ghost bus and raises another site's alert; the bus reports."""
    aq, bus = Agent(mosquitto, "aq-harbour"), Agent(mosquitto, "bus-4711")
    aq.publish(telemetry("aq-harbour", position(BUS_GPS, vehicle=BUS_VEHICLE, site="depot-north"), seq=0))
    aq.publish(telemetry("aq-harbour", position("aq-harbour-1", vehicle="bus-9999", site="harbour"), seq=1))
    aq.publish(telemetry("aq-harbour", air(site="depot-north"), seq=2))
    bus.publish(telemetry("bus-4711", position(BUS_GPS, vehicle=BUS_VEHICLE, site="depot-north")))
    aq.close()
    bus.close()


def test_an_air_quality_agent_moves_no_bus_and_raises_no_other_sites_alert(
    mosquitto: Mosquitto, store: Store
) -> None:
    push(mosquitto, ("bus-4711", config(BUS)), ("aq-harbour", config(AQ)))
    with started(fast(mosquitto, store, owners=OwnerPolicy.KNOWN)):
        forge_and_send(mosquitto)
        wait_until(lambda: len(stored(store, "air_quality")) == 1, "the AQ reading stored")
        wait_until(lambda: len(dead_letters(store)) == 2, "two dead letters")
        wait_until(lambda: len(stored(store, "vehicle_position")) == 1, "the bus's own position stored")
    assert dead_letters(store) == [("aq-harbour", "not_owned")] * 2
    [bus] = stored(store, "vehicle_position")
    assert dict(bus.tags) == {
        "agent": "bus-4711",
        "device": BUS_GPS,
        "vehicle": BUS_VEHICLE,
        "site": "depot-north",
    }
    [reading] = stored(store, "air_quality")
    assert reading.tags["site"] == "harbour"  # the config's: the forged depot-north never reaches the store


def test_off_stores_what_agents_say_as_before(mosquitto: Mosquitto, store: Store) -> None:
    push(mosquitto, ("bus-4711", config(BUS)), ("aq-harbour", config(AQ)))
    with started(fast(mosquitto, store)):
        forge_and_send(mosquitto)
        wait_until(lambda: len(stored(store, "vehicle_position")) == 3, "every position stored")
        wait_until(lambda: len(stored(store, "air_quality")) == 1, "the AQ reading stored")
    assert dead_letters(store) == []
    assert {row.tags["vehicle"] for row in stored(store, "vehicle_position")} == {BUS_VEHICLE, "bus-9999"}
    assert stored(store, "air_quality")[0].tags["site"] == "depot-north"


def test_a_device_added_by_a_push_is_accepted_from_then_on(mosquitto: Mosquitto, store: Store) -> None:
    push(mosquitto, ("aq-harbour", config(AQ)))
    aq = Agent(mosquitto, "aq-harbour")
    with started(fast(mosquitto, store, owners=OwnerPolicy.STRICT)) as collector:
        assert "\ncitygw_collector_agent_configs 1\n" in collector.metrics_text()
        aq.publish(telemetry("aq-harbour", air("aq-harbour-2"), seq=0))
        wait_until(lambda: dead_letters(store) == [("aq-harbour", "not_owned")], "not_owned before the push")
        new_device = {**AQ["devices"][0], "id": "aq-harbour-2", "unit": 2}
        push(mosquitto, ("aq-harbour", config(AQ, 2, [*AQ["devices"], new_device])))
        owned = collector.converter.owners.of
        wait_until(lambda: getattr(owned("aq-harbour"), "version", None) == 2, "config v2 taken")
        aq.publish(telemetry("aq-harbour", air("aq-harbour-2"), seq=1))
        wait_until(lambda: len(stored(store, "air_quality")) == 1, "aq-harbour-2 stored after the push")
    aq.close()
    assert stored(store, "air_quality")[0].tags["device"] == "aq-harbour-2"
    assert len(dead_letters(store)) == 1


def test_readings_queued_while_the_collector_was_away_wait_for_the_configs(
    mosquitto: Mosquitto, store: Store
) -> None:
    """At a restart the broker sends the session's queued telemetry before the retained configs: the
    converter waits for them, so a forgery sent meanwhile is still refused, and under strict an agent
    with a config is not refused for want of it."""
    push(mosquitto, ("bus-4711", config(BUS)), ("aq-harbour", config(AQ)))
    started(fast(mosquitto, store, client_id="owners-restart", owners=OwnerPolicy.STRICT)).stop()
    forge_and_send(mosquitto)  # queued in the collector's session
    unknown = Agent(mosquitto, "aq-unknown")
    unknown.publish(telemetry("aq-unknown", air("aq-unknown-1")))
    unknown.close()
    with started(fast(mosquitto, store, client_id="owners-restart", owners=OwnerPolicy.STRICT)):
        wait_until(lambda: len(dead_letters(store)) == 3, "three dead letters")
        wait_until(lambda: len(stored(store, "air_quality")) == 1, "the AQ reading stored")
        wait_until(lambda: len(stored(store, "vehicle_position")) == 1, "the bus's own position stored")
    assert dead_letters(store) == [("aq-harbour", "not_owned")] * 2 + [("aq-unknown", "not_owned")]
    assert stored(store, "vehicle_position")[0].tags["agent"] == "bus-4711"


def test_health_and_status_points_take_the_configs_site() -> None:
    """agent_health has no site of its own: it was the agent's latest telemetry's, forgeable too (as
    taken before the agent's config came, under known), and none before its first telemetry."""
    collector, _ = both_paths(OwnerPolicy.KNOWN)
    health = wire.Health(
        agent="aq-harbour",
        ts=now_ms() - 1000,
        devices={"aq-harbour-1": wire.DeviceHealth(state=wire.DeviceState.OK)},
        journal=wire.JournalHealth(backlog=0, dropped=0),
    )
    status = wire.Status(agent="aq-harbour", state=wire.AgentState.ONLINE)
    for learnt in (None, "depot-north"):
        if learnt is not None:
            collector.converter.sites["aq-harbour"] = learnt
        for channel, payload in ((wire.Channel.HEALTH, health), (wire.Channel.STATUS, status)):
            lines = outcome(collector, wire.encode(payload), wire.topic("aq-harbour", channel))["lines"]
            assert lines
            assert all(",site=harbour" in line for line in lines), lines
