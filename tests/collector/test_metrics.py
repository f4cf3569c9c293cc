"""The collector's Prometheus metrics, scraped over HTTP from a collector on real Mosquitto."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from collector.metrics import Exposition, Histogram, escape_label_value
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import Agent, fast, started, wait_until
from tests.services import Mosquitto, free_port

_SAMPLE = re.compile(r"^([a-z_]+)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text exposition; asserts every line is well formed."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed sample line {line!r}"
        name, _, labels, value = match.groups()
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} has no TYPE"
        samples[(name, tuple(_LABEL.findall(labels or "")))] = float(value)
    return samples


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(f"citygw_collector_{name}", tuple(labels.items()))]


def test_scraped_metrics_count_messages_points_dead_letters_gaps_and_writes(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store, metrics_port=0)) as collector:
        address = collector.metrics_address
        assert address is not None
        assert address[0] == "127.0.0.1"
        for seq in (0, 1, 4):
            agent.publish(agent.batch(count=3, seq=seq))
        agent.publish(b"{not json")
        agent.publish(agent.batch(count=1), agent_id="agent-2")
        wait_until(lambda: collector.stats.messages == 5, "every message")

        samples = scrape(address[1])
        assert value(samples, "messages_total") == 5
        assert value(samples, "points_total") == 9
        assert value(samples, "dead_letters_total", reason="invalid_json") == 1
        assert value(samples, "dead_letters_total", reason="agent_mismatch") == 1
        assert value(samples, "seq_gaps_total", agent="agent-1") == 1
        assert value(samples, "store_retries_total") == 0
        batches = value(samples, "batches_total")
        assert 1 <= batches <= 5
        assert value(samples, "write_seconds_count") == batches
        assert value(samples, "write_seconds_bucket", le="+Inf") == batches
        assert value(samples, "write_seconds_sum") > 0
        assert value(samples, "lag_seconds") == 0
        assert value(samples, "inbox_messages") == 0
        assert value(samples, "unacked_messages") == 0
        assert value(samples, "subscribed") == 1
        assert httpx.get(f"http://127.0.0.1:{address[1]}/other", timeout=5).status_code == 404
    assert collector.metrics_address is None
    store.close()


def test_lag_and_unacked_grow_while_the_store_is_down(mosquitto: Mosquitto, agent: Agent) -> None:
    """Nothing listens on the store's port: every write fails, nothing is acknowledged."""
    store = InfluxV1Store(f"http://127.0.0.1:{free_port()}", "city")
    collector = started(fast(mosquitto, store, metrics_port=0))
    try:
        for _ in range(5):
            agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.store_retries >= 3, "retries")
        address = collector.metrics_address
        assert address is not None
        first = scrape(address[1])
        wait_until(lambda: collector.lag_seconds() > value(first, "lag_seconds") + 0.2, "lag to grow")
        samples = scrape(address[1])
        assert value(samples, "messages_total") == 0
        assert value(samples, "unacked_messages") == 5
        assert value(samples, "store_retries_total") >= 3
        assert value(samples, "lag_seconds") > 0.2
        # Retried: reading the store's field types, which comes before any write (collector/field_types.py).
        assert value(samples, "write_seconds_count") == 0
    finally:
        collector.stop(timeout=2)
        store.close()


def test_label_values_are_escaped_and_histograms_are_cumulative() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    histogram = Histogram([0.1, 1.0])
    for seconds in (0.05, 0.5, 0.7, 3.0):
        histogram.observe(seconds)
    out = Exposition()
    out.family("x", "counter", "X.", [({"agent": 'x" OR 1=1\n'}, 2)])
    out.histogram("w", "W.", histogram)
    text = out.text()
    assert 'x_total{agent="x\\" OR 1=1\\n"} 2' in text.splitlines()
    samples = parse(text)
    assert samples[("w_bucket", (("le", "0.1"),))] == 1
    assert samples[("w_bucket", (("le", "1"),))] == 3
    assert samples[("w_bucket", (("le", "+Inf"),))] == 4
    assert samples[("w_count", ())] == 4
    assert samples[("w_sum", ())] == pytest.approx(4.25)
