"""GET /v1/transit/accuracy: the recorded scores summed per TransitApp bucket, public."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.transit.accuracy import WINDOWS, Score, accuracy_points, score
from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS


def _scored(route: str, bucket: int, accurate: int, inaccurate: int) -> list[Score]:
    made = -WINDOWS[bucket].start_s  # sampled this long before the bus came (at 0)
    found = [score(route, made, 0, 0) for _ in range(accurate)]
    found += [score(route, made, -1000, 0) for _ in range(inaccurate)]  # the bus came 1000 s late
    return [one for one in found if one is not None]


def test_the_share_per_bucket_is_summed_over_routes_and_rounds(
    transit_client: TestClient, store: SqliteStore
) -> None:
    store.write(
        accuracy_points(
            _scored("A3", 0, 8, 2) + _scored("T1", 1, 3, 1) + _scored("T1", 3, 1, 0), NOW_MS - 60_000
        )
        + accuracy_points(_scored("A3", 0, 2, 0) + _scored("A3", 2, 0, 4), NOW_MS - 3 * 3_600_000)
        + accuracy_points(_scored("A3", 1, 0, 50), NOW_MS - 25 * 3_600_000)  # more than a day ago
    )

    answer = transit_client.get("/v1/transit/accuracy")  # a resident's app: no key

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "public, max-age=60"
    body = answer.json()
    assert body["until_ms"] - body["since_ms"] == 24 * 3_600_000
    assert [
        (
            b["bucket"],
            b["from_s"],
            b["to_s"],
            b["early_s"],
            b["late_s"],
            b["predictions"],
            b["accurate"],
            b["share"],
        )
        for b in body["buckets"]
    ] == [
        ("0-3", 0, 180, 30, 90, 12, 10, 0.8333),
        ("3-6", 180, 360, 60, 150, 4, 3, 0.75),
        ("6-10", 360, 600, 60, 210, 4, 0, 0.0),
        ("10-15", 600, 900, 90, 270, 1, 1, 1.0),
    ]
    assert body["overall"] == round((10 / 12 + 0.75 + 0 + 1) / 4, 4)

    last_hour = transit_client.get("/v1/transit/accuracy", params={"hours": 1}).json()
    assert [b["predictions"] for b in last_hour["buckets"]] == [10, 4, 0, 1]
    assert last_hour["overall"] is None  # a bucket without predictions


def test_nothing_recorded_is_no_share_and_a_bad_range_is_refused(transit_client: TestClient) -> None:
    body = transit_client.get("/v1/transit/accuracy").json()
    assert [(b["predictions"], b["share"]) for b in body["buckets"]] == [(0, None)] * 4
    assert body["overall"] is None
    for hours in (0, 745, "day"):
        assert transit_client.get("/v1/transit/accuracy", params={"hours": hours}).status_code == 422
