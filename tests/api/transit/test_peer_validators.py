"""The served feeds under validators nobody here wrote: gtfs-rt-validator and gtfs-validator (PyPI).

A simulated Friday drives the API; at each moment three snapshots of VehiclePositions, TripUpdates
and Alerts are fetched 12 s apart in feed time (the app's clock is the test's), saved under
upstream's ``<name>-YYYY-MM-DDTHH-MM-SSZ.pb`` names so the validator's clock is each file's fetch
time, and replayed with the served GTFS zip. Any ERROR fails; warnings must be the justified ones.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.transit import gtfs_realtime_pb2 as rt
from gtfs_rt_validator.api import Inputs, Mode, Request, SortBy, validate
from gtfs_rt_validator.runner.sources import role_cycle
from gtfs_validator.cli import main as gtfs_validator_main

from api.security import Role
from api.transit.feeds import TransitService
from api.transit.gtfs import load_gtfs
from api.transit.history import LearnedTimes, LocalHours, Spread
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, validator_point
from simulators.transit.network import network_zip, zip_files
from tests.api.factories import FakeClock, bearer
from tests.api.transit import rules
from tests.api.transit.test_gtfs import IRVINE
from tests.api.transit.test_rules import JUSTIFIED_WARNINGS, MOMENTS, _epoch

SNAPSHOT_GAP_S = 12  # >= 10 s, under W007's 35 s refresh limit
# Warnings the peer may give on these feeds, and why that is right: ours (test_rules), and one more.
JUSTIFIED_RT_WARNINGS = {
    **JUSTIFIED_WARNINGS,
    "S025": "operators' alerts carry active_period, deprecated by the current proto for"
    " communication_period and impact_period but the only period consumers on older bindings read",
}
ROLES = {"tu": "trip-updates", "vp": "vehicle-positions", "sa": "alerts"}


def _notices(report: dict[str, Any], severity: str) -> dict[str, list[str]]:
    return {
        notice["code"]: [sample.get("prefix", json.dumps(sample)) for sample in notice["sampleNotices"][:3]]
        for notice in report["notices"]
        if notice["severity"] == severity
    }


def _snapshots(
    client: TestClient,
    store: SqliteStore,
    clock: FakeClock,
    timetable: Timetable,
    buses: list[Bus],
    start_s: int,
) -> list[dict[str, bytes]]:
    taken = []
    for now_s in range(start_s, start_s + 3 * SNAPSHOT_GAP_S, SNAPSHOT_GAP_S):
        store.write(list(fixes_between(timetable, buses, now_s - 150, now_s + 1)))
        store.write([validator_point(bus, at) for bus in buses for at in (now_s - 1200, now_s - 30)])
        clock.now_ms = now_s * 1000
        feeds = {}
        for role, name in ROLES.items():
            answer = client.get(f"/v1/transit/{name}.pb")
            assert answer.status_code == 200, answer.text
            feeds[role] = answer.content
        taken.append(feeds)
    return taken


def learned_everywhere(timetable: Timetable) -> LearnedTimes:
    """History saying every segment takes 10 % more than planned, give or take 15 s, at every hour."""
    runs, dwells = {}, {}
    for trip in timetable.trips.values():
        for here, there in itertools.pairwise(trip.stop_times):
            for hour in range(24):
                planned = there.arrival_s - here.departure_s
                runs[(here.stop_id, there.stop_id, hour)] = Spread(planned * 1.1, 15.0, 9)
                dwells[(there.stop_id, hour)] = Spread(20.0, 5.0, 9)
    return LearnedTimes(LocalHours(timetable.timezone), runs, dwells)


def _trip_changes(
    client: TestClient,
    store: SqliteStore,
    timetable: Timetable,
    buses: list[Bus],
    keys: dict[Role, str],
    now_s: int,
) -> dict[str, list[str]]:
    """An operator cancels a run about to start and skips a stop of a run under way (run keys)."""
    store.write(list(fixes_between(timetable, buses, now_s - 150, now_s + 1)))
    served = rt.FeedMessage.FromString(client.get("/v1/transit/trip-updates.pb").content)
    operator = bearer(keys[Role.TRANSIT])
    changed: dict[str, list[str]] = {"canceled": [], "skipping": []}
    for entity in served.entity:
        update = entity.trip_update
        if (
            update.trip.schedule_relationship == rt.TripDescriptor.SCHEDULED
            and len(update.stop_time_update) > 2
        ):
            change = {
                "trip_id": update.trip.trip_id,
                "start_date": update.trip.start_date,
                "skipped_stop_sequences": [update.stop_time_update[-2].stop_sequence],
            }
            assert client.post("/v1/transit/trip-changes", json=change, headers=operator).status_code == 201
            changed["skipping"].append(entity.id)
            break
    soon = sorted(
        (
            r
            for r in timetable.runs_between(now_s, now_s + 1800)
            if not r.trip.frequencies and now_s < r.departure(0) <= now_s + 1800
        ),
        key=lambda r: r.key,
    )
    if soon:
        change = {"trip_id": soon[0].trip.trip_id, "start_date": soon[0].start_date, "canceled": True}
        assert client.post("/v1/transit/trip-changes", json=change, headers=operator).status_code == 201
        changed["canceled"].append(soon[0].key)
    return changed


@pytest.mark.parametrize("moment", MOMENTS, ids=lambda m: str(m))
def test_gtfs_rt_validator_finds_no_error_in_snapshots_of_the_served_feeds(
    moment: dt.time | tuple[dt.time, int],
    transit_client: TestClient,
    store: SqliteStore,
    clock: FakeClock,
    keys: dict[Role, str],
    timetable: Timetable,
    friday: list[Bus],
    tmp_path: Path,
) -> None:
    start_s = _epoch(timetable, moment)
    clock.now_ms = start_s * 1000
    alert = {
        "header_text": "Ремонт колії на Городоцькій",
        "cause": "CONSTRUCTION",
        "effect": "DETOUR",
        "active_periods": [{"start": start_s - 60, "end": start_s + 3600}],
        "informed_entities": [{"route_id": "T1"}, {"stop_id": "T1-0-02"}],
    }
    created = transit_client.post("/v1/transit/alerts", json=alert, headers=bearer(keys[Role.TRANSIT]))
    assert created.status_code == 201, created.text
    zip_path = tmp_path / "gtfs.zip"
    zip_path.write_bytes(transit_client.get("/v1/transit/gtfs.zip").content)
    transit: TransitService = transit_client.app.state.transit  # type: ignore[attr-defined]
    transit.history.learned = learned_everywhere(timetable)  # predictions with their uncertainty
    changed = _trip_changes(transit_client, store, timetable, friday, keys, start_s)
    assert changed["skipping"]
    assert changed["canceled"] or moment == (dt.time(0, 20), 1)  # nothing leaves after midnight

    snapshots = _snapshots(transit_client, store, clock, timetable, friday, start_s)
    last = rt.FeedMessage.FromString(snapshots[-1]["tu"])
    relationships = {e.id: e.trip_update.trip.schedule_relationship for e in last.entity}
    assert all(relationships[key] == rt.TripDescriptor.CANCELED for key in changed["canceled"])
    skipped = [
        stu
        for e in last.entity
        if e.id in changed["skipping"]
        for stu in e.trip_update.stop_time_update
        if stu.schedule_relationship == rt.TripUpdate.StopTimeUpdate.SKIPPED
    ]
    assert len(skipped) == len(changed["skipping"])
    assert any(
        stu.arrival.HasField("uncertainty") for e in last.entity for stu in e.trip_update.stop_time_update
    )
    # The validator must have something to look at: buses on trips, predictions, the alert.
    first = {role: rt.FeedMessage.FromString(body) for role, body in snapshots[0].items()}
    assert any(entity.vehicle.trip.trip_id for entity in first["vp"].entity)
    assert first["tu"].entity
    assert created.json()["id"] in {entity.id for entity in first["sa"].entity}
    cycles = []
    for number, feeds in enumerate(snapshots):
        fetched = dt.datetime.fromtimestamp(start_s + number * SNAPSHOT_GAP_S, dt.UTC)
        paths = {}
        for role, body in feeds.items():
            paths[role] = tmp_path / f"{ROLES[role]}-{fetched:%Y-%m-%dT%H-%M-%SZ}.pb"
            paths[role].write_bytes(body)
        cycles.append(role_cycle(paths))

    result = validate(
        Request(mode=Mode.MODERN, gtfs=zip_path, inputs=Inputs(tuple(cycles), True), sort_by=SortBy.NAME)
    )
    result.write(tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    system_errors = json.loads((tmp_path / "report" / "system_errors.json").read_text())
    assert system_errors["notices"] == []
    assert _notices(report, "ERROR") == {}
    # Each fetch is a new message: a header stamped at build time, not frozen with the content.
    assert report["summary"]["messagesValidated"] == 9
    warnings = _notices(report, "WARNING")
    assert set(warnings) <= set(JUSTIFIED_RT_WARNINGS), warnings
    # Our own rules (tests/api/transit/rules.py) find what the peer finds, of the rules they share.
    ours: set[str] = set()
    for number, feeds in enumerate(snapshots):
        parsed = [rt.FeedMessage.FromString(feeds[role]) for role in ("vp", "tu", "sa")]
        mine = rules.Feeds(*parsed, timetable, start_s + number * SNAPSHOT_GAP_S)
        assert rules.check(mine, rules.ERRORS) == {}
        ours |= set(rules.check(mine, rules.WARNINGS))
    assert ours == {code for code in warnings if code.startswith("W")}


def test_gtfs_validator_finds_no_error_in_the_served_zip(transit_client: TestClient, tmp_path: Path) -> None:
    zip_path = tmp_path / "gtfs.zip"
    zip_path.write_bytes(transit_client.get("/v1/transit/gtfs.zip").content)
    out = tmp_path / "report"
    assert gtfs_validator_main(["-i", str(zip_path), "-o", str(out), "-d", "2027-01-15"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / "system_errors.json").read_text())["notices"] == []
    assert _notices(report, "ERROR") == {}
    assert _notices(report, "WARNING") == {}


def test_gtfs_validator_finds_no_error_in_the_demo_network_and_its_blocks(tmp_path: Path) -> None:
    """The demo's round-the-clock network: blocks of trips chained all day long, none overlapping."""
    zip_path = tmp_path / "lviv.zip"
    zip_path.write_bytes(network_zip(all_day=True))
    out = tmp_path / "report"
    assert gtfs_validator_main(["-i", str(zip_path), "-o", str(out), "-d", "2027-01-15"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert _notices(report, "ERROR") == {}
    assert _notices(report, "WARNING") == {}
    assert all(
        trip.block_id for trip in load_gtfs(zip_path.read_bytes()).trips.values() if not trip.frequencies
    )


def test_gtfs_validator_and_our_loader_both_take_a_published_feed_with_blank_times(tmp_path: Path) -> None:
    """Irvine Connect (data/irvine_connect/PROVENANCE.md): spec-valid blank intermediate times."""
    zip_path = tmp_path / "irvine.zip"
    zip_path.write_bytes(zip_files({path.name: path.read_bytes() for path in IRVINE.glob("*.txt")}))
    out = tmp_path / "report"
    assert gtfs_validator_main(["-i", str(zip_path), "-o", str(out), "-d", "2025-06-01"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert _notices(report, "ERROR") == {}
    assert _notices(report, "WARNING") == {}
    assert load_gtfs(zip_path.read_bytes()).trips["867873"].stop_times[40].timepoint is False
