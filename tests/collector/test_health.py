"""Agents' health and status through real Mosquitto into the stores as ``agent_health`` points."""

from __future__ import annotations

from pathlib import Path

import pytest

from citygw.contract import wire
from collector.dead_letter import DEAD_LETTER, Reason
from collector.health import AGENT_HEALTH, STATE_CODES, DeviceHealthGate, health_points
from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import Agent, fast, now_ms, started, stored, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration
HEALTH, STATUS = wire.Channel.HEALTH, wire.Channel.STATUS


def health(agent_id: str, ts: int) -> wire.Health:
    return wire.Health(
        agent=agent_id,
        ts=ts,
        devices={
            # Steady: read 2 s ago, reporting by exception; its last reading was published 10 min ago.
            "meter-1": wire.DeviceHealth(
                state=wire.DeviceState.OK,
                last_ok=ts - 2_000,
                reads=10,
                last_published=ts - 600_000,
                suppressed=9,
            ),
            "meter-2": wire.DeviceHealth(
                state=wire.DeviceState.TIMEOUT,
                last_ok=ts - 600_000,
                reads=5,
                failures=7,
                quarantined=True,
                error="no answer",
            ),
            "meter-3": wire.DeviceHealth(
                state=wire.DeviceState.EXCEPTION, reads=3, failures=1, exception_code=2, counter_resets=1
            ),
        },
        journal=wire.JournalHealth(backlog=42, dropped=3),
    )


def status(agent_id: str, state: wire.AgentState) -> bytes:
    return wire.encode(wire.Status(agent=agent_id, state=state))


def test_every_device_state_has_a_code_of_its_own() -> None:
    assert set(STATE_CODES) == set(wire.DeviceState)
    assert len(set(STATE_CODES.values())) == len(STATE_CODES)


def test_fields_left_out_are_counted_and_a_change_in_them_is_written_at_once() -> None:
    gate, ts = DeviceHealthGate(every_s=900), now_ms()

    def device_points(left_out: dict[str, str] | None, at: int) -> list[int]:
        device = wire.DeviceHealth(state=wire.DeviceState.OK, reads=10, fields_left_out=left_out)
        message = wire.Health(
            agent="agent-1",
            ts=at,
            devices={"meter-1": device},
            journal=wire.JournalHealth(backlog=0, dropped=0),
        )
        return [
            int(p.fields["fields_left_out"]) for p in health_points(message, gate=gate) if "device" in p.tags
        ]

    nan = {"flow_rate": "flow_rate: the device reports nan (no valid measurement)"}
    assert device_points(None, ts) == [0]
    assert device_points(None, ts + 10_000) == []  # nothing changed: not written again yet
    assert device_points(nan, ts + 20_000) == [1]  # a field left out: written at once
    assert device_points(nan, ts + 30_000) == []
    assert device_points(nan | {"signal_quality": "out of range"}, ts + 40_000) == [2]
    assert device_points(None, ts + 50_000) == [0]  # all decode again: written at once, as 0


def test_health_and_status_are_stored_per_agent_and_per_device(
    mosquitto: Mosquitto, agent: Agent, store: Store
) -> None:
    ts = now_ms() - 5_000
    # The retained birth message is there before the collector subscribes.
    agent.publish(status("agent-1", wire.AgentState.ONLINE), channel=STATUS, retain=True)
    with started(fast(mosquitto, store)) as collector:
        wait_until(lambda: collector.stats.messages == 1, "the retained status")
        agent.publish(agent.batch(count=1))  # tells the collector the agent's site
        agent.publish(wire.encode(health("agent-1", ts)), channel=HEALTH, qos=0)  # as the edge sends it
        agent.publish(status("agent-1", wire.AgentState.OFFLINE), channel=STATUS, retain=True)
        wait_until(lambda: collector.stats.messages == 4, "telemetry, health and the last will")
        assert collector.stats.dead_letters == 0

    rows = stored(store, AGENT_HEALTH)
    at_ts = {row.tags.get("device", "-"): row for row in rows if row.ts_ms == ts}
    site = {"agent": "agent-1", "site": "depot north"}
    assert at_ts["-"].tags == site
    assert at_ts["-"].values == {
        "journal_backlog": 42,
        "journal_dropped": 3,
        "devices_total": 3,
        "devices_ok": 1,
        "devices_failing": 2,
        "devices_quarantined": 1,
    }
    assert at_ts["meter-2"].tags == site | {"device": "meter-2"}
    assert at_ts["meter-1"].values["ok"] == 1
    # A steady device: read a moment ago, nothing to publish for 10 min; a silent one: no read for 10 min.
    steady = at_ts["meter-1"].values
    assert (steady["last_ok_age_s"], steady["last_published_age_s"], steady["suppressed"]) == (2.0, 600.0, 9)
    assert at_ts["meter-2"].values == {
        "state": "timeout",
        "state_code": STATE_CODES[wire.DeviceState.TIMEOUT],
        "ok": 0,
        "quarantined": 1,
        "reads": 5,
        "failures": 7,
        "fields_left_out": 0,
        "last_ok_age_s": 600.0,
    }
    assert at_ts["meter-3"].values["exception_code"] == 2
    assert at_ts["meter-3"].values["counter_resets"] == 1
    assert "last_ok_age_s" not in at_ts["meter-3"].values
    # Online before the site was known, offline after; each at the time it was received.
    online = sorted((row for row in rows if "online" in row.values), key=lambda row: row.ts_ms)
    assert [(row.tags, row.values) for row in online] == [
        ({"agent": "agent-1"}, {"online": 1}),
        (site, {"online": 0}),
    ]
    assert len(rows) == 6
    agent.publish(b"", channel=STATUS, retain=True)  # clear the retained status


def test_bad_health_and_status_are_dead_lettered_and_good_ones_stored(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    ts = now_ms()
    bad = [
        (HEALTH, b'{"schema": 1, "agent": "agent-1", "ts": ', "agent-1", Reason.INVALID_JSON),
        (STATUS, b'{"schema": 1, "agent": "agent-1", "state": "asleep"}', "agent-1", Reason.SCHEMA),
        (HEALTH, wire.encode(health("agent-2", ts)), "agent-1", Reason.AGENT_MISMATCH),
        (HEALTH, wire.encode(health("agent-1", 946_684_799_999)), "agent-1", Reason.TIMESTAMP),
        (HEALTH, wire.encode(health("agent-1", ts + 11 * 60_000)), "agent-1", Reason.TIMESTAMP),
    ]
    with started(fast(mosquitto, store, device_health_every_s=0)) as collector:
        for i, (channel, payload, topic_agent, _) in enumerate(bad):
            agent.publish(wire.encode(health("agent-1", ts + i)), channel=HEALTH)
            agent.publish(payload, topic_agent, channel)
        agent.publish(b"", channel=STATUS, retain=True)  # clearing the retained status is no dead letter
        wait_until(lambda: collector.stats.messages == 2 * len(bad) + 1, "every message")

        letters = stored(store, DEAD_LETTER)
        assert [(row.tags["reason"], row.values["topic"]) for row in letters] == [
            (reason, wire.topic(topic_agent, channel)) for channel, _, topic_agent, reason in bad
        ]
        good = {row.ts_ms for row in stored(store, AGENT_HEALTH)}
        assert good == {ts + i for i in range(len(bad))}
        assert collector.stats.points == 4 * len(bad)
    store.close()


def test_health_is_acknowledged_only_once_stored(mosquitto: Mosquitto, agent: Agent, tmp_path: Path) -> None:
    """A QoS 1 health message taken while the store is down comes back to the same client id."""
    influxdb = InfluxDB(tmp_path / "influxdb")
    influxdb.start()
    try:
        store = InfluxV1Store(influxdb.url, "city")
        store.ensure_database()
        influxdb.stop()
        ts = now_ms()
        first = started(fast(mosquitto, store))
        agent.publish(wire.encode(health("agent-1", ts)), channel=HEALTH)
        wait_until(lambda: first.stats.store_retries >= 2, "retries")
        first.stop(timeout=5)
        assert first.stats.messages == 0

        influxdb.start()
        with started(fast(mosquitto, store)) as second:
            wait_until(lambda: second.stats.messages >= 1, "the redelivered health")
        assert len([row for row in stored(store, AGENT_HEALTH) if row.ts_ms == ts]) == 4
        store.close()
    finally:
        influxdb.stop()


def test_unchanged_devices_are_stored_every_device_health_every_s_changed_ones_at_once(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    t0 = now_ms() - 20 * 60_000
    first = health("agent-1", t0)
    failing = wire.DeviceHealth(state=wire.DeviceState.CRC_ERROR, reads=11, failures=1)
    changed = first.model_copy(update={"ts": t0 + 1_000, "devices": first.devices | {"meter-1": failing}})
    later = changed.model_copy(update={"ts": t0 + 900_000})
    with started(fast(mosquitto, store, device_health_every_s=900)) as collector:
        for message in (first, changed, later):
            agent.publish(wire.encode(message), channel=HEALTH)
        wait_until(lambda: collector.stats.messages == 3, "three health messages")
    rows = stored(store, AGENT_HEALTH)
    devices = {
        ts: sorted(r.tags["device"] for r in rows if r.ts_ms == ts and "device" in r.tags)
        for ts in (
            t0,
            t0 + 1_000,
            t0 + 900_000,
        )
    }
    assert devices == {
        t0: ["meter-1", "meter-2", "meter-3"],
        t0 + 1_000: ["meter-1"],
        t0 + 900_000: ["meter-2", "meter-3"],
    }
    assert len([r for r in rows if "journal_backlog" in r.values]) == 3
    store.close()
