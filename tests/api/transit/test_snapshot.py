"""The feed snapshot: rebuilt in the background while callers are answered from the previous one."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from api.transit.feeds import FeedFormat, FeedKind, TransitService
from collector.store.base import Row
from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS, FakeClock, bus_fix

FEED = "/v1/transit/vehicle-positions"


class HeldReader:
    """The store, whose range reads wait while ``held`` is clear once ``hold`` is set."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.hold = False
        self.reading = threading.Event()
        self.released = threading.Event()

    def range(self, **query: Any) -> Sequence[Row]:
        if self.hold:
            self.reading.set()
            assert self.released.wait(10), "the test never released the build"
        return self.store.range(**query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_stale_snapshot_is_served_while_one_caller_rebuilds(
    transit: TransitService, store: SqliteStore
) -> None:
    store.write([bus_fix("bus-1", 5, lat=49.84, lon=24.03)])
    reader = HeldReader(store)
    feeds: dict[str, Any] = {"max_age_s": 90, "max_ahead_s": 30}
    first = transit.snapshot(reader, now_ms=NOW_MS, **feeds)
    later_ms = NOW_MS + int(transit.settings.transit_rebuild_interval_s * 1000) + 1
    reader.hold = True
    built: list[Any] = []
    builder = threading.Thread(
        target=lambda: built.append(transit.snapshot(reader, now_ms=later_ms, **feeds))
    )
    builder.start()
    try:
        assert reader.reading.wait(10)
        answered: list[Any] = []
        waiter = threading.Thread(
            target=lambda: answered.append(transit.snapshot(reader, now_ms=later_ms, **feeds))
        )
        waiter.start()
        waiter.join(2)
        assert answered == [first], "a caller queued behind the rebuild instead of getting the last snapshot"
    finally:
        reader.released.set()
        builder.join(10)
    assert built, "the rebuild never finished"
    assert built[0] is not first
    assert built[0].built_at_ms == later_ms
    assert transit.snapshot(reader, now_ms=later_ms, **feeds) is built[0]


def test_the_first_snapshot_is_waited_for_by_everyone(transit: TransitService, store: SqliteStore) -> None:
    store.write([bus_fix("bus-1", 5, lat=49.84, lon=24.03)])
    got: list[Any] = []
    callers = [
        threading.Thread(
            target=lambda: got.append(transit.snapshot(store, now_ms=NOW_MS, max_age_s=90, max_ahead_s=30))
        )
        for _ in range(4)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert len(got) == 4
    assert all(snapshot is got[0] for snapshot in got)  # built once, nobody got None


def test_ready_answers_without_building_only_what_is_fresh_or_being_rebuilt(
    transit: TransitService, store: SqliteStore
) -> None:
    """What the feed routes serve on the event loop: never a build, never a snapshot nobody is renewing."""
    store.write([bus_fix("bus-1", 5, lat=49.84, lon=24.03)])
    assert transit.ready(NOW_MS) is None  # nothing built yet: the caller builds (in a worker thread)
    built = transit.snapshot(store, now_ms=NOW_MS, max_age_s=90, max_ahead_s=30)
    assert transit.ready(NOW_MS) is built
    later_ms = NOW_MS + int(transit.settings.transit_rebuild_interval_s * 1000) + 1
    assert transit.ready(later_ms) is None  # aged out and nobody rebuilding: the caller rebuilds
    reader = HeldReader(store)
    reader.hold = True
    rebuilding = threading.Thread(
        target=transit.snapshot,
        args=(reader,),
        kwargs={"now_ms": later_ms, "max_age_s": 90, "max_ahead_s": 30},
    )
    rebuilding.start()
    try:
        assert reader.reading.wait(10)
        assert transit.ready(later_ms) is built  # a rebuild is under way
    finally:
        reader.released.set()
        rebuilding.join(10)
    assert built.cached_encoding(FeedKind.VEHICLE_POSITIONS, FeedFormat.PB) is None
    encoded = built.encoded(FeedKind.VEHICLE_POSITIONS, FeedFormat.PB)
    assert built.cached_encoding(FeedKind.VEHICLE_POSITIONS, FeedFormat.PB) is encoded


def test_a_feed_request_waits_for_a_slow_rebuild_at_most_the_feed_wait(
    store: SqliteStore, settings: ApiSettings, clock: FakeClock, registry: Registry, gtfs_path: Path
) -> None:
    """A rebuild can take long (a store busy writing, a loaded machine: the embedded demo once kept a
    request waiting over 15 s). The request that finds the feeds aged out is answered from the previous
    ones after ``transit_feed_wait_s``; the rebuild goes on and is served once done."""
    store.write([bus_fix("bus-1", 5, lat=49.84, lon=24.03)])
    reader = HeldReader(store)
    settings = settings.model_copy(
        update={
            "transit_gtfs_path": gtfs_path,
            "transit_feed_wait_s": 0.5,
            "transit_history_refresh_s": 0,
            "record_interval_s": 0,
            "alert_interval_s": 0,
        }
    )
    app = create_app(reader, settings=settings, clock=clock, registry=registry)  # type: ignore[arg-type]
    app.state.transit = TransitService(settings)
    with TestClient(app) as client:
        first = client.get(FEED)
        assert first.status_code == 200
        clock.now_ms += int(settings.transit_rebuild_interval_s * 1000) + 1
        reader.hold = True
        unstick = threading.Timer(6, reader.released.set)  # the old code waits for the build
        unstick.start()
        try:
            started = time.monotonic()
            stale = client.get(FEED)
            took = time.monotonic() - started
            assert reader.reading.is_set(), "no rebuild was started"
        finally:
            reader.released.set()
            unstick.cancel()
        assert stale.status_code == 200
        assert took < 0.5 + 2, f"the request waited {took:.1f} s for the rebuild"
        assert stale.headers["ETag"] == first.headers["ETag"]  # the previous feeds
        deadline = time.monotonic() + 10
        while (fresh := client.get(FEED)).headers["ETag"] == first.headers["ETag"]:
            assert time.monotonic() < deadline, "the rebuild was never served"
            time.sleep(0.05)
        assert fresh.status_code == 200
