"""deploy/mosquitto on real Mosquitto: TLS, no anonymous, per-agent users, topic rights.

Each refusal is checked with a control: the message that must not arrive is sent first, a
message that must arrive is sent after it on the same path, so "it never arrived" is
decided by the broker's ordering, not by a timeout guess.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.broker import SecuredMosquitto, Session

pytestmark = pytest.mark.integration
NORTH, SOUTH = "depot-north-1", "depot-south-1"
# MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, empty client id.
PLAIN_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecuredMosquitto]:
    server = SecuredMosquitto(tmp_path / "mosquitto", [NORTH, SOUTH, "svc.collector", "svc.api"])
    server.start()
    yield server
    server.stop()


def test_anonymous_and_wrong_passwords_are_refused(broker: SecuredMosquitto) -> None:
    with pytest.raises(PermissionError, match="Not authorized"):
        Session(broker, None)
    with pytest.raises(PermissionError, match=r"Not authorized|Bad user name or password"):
        Session(broker, NORTH, "guessed")
    with pytest.raises(PermissionError, match="Not authorized"):
        Session(broker, None, tls=True)
    Session(broker, NORTH).close()  # control: the right password is let in


def test_an_agent_cannot_publish_as_another(broker: SecuredMosquitto) -> None:
    """Nor its own desired config; the control, its own telemetry, is sent last and arrives."""
    collector = Session(broker, "svc.collector")
    collector.subscribe("citygw/v1/+/telemetry")
    Session(broker, NORTH).publish_refused(f"citygw/v1/{SOUTH}/telemetry", b"spoofed")
    Session(broker, NORTH).publish_refused(f"citygw/v1/{NORTH}/config", b"spoofed desired config")
    Session(broker, NORTH).publish(f"citygw/v1/{NORTH}/telemetry", b"own")
    assert collector.received() == (f"citygw/v1/{NORTH}/telemetry", b"own")
    assert collector.messages.empty()


def test_an_agent_reads_only_its_own_config_and_commands(broker: SecuredMosquitto) -> None:
    north = Session(broker, NORTH)
    north.subscribe(f"citygw/v1/{SOUTH}/cmd", f"citygw/v1/{SOUTH}/config", "citygw/v1/+/telemetry")
    north.subscribe(f"citygw/v1/{NORTH}/cmd", f"citygw/v1/{NORTH}/config")
    api = Session(broker, "svc.api")
    south = Session(broker, SOUTH)
    api.publish(f"citygw/v1/{SOUTH}/cmd", b"switch off lamp 3")
    api.publish(f"citygw/v1/{SOUTH}/config", b"south config")
    south.publish(f"citygw/v1/{SOUTH}/telemetry", b"south readings")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"north command")
    api.publish(f"citygw/v1/{NORTH}/config", b"north config")
    assert north.received() == (f"citygw/v1/{NORTH}/cmd", b"north command")
    assert north.received() == (f"citygw/v1/{NORTH}/config", b"north config")
    assert north.messages.empty()


def test_the_collector_reads_all_telemetry_also_on_a_shared_subscription(broker: SecuredMosquitto) -> None:
    collector = Session(broker, "svc.collector")
    collector.subscribe("$share/collectors/citygw/v1/+/telemetry", "citygw/v1/+/health")
    for agent in (NORTH, SOUTH):
        Session(broker, agent).publish(f"citygw/v1/{agent}/telemetry", agent.encode())
    Session(broker, SOUTH, client_id="test-south-health").publish(f"citygw/v1/{SOUTH}/health", b"ok")
    got = sorted(collector.received() for _ in range(3))
    assert got == [
        (f"citygw/v1/{NORTH}/telemetry", NORTH.encode()),
        (f"citygw/v1/{SOUTH}/health", b"ok"),
        (f"citygw/v1/{SOUTH}/telemetry", SOUTH.encode()),
    ]
    # The collector may not publish commands, nor the API telemetry.
    api = Session(broker, "svc.api")
    north = Session(broker, NORTH, client_id="test-north-cmd")
    north.subscribe(f"citygw/v1/{NORTH}/cmd")
    collector.publish_refused(f"citygw/v1/{NORTH}/cmd", b"from the collector")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"from the api")
    assert north.received() == (f"citygw/v1/{NORTH}/cmd", b"from the api")
    assert north.messages.empty()


def test_agents_connect_over_the_documented_tls_listener(broker: SecuredMosquitto) -> None:
    collector = Session(broker, "svc.collector")
    collector.subscribe("citygw/v1/+/telemetry")
    north = Session(broker, NORTH, tls=True)
    north.publish(f"citygw/v1/{NORTH}/telemetry", b"over tls")
    assert collector.received() == (f"citygw/v1/{NORTH}/telemetry", b"over tls")
    # Plain MQTT on the TLS port gets no CONNACK; a client that does not trust the city's CA stops.
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=2) as raw:
        raw.sendall(PLAIN_CONNECT)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            assert not raw.recv(4).startswith(b"\x20"), "CONNACK over plain MQTT on the TLS listener"
    with (
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
