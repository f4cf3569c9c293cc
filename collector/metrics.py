"""The collector's metrics in Prometheus text exposition format (0.0.4), and a tiny HTTP endpoint.

No client library: the format is a few lines of text, and the collector has a handful of
metrics (``collector_text``: its counters, ``CollectorStats``, and gauges). Label values are
escaped as the format requires (backslash, double quote, newline).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Write latency buckets in seconds: a healthy local InfluxDB answers in milliseconds, a slow
# or overloaded one in seconds.
WRITE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """A cumulative histogram (Prometheus ``histogram`` type); callers hold their own lock."""

    def __init__(self, buckets: Sequence[float] = WRITE_SECONDS_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Histogram:
        twin = Histogram(self.buckets)
        twin.counts = list(self.counts)
        twin.sum = self.sum
        twin.count = self.count
        return twin


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class Exposition:
    """Builds one scrape: families in order, each with HELP, TYPE and its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        sample_name = f"{name}_total" if kind == "counter" else name
        for labels, value in samples:
            self._lines.append(f"{sample_name}{_labels(labels)} {_number(value)}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        bounds = [*histogram.buckets, float("inf")]
        for bound, count in zip(bounds, histogram.counts, strict=True):
            cumulative += count
            self._lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        self._lines.append(f"{name}_sum {_number(histogram.sum)}")
        self._lines.append(f"{name}_count {histogram.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


@dataclass(slots=True)
class CollectorStats:
    """Counters since start: messages acknowledged, points stored, batches written, and trouble."""

    messages: int = 0
    points: int = 0
    batches: int = 0
    dead_letters: int = 0
    store_retries: int = 0
    seq_gaps: int = 0
    window_overruns: int = 0
    confirmed: int = 0  # telemetry batches confirmed to their agents (end-to-end acks)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    seq_gaps_by_agent: dict[str, int] = field(default_factory=dict)

    def copy(self) -> CollectorStats:
        return replace(
            self,
            dead_letters_by_reason=dict(self.dead_letters_by_reason),
            seq_gaps_by_agent=dict(self.seq_gaps_by_agent),
        )


class MetricsServer:
    """Serves ``render()`` on ``GET /metrics`` from a daemon thread (stdlib http.server)."""

    def __init__(self, render: Callable[[], str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._render = render
        handler = self._handler_class()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 asks the system for a free one)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        render = self._render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.partition("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = render().encode()
                except Exception:
                    log.exception("metrics: rendering failed")
                    self.send_error(500, "metrics rendering failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        return Handler


@dataclass(frozen=True, slots=True)
class Gauges:
    """The collector's state now, beside its counters."""

    lag_seconds: float
    inbox_messages: int
    unacked_messages: int
    agent_configs: int
    subscribed: bool


def collector_text(stats: CollectorStats, write_seconds: Histogram, gauges: Gauges) -> str:
    """The collector's metrics (prefix ``citygw_collector_``) in Prometheus text exposition format."""
    prefix = "citygw_collector_"
    out = Exposition()
    out.single(
        f"{prefix}messages",
        "counter",
        "Messages stored (or dead-lettered) and acknowledged.",
        stats.messages,
    )
    out.single(f"{prefix}points", "counter", "Points written to the store.", stats.points)
    out.single(f"{prefix}batches", "counter", "Batches written to the store.", stats.batches)
    out.single(
        f"{prefix}store_retries",
        "counter",
        "Store writes (and reads of its schema at start) retried after a failure.",
        stats.store_retries,
    )
    out.single(
        f"{prefix}window_overruns",
        "counter",
        "Messages the broker sent beyond the in-flight window; each waited for room, unread.",
        stats.window_overruns,
    )
    out.single(
        f"{prefix}confirmed_batches",
        "counter",
        "Telemetry batches confirmed to their agents as stored (end-to-end acks, citygw/v1/+/ack).",
        stats.confirmed,
    )
    out.family(
        f"{prefix}dead_letters",
        "counter",
        "Payloads or readings sent to the dead-letter store, by reason.",
        [({"reason": reason}, count) for reason, count in sorted(stats.dead_letters_by_reason.items())],
    )
    out.family(
        f"{prefix}seq_gaps",
        "counter",
        "Jumps in an agent's message sequence (lost messages upstream), by agent.",
        [({"agent": agent}, count) for agent, count in sorted(stats.seq_gaps_by_agent.items())],
    )
    out.histogram(f"{prefix}write_seconds", "Duration of each store write call.", write_seconds)
    out.single(
        f"{prefix}lag_seconds",
        "gauge",
        "Now minus the receive time of the oldest unacknowledged message.",
        gauges.lag_seconds,
    )
    out.single(
        f"{prefix}inbox_messages",
        "gauge",
        "Messages received and waiting for the converter.",
        gauges.inbox_messages,
    )
    out.single(
        f"{prefix}unacked_messages",
        "gauge",
        "Messages received and not yet acknowledged.",
        gauges.unacked_messages,
    )
    out.single(
        f"{prefix}agent_configs",
        "gauge",
        "Agents whose pushed config this collector holds them to (0 with --owners off).",
        gauges.agent_configs,
    )
    out.single(
        f"{prefix}subscribed",
        "gauge",
        "1 while connected with the subscription confirmed.",
        int(gauges.subscribed),
    )
    return out.text()


__all__ = [
    "CONTENT_TYPE",
    "CollectorStats",
    "Exposition",
    "Gauges",
    "Histogram",
    "MetricsServer",
    "collector_text",
    "escape_label_value",
]
