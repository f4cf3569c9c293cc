"""The newest point per device a page at a time, listed and cut by every store (SQLite, real InfluxDB).

Walking the pages must give exactly what ``newest_per_device(latest())`` gives at once, in its order.
"""

from __future__ import annotations

from collector.store import Point, Store
from collector.store.base import DeviceKey, device_key, newest_per_device

T0 = 1_700_000_000_000


def fleet() -> list[Point]:
    """Devices of two agents, in several measurements, ids with every label character; a bus whose
    route changed (two series, the newer wins), and a device of no agent."""
    points = []
    for n, device in enumerate(["m-1", "m-10", "m-2", "M 3", "lamp/1.a:b+c", "lamp/1", "Z_9"]):
        for agent in ("a1", "a2"):
            points.append(
                Point("electricity", {"agent": agent, "device": device, "site": "s"}, T0 + n, {"kwh": 1.0})
            )
        if n % 2:
            points.append(Point("water", {"agent": "a1", "device": device}, T0 + 100 + n, {"m3": 2.0}))
    points.append(
        Point("vehicle_position", {"agent": "a1", "device": "bus-1", "route": "3"}, T0, {"lat": 1.0})
    )
    points.append(
        Point("vehicle_position", {"agent": "a1", "device": "bus-1", "route": "7"}, T0 + 5, {"lat": 2.0})
    )
    points.append(
        Point("vehicle_position", {"agent": "a1", "device": "bus-1", "route": "9"}, T0 + 2, {"lat": 3.0})
    )
    points.append(Point("electricity", {"device": "orphan"}, T0, {"kwh": 3.0}))
    points.append(Point("electricity", {"agent": "a1"}, T0, {"kwh": 4.0}))  # no device: never listed
    return points


def walk(store: Store, limit: int, **only: str) -> list[Point]:
    found: list[Point] = []
    after: DeviceKey | None = None
    while True:
        page = store.latest_page(limit=limit, after=after, **only)  # type: ignore[arg-type]
        assert len(page) <= limit
        found += page
        if len(page) < limit:
            return found
        after = device_key(page[-1])


def test_pages_walk_every_device_once_in_order_with_its_newest_point(store: Store) -> None:
    store.write(fleet())
    every = newest_per_device(store.latest())
    assert len(every) == 7 * 2 + 3 + 1 + 1
    assert [device_key(p) for p in every] == sorted(device_key(p) for p in every)
    for limit in (1, 2, 3, 7, 50):
        assert walk(store, limit) == every, limit
    bus = [p for p in every if p.tags["device"] == "bus-1"]
    assert [(p.tags["route"], p.fields["lat"]) for p in bus] == [("7", 2.0)]
    assert store.latest_page(limit=0) == []


def test_pages_are_filtered_by_measurement_and_agent(store: Store) -> None:
    store.write(fleet())
    for only in ({"measurement": "water"}, {"agent": "a2"}, {"measurement": "electricity", "agent": "a1"}):
        expected = [
            p
            for p in newest_per_device(store.latest(measurement=only.get("measurement")))
            if only.get("agent") in (None, p.tags.get("agent"))
        ]
        assert expected
        for limit in (1, 4):
            assert walk(store, limit, **only) == expected, (only, limit)
    assert store.latest_page(limit=5, measurement="nothing_here") == []
    assert store.latest_page(limit=5, agent="nobody") == []
    after_last = device_key(newest_per_device(store.latest())[-1])
    assert store.latest_page(limit=5, after=after_last) == []
