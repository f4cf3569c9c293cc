"""Alert rules over a real SqliteStore and registry: raised, kept, ended, audited; the API over them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import event, func, select

from api.alerts.delivery import AlertEvent
from api.alerts.engine import evaluate
from api.registry import Registry, open_registry
from api.registry.live import apply_health, apply_status
from api.registry.models import Agent, Alert, AuditEntry, Device
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import wire
from collector.store.base import Point
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, MINUTE_MS, NOW_MS, bearer, on_every_registry, reading

pytestmark = on_every_registry

HOUR_MS = 60 * MINUTE_MS


def water(device: str, flows: list[float], *, every_min: int = 20, end_ms: int = NOW_MS) -> list[Point]:
    return [
        reading("water", device, end_ms - (len(flows) - i) * every_min * MINUTE_MS, {"flow_rate": flow})
        for i, flow in enumerate(flows)
    ]


def city_in_trouble() -> list[Point]:
    return [
        # 60 µg/m³ of PM2.5: Poor (band 4).
        reading("air_quality", "aq-rynok", NOW_MS - MINUTE_MS, {"pm25": 60.0}, district="halytskyi"),
        reading("air_quality", "aq-park", NOW_MS - MINUTE_MS, {"pm25": 6.0}),
        # DALI status: lamp1 on with a lamp failure (b1), lamp2 ballast failure (b0), lamp0 fine.
        reading(
            "lighting",
            "cab-rynok",
            NOW_MS - MINUTE_MS,
            {"lamp0_status": 4, "lamp1_status": 6, "lamp2_status": 1, "group0_status": 2, "bus_load": 3},
            site=ENGINEER_SITE,
        ),
        # Never below 0.1 m³/h for 4 h: a leak. A house that sleeps at night: not one.
        *water("w-leak", [0.3, 0.1, 0.2, 0.15] * 3 + [0.4]),
        *water("w-house", [0.3, 0.0, 0.0, 0.2] * 3 + [0.4]),
        # Nothing for a day: no flow.
        *water("w-stuck", [0.0] * 25, every_min=60),
    ]


def subjects(events: list[Any]) -> set[tuple[str, str, str]]:
    return {(e.event, e.rule, e.subject) for e in events}


def add_agents(registry: Registry) -> None:
    with registry.session() as session:
        session.add(Agent(id="edge-off", site="sykhiv", lines=[], created_at=0, state="offline"))
        session.add(
            Agent(
                id="edge-on",
                site=ENGINEER_SITE,
                lines=[],
                created_at=0,
                state="online",
                device_health={
                    "meter-9": {"state": "timeout", "quarantined": True, "last_ok": NOW_MS - HOUR_MS},
                    "meter-1": {"state": "ok"},
                    "aq-x": {"state": "crc_error"},
                    "meter-7": {"state": "timeout"},  # registered on edge-off, not here
                    **{f"ghost-{n}": {"state": "timeout"} for n in range(2000)},  # registered nowhere
                },
            )
        )
        for agent, device in (("edge-on", "meter-9"), ("edge-on", "meter-1"), ("edge-off", "meter-7")):
            session.add(Device(agent_id=agent, device_id=device, spec={}, created_at=0, updated_at=0))
        session.commit()


def test_every_rule_raises_then_ends_when_cured(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    store.write(city_in_trouble())
    add_agents(registry)
    raised = evaluate(registry, store, settings, NOW_MS)
    assert subjects(raised) == {
        ("raised", "aq_band", "aq-rynok"),
        ("raised", "lamp_failure", "cab-rynok:lamp1"),
        ("raised", "lamp_failure", "cab-rynok:lamp2"),
        ("raised", "water_leak", "w-leak"),
        ("raised", "water_no_flow", "w-stuck"),
        ("raised", "device_offline", "meter-9"),
        ("raised", "agent_offline", "edge-off"),
    }
    aq = next(e for e in raised if e.rule == "aq_band")
    assert aq.district == "halytskyi"
    assert aq.data == {"band": 4, "level": "Poor", "pollutant": "pm2_5"}
    assert evaluate(registry, store, settings, NOW_MS + MINUTE_MS) == []  # still true: nothing new

    later = NOW_MS + 2 * MINUTE_MS
    store.write(
        [
            reading("air_quality", "aq-rynok", later, {"pm25": 20.0}, district="halytskyi"),
            reading(
                "lighting", "cab-rynok", later, {"lamp1_status": 4, "lamp2_status": 1}, site=ENGINEER_SITE
            ),
            reading("water", "w-leak", later, {"flow_rate": 0.0}),
        ]
    )
    with registry.session() as session:
        session.get_one(Agent, "edge-off").state = "online"
        session.commit()
    ended = evaluate(registry, store, settings, later)
    assert subjects(ended) == {
        ("ended", "aq_band", "aq-rynok"),
        ("ended", "lamp_failure", "cab-rynok:lamp1"),
        ("ended", "water_leak", "w-leak"),
        ("ended", "agent_offline", "edge-off"),
    }
    with registry.session() as session:
        actions = [(a.action, a.target, a.actor) for a in session.scalars(select(AuditEntry))]
    assert ("alert.raise", "aq_band:aq-rynok", "system:alert-rules") in actions
    assert ("alert.end", "water_leak:w-leak", "system:alert-rules") in actions
    assert len(actions) == 11


class FirstWritesMeet:
    """Holds each replica's first write to the registry until the other's: both have read the alerts and
    decided before either changes one, the race two API replicas run on every tick."""

    def __init__(self) -> None:
        self._barrier = threading.Barrier(2, timeout=10)
        self._waited: set[int] = set()

    def __call__(self, _connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().startswith(("INSERT", "UPDATE")) and threading.get_ident() not in self._waited:
            self._waited.add(threading.get_ident())
            self._barrier.wait()


def side_by_side(
    replicas: list[Registry], store: SqliteStore, settings: ApiSettings, now_ms: int
) -> list[AlertEvent]:
    """What both replicas' evaluate() at ``now_ms``, run at once in two threads, give to delivery."""
    meet = FirstWritesMeet()
    for replica in replicas:
        event.listen(replica.engine, "before_cursor_execute", meet)
    try:
        with ThreadPoolExecutor(len(replicas)) as pool:
            runs = list(pool.map(lambda replica: evaluate(replica, store, settings, now_ms), replicas))
    finally:
        for replica in replicas:
            event.remove(replica.engine, "before_cursor_execute", meet)
    return [e for events in runs for e in events]


def test_two_replicas_raise_and_end_each_alert_once(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    store.write(city_in_trouble())
    add_agents(registry)
    other = open_registry(registry.engine.url.render_as_string(hide_password=False))
    replicas = [registry, other]
    try:
        raised = side_by_side(replicas, store, settings, NOW_MS)
        assert len(raised) == len(subjects(raised)) == 7  # each delivered once, by one replica or the other
        with registry.session() as session:
            active = session.execute(
                select(Alert.rule, Alert.subject, func.count())
                .where(Alert.state == "active")
                .group_by(Alert.rule, Alert.subject)
            ).all()
        assert sorted((rule, subject) for rule, subject, _ in active) == sorted(
            (e.rule, e.subject) for e in raised
        )
        assert {count for *_, count in active} == {1}

        store.write([reading("air_quality", "aq-rynok", NOW_MS + MINUTE_MS, {"pm25": 20.0})])
        ended = side_by_side(replicas, store, settings, NOW_MS + MINUTE_MS)
        assert subjects(ended) == {("ended", "aq_band", "aq-rynok")}
        assert len(ended) == 1
        with registry.session() as session:
            actions = list(session.scalars(select(AuditEntry.action)))
        assert sorted(actions) == ["alert.end"] + ["alert.raise"] * 7
    finally:
        other.close()


def test_a_store_that_cannot_answer_ends_nothing(
    tmp_path: Any, registry: Registry, settings: ApiSettings
) -> None:
    store = SqliteStore(tmp_path / "down.sqlite")
    store.write(city_in_trouble())
    add_agents(registry)
    assert len(evaluate(registry, store, settings, NOW_MS)) == 7
    store.close()
    # The store's rules cannot run: their alerts stay; the registry's rules still run.
    assert evaluate(registry, store, settings, NOW_MS + MINUTE_MS) == []


def test_alerts_through_the_api(
    anonymous: TestClient,
    store: SqliteStore,
    registry: Registry,
    settings: ApiSettings,
    keys: dict[Role, str],
) -> None:
    store.write(city_in_trouble())
    add_agents(registry)
    evaluate(registry, store, settings, NOW_MS)
    utility, engineer, admin = (bearer(keys[r]) for r in (Role.UTILITY, Role.ENGINEER, Role.ADMIN))

    active = anonymous.get("/v1/alerts", headers=utility).json()
    assert len(active) == 7
    assert (
        anonymous.get("/v1/alerts", params={"rule": "water_leak"}, headers=utility).json()[0]["subject"]
        == "w-leak"
    )
    assert anonymous.get("/v1/alerts", params={"state": "ended"}, headers=utility).json() == []
    assert anonymous.get("/v1/alerts", params={"rule": "' OR 1=1"}, headers=utility).status_code == 422

    lamp = next(a for a in active if a["subject"] == "cab-rynok:lamp1")
    offline = next(a for a in active if a["subject"] == "edge-off")
    assert anonymous.post(f"/v1/alerts/{lamp['id']}/acknowledge", headers=utility).status_code == 403
    assert (
        anonymous.post(f"/v1/alerts/{offline['id']}/acknowledge", headers=engineer).status_code == 403
    )  # sykhiv
    acked = anonymous.post(f"/v1/alerts/{lamp['id']}/acknowledge", headers=engineer)
    assert acked.status_code == 200
    assert acked.json()["acknowledged_by"].startswith("key:")
    assert anonymous.get(f"/v1/alerts/{lamp['id']}", headers=utility).json()["acknowledged_at"] is not None
    assert anonymous.get("/v1/alerts/999999", headers=utility).status_code == 404

    audit = anonymous.get("/v1/audit", params={"action": "alert.acknowledge"}, headers=admin).json()
    assert [(e["target"], e["result"]) for e in audit] == [("lamp_failure:cab-rynok:lamp1", "ok")]


def test_water_rules_need_readings_spanning_their_window(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    """Two readings 30 s apart raised water_leak (4 h window) and water_no_flow (1 d): they span neither."""
    half_minute = MINUTE_MS // 2
    store.write(
        [
            reading("water", "w-new-leak", NOW_MS - half_minute, {"flow_rate": 0.5}),
            reading("water", "w-new-leak", NOW_MS, {"flow_rate": 0.6}),
            reading("water", "w-new-dry", NOW_MS - half_minute, {"flow_rate": 0.0}),
            reading("water", "w-new-dry", NOW_MS, {"flow_rate": 0.0}),
            # Four hours and a day of readings: these span their windows.
            *water("w-old-leak", [0.5] * 13),
            *water("w-old-dry", [0.0] * 25, every_min=60),
        ]
    )
    raised = subjects(evaluate(registry, store, settings, NOW_MS))
    assert {(rule, subject) for _, rule, subject in raised if rule.startswith("water")} == {
        ("water_leak", "w-old-leak"),
        ("water_no_flow", "w-old-dry"),
    }


def test_a_pause_in_a_meters_data_neither_raises_nor_cures(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    store.write(water("w-leak", [0.5] * 13))
    assert subjects(evaluate(registry, store, settings, NOW_MS)) == {("raised", "water_leak", "w-leak")}
    # No reading for an hour: the last twelfth of the window is empty; the leak is not known cured.
    assert evaluate(registry, store, settings, NOW_MS + 60 * MINUTE_MS) == []
    store.write([reading("water", "w-leak", NOW_MS + 61 * MINUTE_MS, {"flow_rate": 0.0})])
    ended = evaluate(registry, store, settings, NOW_MS + 61 * MINUTE_MS)
    assert subjects(ended) == {("ended", "water_leak", "w-leak")}


def test_a_steady_device_reporting_by_exception_is_not_offline_a_silent_one_is(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    """Offline is the agent's word on the reads (health), never the age of the newest reading."""
    # A steady station reporting by exception: read 5 s ago, its newest reading (a heartbeat) 50 min old.
    store.write([reading("air_quality", "aq-steady", NOW_MS - 50 * MINUTE_MS, {"pm25": 6.0})])
    steady = wire.DeviceHealth(
        state=wire.DeviceState.OK,
        last_ok=NOW_MS - 5_000,
        last_published=NOW_MS - 50 * MINUTE_MS,
        suppressed=299,
    )
    silent = wire.DeviceHealth(
        state=wire.DeviceState.TIMEOUT,
        last_ok=NOW_MS - HOUR_MS,
        last_published=NOW_MS - HOUR_MS,
        quarantined=True,
    )
    health = wire.Health(
        agent="edge-rbe",
        ts=NOW_MS,
        devices={"aq-steady": steady, "aq-silent": silent},
        journal=wire.JournalHealth(backlog=0, dropped=0),
    )
    with registry.session() as session:
        apply_status(session, wire.Status(agent="edge-rbe", state=wire.AgentState.ONLINE), now_ms=NOW_MS)
        for device in ("aq-steady", "aq-silent"):  # only registered devices are alerted on
            session.add(Device(agent_id="edge-rbe", device_id=device, spec={}, created_at=0, updated_at=0))
        apply_health(session, health, now_ms=NOW_MS)
        session.commit()
    raised = evaluate(registry, store, settings, NOW_MS)
    assert {(e.rule, e.subject) for e in raised if e.rule == "device_offline"} == {
        ("device_offline", "aq-silent")
    }
    silent_alert = next(e for e in raised if e.subject == "aq-silent")
    assert silent_alert.data["last_ok"] == NOW_MS - HOUR_MS


def register(registry: Registry, *devices: tuple[str, dict[str, Any]]) -> None:
    """Active devices on one agent, each with its spec's reporting settings (poll_s, heartbeat_s)."""
    with registry.session() as session:
        session.add(Agent(id="edge-seeds", site=ENGINEER_SITE, lines=[], created_at=0, state="online"))
        for device, spec in devices:
            session.add(
                Device(agent_id="edge-seeds", device_id=device, spec=spec, created_at=0, updated_at=0)
            )
        session.commit()


def every(device: str, measurement: str, fields: list[dict[str, Any]], *, step_min: int = 5) -> list[Point]:
    """Readings ``step_min`` apart, the last at NOW_MS."""
    return [
        reading(
            measurement, device, NOW_MS - (len(fields) - 1 - i) * step_min * MINUTE_MS, f, agent="edge-seeds"
        )
        for i, f in enumerate(fields)
    ]


def test_seed_device_rules_raise_for_registered_devices_and_end_when_cured(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    polled = {"poll_s": 60}
    register(
        registry,
        *((d, polled) for d in ("bin-full", "bin-emptied", "bin-half", "bin-new", "wq-bad", "wq-ok")),
        ("bay-quiet", polled),
        ("bay-live", polled),
        ("bay-rbe", {"poll_s": 60, "heartbeat_s": 900}),  # reports by exception: a heartbeat every 15 min
    )
    fill = "fill_level"
    store.write(
        [
            # The default: at least 90 % for 30 min. Readings every 5 min over 40 min.
            *every("bin-full", "waste_bin", [{fill: 92.0}] * 4 + [{fill: 95.5}] * 5),
            *every("bin-emptied", "waste_bin", [{fill: 95.0}] * 7 + [{fill: 4.0}] * 2),
            *every("bin-half", "waste_bin", [{fill: 50.0}] * 9),
            *every("bin-new", "waste_bin", [{fill: 99.0}] * 2),  # 5 min of readings: too few to judge
            *every("bin-ghost", "waste_bin", [{fill: 99.0}] * 9),  # registered nowhere
            *every("wq-bad", "water_quality", [{"ph": 8.9, "turbidity": 1.6, "free_chlorine": 0.12}]),
            *every("wq-ok", "water_quality", [{"ph": 7.4, "turbidity": 0.3, "free_chlorine": 0.4}]),
            *every("wq-ghost", "water_quality", [{"ph": 3.0}]),
            reading("parking", "bay-quiet", NOW_MS - 10 * MINUTE_MS, {"occupied": True}, agent="edge-seeds"),
            reading("parking", "bay-live", NOW_MS - MINUTE_MS, {"occupied": False}, agent="edge-seeds"),
            reading("parking", "bay-rbe", NOW_MS - 40 * MINUTE_MS, {"occupied": True}, agent="edge-seeds"),
            reading("parking", "bay-ghost", NOW_MS - 600 * MINUTE_MS, {"occupied": True}, agent="edge-seeds"),
        ]
    )
    raised = evaluate(registry, store, settings, NOW_MS)
    assert subjects(raised) == {
        ("raised", "bin_full", "bin-full"),
        ("raised", "water_quality", "wq-bad:water_ph"),
        ("raised", "water_quality", "wq-bad:turbidity"),
        ("raised", "water_quality", "wq-bad:free_chlorine"),
        ("raised", "parking_sensor_silent", "bay-quiet"),
    }
    by_subject = {e.subject: e for e in raised}
    assert by_subject["bin-full"].data == {"fill_level": 92.0, "threshold": 90.0, "window_s": 1800}
    assert by_subject["wq-bad:free_chlorine"].data == {
        "device": "wq-bad",
        "parameter": "free_chlorine",
        "value": 0.12,
        "low": 0.3,
        "high": 0.5,
    }
    assert "below 0.3" in by_subject["wq-bad:free_chlorine"].detail
    assert by_subject["bay-quiet"].data["silent_s"] == 600  # more than 3 polls of 60 s
    # bay-rbe's 40 min are less than 3 heartbeats of 15 min: a quiet bay, not a dead sensor.

    later = NOW_MS + 5 * MINUTE_MS  # the bins' readings span the window again
    store.write(
        [
            reading("waste_bin", "bin-full", later, {fill: 3.0}, agent="edge-seeds"),  # collected
            reading(
                "water_quality",
                "wq-bad",
                later,
                {"ph": 8.9, "turbidity": 0.4, "free_chlorine": 0.35},
                agent="edge-seeds",
            ),
            reading("parking", "bay-quiet", later, {"occupied": False}, agent="edge-seeds"),
            reading("parking", "bay-live", later, {"occupied": False}, agent="edge-seeds"),
        ]
    )
    assert subjects(evaluate(registry, store, settings, later)) == {
        ("ended", "bin_full", "bin-full"),
        ("ended", "water_quality", "wq-bad:turbidity"),
        ("ended", "water_quality", "wq-bad:free_chlorine"),
        ("ended", "parking_sensor_silent", "bay-quiet"),
    }


def test_water_quality_limits_and_bin_threshold_come_from_the_settings(
    store: SqliteStore, registry: Registry, tmp_path: Path
) -> None:
    register(registry, ("wq-1", {"poll_s": 60}), ("bin-1", {"poll_s": 60}))
    store.write(
        [
            *every("wq-1", "water_quality", [{"ph": 9.0, "turbidity": 1.6, "free_chlorine": 0.25}]),
            *every("bin-1", "waste_bin", [{"fill_level": 85.0}] * 3),
        ]
    )
    # EU Directive 2020/2184's pH range, a looser turbidity limit, WHO's 0.2 mg/l of chlorine; full at 80 %
    # for 10 min.
    eu = ApiSettings(
        registry_url=f"sqlite:///{tmp_path}/registry.sqlite",
        alert_ph_max=9.5,
        alert_turbidity_max=4.0,
        alert_chlorine_min=0.2,
        alert_bin_full_percent=80,
        alert_bin_full_window_s=600,
    )
    assert subjects(evaluate(registry, store, eu, NOW_MS)) == {("raised", "bin_full", "bin-1")}
    with pytest.raises(ValidationError, match="alert_ph_min"):
        ApiSettings(registry_url="sqlite://", alert_ph_min=9, alert_ph_max=8)
