"""The test harness itself starts the real services and can restart them."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.services import InfluxDB, Mosquitto, VictoriaMetrics, _port_open, free_port

pytestmark = pytest.mark.integration


def test_mosquitto_restarts_on_same_port(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    mosquitto.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    mosquitto.start()
    assert mosquitto.port == port
    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_influxdb_answers_influxql(influxdb: InfluxDB) -> None:
    influxdb.create_database("harness")
    result = influxdb.query("SHOW DATABASES")
    names = [row[0] for row in result["results"][0]["series"][0]["values"]]  # type: ignore[index]
    assert "harness" in names


def test_victoria_metrics_takes_v2_write(victoria_metrics: VictoriaMetrics) -> None:
    resp = httpx.post(
        f"{victoria_metrics.url}/api/v2/write",
        params={"org": "city", "bucket": "telemetry", "precision": "ms"},
        content=b"harness,device=x value=1.5 1700000000000",
    )
    assert resp.status_code == 204
    victoria_metrics.flush()
    export = httpx.get(f"{victoria_metrics.url}/api/v1/export", params={"match[]": '{__name__=~"harness.*"}'})
    assert '"harness_value"' in export.text
    assert "1.5" in export.text


def test_free_ports_are_outside_the_source_ports_of_outgoing_connections() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(free_port() < low for _ in range(50))


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    """A port taken between its choice and the first start (seen once in CI): other ports, no failure."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: Mosquitto's bind fails, nothing answers
        taken = squatter.getsockname()[1]
        broker = Mosquitto(tmp_path / "mosquitto")
        broker.port = taken
        broker.start()
        try:
            assert broker.port != taken
            assert _port_open(broker.port)
            assert "in use" in broker.log_path.read_text()
        finally:
            broker.stop()
