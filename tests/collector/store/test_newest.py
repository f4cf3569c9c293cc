"""The newest points and per-tag counts, sorted, cut and counted by every store (SQLite, real InfluxDB).

The dead-letter list reads through them (tests/api/routes/test_dead_letters_flood.py).
"""

from __future__ import annotations

from collector.dead_letter import DEAD_LETTER
from collector.store import Point, Store

T0 = 1_700_000_040_000


def letter(ts_ms: int, reason: str, agent: str, n: int = 0) -> Point:
    tags = {"reason": reason, "agent": agent, "collector": "c1"}
    return Point(
        DEAD_LETTER,
        tags,
        ts_ms,
        {"topic": f"citygw/v1/{agent}/telemetry", "error": "bad", "payload": f"#{n}"},
    )


def letters() -> list[Point]:
    return [
        letter(T0 + 1000 * i, reason, agent, i)
        for i, (reason, agent) in enumerate(
            [
                ("invalid_json", "a1"),
                ("schema", "a1"),
                ("schema", "a2"),
                ("invalid_json", "a2"),
                ("schema", "a1"),
            ]
        )
    ]


def test_newest_are_newest_first_cut_and_filtered(store: Store) -> None:
    store.write(letters())
    newest = store.newest(measurement=DEAD_LETTER, start_ms=T0, end_ms=T0 + 4000, limit=2)
    assert [(row.ts_ms, row.values["payload"]) for row in newest] == [(T0 + 3000, "#3"), (T0 + 2000, "#2")]
    assert newest[0].tags == {"reason": "invalid_json", "agent": "a2", "collector": "c1"}
    schema_a1 = store.newest(
        measurement=DEAD_LETTER,
        start_ms=T0,
        end_ms=T0 + 5000,
        limit=10,
        tags={"reason": "schema", "agent": "a1"},
    )
    assert [row.ts_ms for row in schema_a1] == [T0 + 4000, T0 + 1000]
    assert store.newest(measurement=DEAD_LETTER, start_ms=T0, end_ms=T0 + 5000, limit=0) == []
    assert store.newest(measurement="nothing_here", start_ms=T0, end_ms=T0 + 5000, limit=5) == []


def test_counts_by_tag_are_filtered(store: Store) -> None:
    store.write([*letters(), Point(DEAD_LETTER, {"agent": "a3"}, T0 + 9000, {"error": "x"})])
    every = store.count_by_tag(measurement=DEAD_LETTER, start_ms=T0, end_ms=T0 + 10_000, tag="reason")
    assert every == {"invalid_json": 2, "schema": 3, "": 1}
    of_a1 = store.count_by_tag(
        measurement=DEAD_LETTER, start_ms=T0, end_ms=T0 + 10_000, tag="reason", tags={"agent": "a1"}
    )
    assert of_a1 == {"invalid_json": 1, "schema": 2}
    assert store.count_by_tag(measurement=DEAD_LETTER, start_ms=T0, end_ms=T0, tag="reason") == {}
