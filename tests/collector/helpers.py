"""Helpers shared by the collector's integration tests: a test agent, a fast collector, waiting."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from citygw.contract import wire
from collector.service import Collector
from collector.store import PointWriter, Row, Store
from tests.services import Mosquitto

END = 2**62


def fast(broker: Mosquitto, store: PointWriter, **options: Any) -> Collector:
    """A collector with short batch and retry timings, so the tests stay quick."""
    timings: dict[str, Any] = {
        "batch_max_seconds": 0.05,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.3,
    }
    return Collector(broker.url, store, **(timings | options))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Agent:
    """A test publisher standing in for an edge agent: QoS 1, waits for each PUBACK."""

    def __init__(self, broker: Mosquitto, agent_id: str = "agent-1") -> None:
        self.agent_id = agent_id
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-{agent_id}-{uuid.uuid4().hex[:6]}")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.seq = 0
        self.t0 = now_ms() - 60_000

    def readings(self, seq: int, count: int) -> list[wire.Reading]:
        return [
            wire.Reading(
                device=f"meter-{i}",
                measurement="electricity",
                ts=self.t0 + seq * 100 + i,
                fields={"kwh": seq + i / 10, "seq": seq, "ok": True},
                tags={"site": "depot north"},
            )
            for i in range(count)
        ]

    def batch(self, count: int = 3, seq: int | None = None) -> bytes:
        seq = self.seq if seq is None else seq
        self.seq = seq + 1
        return wire.encode(
            wire.TelemetryBatch(agent=self.agent_id, seq=seq, readings=self.readings(seq, count))
        )

    def publish(
        self,
        payload: bytes,
        agent_id: str | None = None,
        channel: wire.Channel = wire.Channel.TELEMETRY,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        topic = wire.topic(agent_id or self.agent_id, channel)
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def started(collector: Collector) -> Collector:
    collector.start()
    assert collector.wait_subscribed(10), "collector did not subscribe"
    return collector


def stored(store: Store, measurement: str = "electricity") -> list[Row]:
    return store.range(measurement=measurement, start_ms=0, end_ms=END)


def expected_rows(agent: Agent, seqs: range, count: int) -> list[Row]:
    return sorted(
        (
            Row(r.ts, {"agent": agent.agent_id, "device": r.device, "site": "depot north"}, dict(r.fields))
            for seq in seqs
            for r in agent.readings(seq, count)
        ),
        key=lambda row: (row.ts_ms, sorted(row.tags.items())),
    )


class ByteCountingRelay:
    """A loopback TCP relay in front of a real server that counts the bytes clients send through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
