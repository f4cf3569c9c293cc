"""The API's recorder: transit state and command outcomes written into real stores (SQLite, InfluxDB)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.recorder import COMMAND_MEASUREMENT, VEHICLE_MEASUREMENT, Recorder
from api.registry import Registry, live
from api.registry.commands import create_command, send_due_commands
from api.registry.models import Agent
from api.settings import ApiSettings
from api.transit.accuracy import MEASUREMENT as ACCURACY_MEASUREMENT
from api.transit.accuracy import tally_rows
from api.transit.feeds import TransitService
from api.transit.gtfs import load_gtfs
from api.transit.timetable import Timetable
from citygw.contract import wire
from collector.store import Aggregate, Point, Row, Store, StoreUnavailable, open_store, prepare
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, simulate_day, validator_point
from simulators.transit.network import network_zip
from tests.api.factories import NOW_MS, FakeClock
from tests.api.transit.conftest import FRIDAY
from tests.services import InfluxDB

NOW_S = NOW_MS // 1000  # 10:00 in Lviv on the simulated Friday: buses on every route
TTL_MS = 300_000


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/telemetry.sqlite"
    else:
        influxdb: InfluxDB = request.getfixturevalue("influxdb")
        url = f"influxdb://127.0.0.1:{influxdb.port}/recorder_{uuid.uuid4().hex[:12]}"
    opened = open_store(url)
    prepare(opened)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def timetable() -> Timetable:
    return load_gtfs(network_zip())


@pytest.fixture(scope="module")
def friday(timetable: Timetable) -> list[Bus]:
    return simulate_day(timetable, FRIDAY)


@pytest.fixture
def transit_settings(settings: ApiSettings, tmp_path: Path) -> ApiSettings:
    gtfs = tmp_path / "lviv.zip"
    gtfs.write_bytes(network_zip())
    return settings.model_copy(update={"transit_gtfs_path": gtfs})


def recorder(store: Store, registry: Registry, settings: ApiSettings) -> Recorder:
    """The recorder of one API replica (each replica has its own transit service)."""
    return Recorder(
        store, reader=store, registry=registry, transit=TransitService(settings), settings=settings
    )


def rows(store: Store, measurement: str) -> list[Row]:
    return store.range(measurement=measurement, start_ms=NOW_MS - 86_400_000, end_ms=NOW_MS + 60_000)


def test_every_matched_bus_is_recorded_at_its_fix_with_delay_trip_and_occupancy(
    store: Store, registry: Registry, transit_settings: ApiSettings, timetable: Timetable, friday: list[Bus]
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    store.write([validator_point(bus, at) for bus in friday for at in (NOW_S - 1200, NOW_S - 30)])
    replica = recorder(store, registry, transit_settings)

    replica.record(NOW_MS)

    snapshot = replica._transit.snapshot(store, now_ms=NOW_MS, max_age_s=90, max_ahead_s=30)
    assert snapshot.matches  # the recorder has delays to write
    recorded = {row.tags["vehicle"]: row for row in rows(store, VEHICLE_MEASUREMENT)}
    assert set(recorded) == set(snapshot.vehicles)
    for vehicle, match in snapshot.matches.items():
        row = recorded[vehicle]
        assert row.ts_ms == snapshot.vehicles[vehicle].ts_ms
        assert row.tags["route"] == match.run.trip.route_id
        assert row.values["trip_id"] == match.run.trip.trip_id  # a field: trips never become series
        assert row.values["delay_s"] == pytest.approx(match.delay_s, abs=0.05)
        assert row.values["confidence"] == pytest.approx(match.confidence, abs=0.001)
    for vehicle, occupancy in snapshot.occupancies.items():
        assert recorded[vehicle].values["occupancy_percentage"] == occupancy.percentage
    assert {row.values["occupancy_status"] for row in recorded.values()} <= {
        "EMPTY",
        "MANY_SEATS_AVAILABLE",
        "FEW_SEATS_AVAILABLE",
        "STANDING_ROOM_ONLY",
        "CRUSHED_STANDING_ROOM_ONLY",
        "FULL",
    }


def test_predictions_are_scored_once_the_buses_reach_their_stops(
    store: Store, registry: Registry, transit_settings: ApiSettings, timetable: Timetable, friday: list[Bus]
) -> None:
    replica = recorder(store, registry, transit_settings)
    written_to = NOW_S - 150
    for now_s in range(NOW_S, NOW_S + 20 * 60, 30):
        store.write(list(fixes_between(timetable, friday, written_to, now_s + 1)))
        written_to = now_s + 1
        replica.record(now_s * 1000)

    found = store.range(measurement=ACCURACY_MEASUREMENT, start_ms=NOW_MS, end_ms=NOW_MS + 20 * 60_000)
    assert {row.tags["route"] for row in found} == set(timetable.routes)
    assert all(isinstance(value, int) for row in found for value in row.values.values())
    tallies = tally_rows(found)
    # Twenty minutes of a city's buses: every bucket has predictions, most of them right.
    assert all(t.predictions >= 50 for t in tallies), tallies
    assert all(t.share is not None and t.share > 0.5 for t in tallies), tallies
    # Summed by the store over the range, as GET /v1/transit/accuracy reads them.
    summed = store.range(
        measurement=ACCURACY_MEASUREMENT,
        start_ms=NOW_MS,
        end_ms=NOW_MS + 20 * 60_000,
        window_s=86_400,
        aggregate=Aggregate.SUM,
    )
    assert tally_rows(summed) == tallies


def test_two_replicas_recording_the_same_moment_leave_one_point_per_vehicle(
    store: Store, registry: Registry, transit_settings: ApiSettings, timetable: Timetable, friday: list[Bus]
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    recorder(store, registry, transit_settings).record(NOW_MS)
    first = rows(store, VEHICLE_MEASUREMENT)

    recorder(store, registry, transit_settings).record(NOW_MS + 500)  # the other replica, a moment later

    # Same series and times: the second replica's points overwrote the first's (its confidence
    # may differ by half a second of matching), none were added.
    assert first
    assert [(r.ts_ms, r.tags) for r in rows(store, VEHICLE_MEASUREMENT)] == [(r.ts_ms, r.tags) for r in first]


class _Sent:
    def send_command(self, command: wire.Command) -> None:
        pass


def _command(
    registry: Registry, *, due_at: int, schedule: dict[str, object] | None, action: str = "on"
) -> str:
    with registry.session() as session:
        if session.get(Agent, "edge-light") is None:
            session.add(Agent(id="edge-light", site="sykhiv", lines=[], created_at=0))
        command = create_command(
            session,
            agent_id="edge-light",
            device_id="cabinet-42",
            target=wire.CommandTarget(kind=wire.TargetKind.GROUP, address=3),
            action=wire.CommandAction(action),
            level=None,
            due_at=due_at,
            schedule=schedule,
            now_ms=due_at - 3_600_000,
            actor="engineer:olena",
        )
        session.commit()
        return command.id


def _result(registry: Registry, command_id: str, outcome: wire.CommandOutcome, ts: int) -> None:
    with registry.session() as session:
        result = wire.CommandResult(agent="edge-light", id=command_id, outcome=outcome, ts=ts)
        live.apply_command_result(session, result, now_ms=ts)
        session.commit()


def test_commands_are_recorded_once_they_end_with_their_lateness(
    store: Store, registry: Registry, settings: ApiSettings
) -> None:
    dusk = NOW_MS - 1_800_000
    late = _command(registry, due_at=dusk, schedule={"event": "dusk", "offset_min": 0})
    failed = _command(
        registry, due_at=dusk + 60_000, schedule={"at": "2027-01-15T07:31:00.000Z"}, action="off"
    )
    never_sent = _command(registry, due_at=NOW_MS - 2 * TTL_MS, schedule=None)
    pending = _command(registry, due_at=NOW_MS - 10_000, schedule=None, action="off")
    for now_ms in (dusk + 1_000, dusk + 61_000):  # the first two go out when due
        send_due_commands(registry, _Sent(), now_ms=now_ms, ttl_ms=TTL_MS)
    send_due_commands(registry, _Sent(), now_ms=NOW_MS, ttl_ms=TTL_MS)  # expires never_sent, sends pending
    _result(registry, late, wire.CommandOutcome.DONE, dusk + 95_000)
    _result(registry, failed, wire.CommandOutcome.FAILED, dusk + 61_000)
    replica = recorder(store, registry, settings)

    assert replica.record(NOW_MS) == 3

    recorded = {row.values["command_id"]: row for row in rows(store, COMMAND_MEASUREMENT)}
    assert set(recorded) == {late, failed, never_sent}  # pending has no outcome yet
    common = {"agent": "edge-light", "cabinet": "cabinet-42", "target": "group-3"}
    assert recorded[late] == Row(
        dusk,
        common | {"action": "on", "outcome": "done", "scheduled": "sun"},
        {"command_id": late, "lateness_s": 95.0},
    )
    assert recorded[failed].tags == common | {"action": "off", "outcome": "failed", "scheduled": "at"}
    assert recorded[failed].values["lateness_s"] == 1.0
    assert recorded[never_sent] == Row(
        NOW_MS - 2 * TTL_MS,
        common | {"action": "on", "outcome": "expired", "scheduled": "now"},
        {"command_id": never_sent},
    )

    _result(registry, pending, wire.CommandOutcome.REFUSED, NOW_MS + 1_000)
    assert replica.record(NOW_MS + 30_000) == 1  # only the newly ended one
    assert recorded.keys() < {row.values["command_id"] for row in rows(store, COMMAND_MEASUREMENT)}

    # Written, but the lamp reads dark: it ran, so its lateness counts like a done one's.
    dark = _command(registry, due_at=NOW_MS + 31_000, schedule=None)
    send_due_commands(registry, _Sent(), now_ms=NOW_MS + 31_000, ttl_ms=TTL_MS)
    _result(registry, dark, wire.CommandOutcome.DONE_BUT_DARK, NOW_MS + 33_000)
    assert replica.record(NOW_MS + 60_000) == 1
    (row,) = [r for r in rows(store, COMMAND_MEASUREMENT) if r.values["command_id"] == dark]
    assert (row.tags["outcome"], row.values["lateness_s"]) == ("done_but_dark", 2.0)


class _StoreDownOnce:
    """The store, unavailable for the first write (as InfluxDB during a restart)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store, self.down = store, True

    def write(self, points: Sequence[Point]) -> None:
        if self.down:
            self.down = False
            raise StoreUnavailable("connection refused")
        self.store.write(points)

    def close(self) -> None:
        self.store.close()


def test_commands_the_store_did_not_take_are_written_next_time(
    tmp_path: Path, registry: Registry, settings: ApiSettings
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    command = _command(registry, due_at=NOW_MS - 60_000, schedule=None)
    send_due_commands(registry, _Sent(), now_ms=NOW_MS - 60_000, ttl_ms=TTL_MS)
    _result(registry, command, wire.CommandOutcome.DONE, NOW_MS - 59_000)
    replica = Recorder(
        _StoreDownOnce(store),
        reader=store,
        registry=registry,
        transit=TransitService(settings),
        settings=settings,
    )

    with pytest.raises(StoreUnavailable):
        replica.record(NOW_MS)
    assert replica.record(NOW_MS + 30_000) == 1
    assert [row.values["command_id"] for row in rows(store, COMMAND_MEASUREMENT)] == [command]
    store.close()


def test_the_app_records_in_the_background_every_interval(
    store: Store, registry: Registry, settings: ApiSettings
) -> None:
    command = _command(registry, due_at=NOW_MS - 60_000, schedule=None)
    send_due_commands(registry, _Sent(), now_ms=NOW_MS - 60_000, ttl_ms=TTL_MS)
    _result(registry, command, wire.CommandOutcome.DONE, NOW_MS - 58_500)
    fast = settings.model_copy(
        update={"record_interval_s": 0.05, "alert_interval_s": 0, "open_telemetry": True}
    )
    app = create_app(store, settings=fast, clock=FakeClock(), registry=registry)

    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while not rows(store, COMMAND_MEASUREMENT):
            assert time.monotonic() < deadline, "the app recorded nothing"
            time.sleep(0.05)
        devices = client.get("/v1/devices")

    (row,) = rows(store, COMMAND_MEASUREMENT)
    assert row.values == {"command_id": command, "lateness_s": 1.5}
    assert devices.json() == []  # a command is no reading of its cabinet


def test_recording_is_off_at_interval_zero(store: Store, registry: Registry, settings: ApiSettings) -> None:
    command = _command(registry, due_at=NOW_MS - 60_000, schedule=None)
    send_due_commands(registry, _Sent(), now_ms=NOW_MS, ttl_ms=10_000)  # expired: an outcome to record
    off = settings.model_copy(update={"record_interval_s": 0, "alert_interval_s": 0})

    with TestClient(create_app(store, settings=off, clock=FakeClock(), registry=registry)):
        time.sleep(0.3)

    assert command
    assert rows(store, COMMAND_MEASUREMENT) == []
