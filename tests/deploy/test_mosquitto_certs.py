"""deploy/mosquitto's certificate listener on real Mosquitto, with certificates of citygw pki.

The CN is the user: the same rights and client-id binding as with a password. Each refusal of
a certificate is checked by the TLS alert Mosquitto sends (its reason), next to a control that
connects on the same listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from api.mqtt_link import AgentLink
from api.registry import open_registry
from citygw.contract import wire
from citygw.pki import Pki
from collector.service import Collector, TlsFiles
from collector.store.sqlite import SqliteStore
from edge.journal import Journal
from edge.publisher import Publisher
from tests.deploy.broker import SecuredMosquitto, Session
from tests.deploy.test_mosquitto import TELEMETRY, receive_all
from tests.edge.conftest import agent_config
from tests.services import Service

pytestmark = pytest.mark.integration
NORTH, SOUTH = "depot-north-1", "depot-south-1"
COLLECTOR, API, ALERTS = "svc.collector-1", "svc.api-1", "city.alerts"
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecuredMosquitto]:
    server = SecuredMosquitto(tmp_path / "mosquitto", [NORTH, SOUTH, COLLECTOR, API, ALERTS])
    server.start()
    yield server
    server.stop()


def connect(broker: SecuredMosquitto, cert: str | None, key: str | None, client_id: bytes = b"x") -> bytes:
    """MQTT 3.1.1 CONNECT over TLS with this client certificate: the CONNACK, or raises ssl.SSLError."""
    context = ssl.create_default_context(cafile=broker.ca_file)
    # TLS 1.2: the broker checks the certificate within the handshake and its alert always arrives;
    # in 1.3 it is sent after, and a write racing the close may see a bare EOF instead.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    connect_packet = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    with (
        socket.create_connection(("127.0.0.1", broker.mtls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(bytes([0x10, len(connect_packet)]) + connect_packet)
        return tls.recv(4)


def refusal(broker: SecuredMosquitto, cert: str | None, key: str | None = None) -> str:
    """Why the broker refuses this certificate (the TLS alert); fails if it lets it in."""
    try:
        got = connect(broker, cert, key)
    except ssl.SSLError as exc:
        return str(exc)
    except ConnectionResetError as exc:
        return f"reset: {exc}"
    raise AssertionError(f"{cert}: let in ({got!r})")


def test_an_agent_with_a_certificate_publishes_under_its_own_topics_only(broker: SecuredMosquitto) -> None:
    """The CN is the user: the agent's ACL and subscription rules apply as with its password."""
    collector = Session(broker, None, cert=COLLECTOR, client_id="collector-1", clean=False)
    collector.subscribe(TELEMETRY)
    Session(broker, None, cert=NORTH).publish_refused(f"citygw/v1/{SOUTH}/telemetry", b"spoofed")
    Session(broker, None, cert=NORTH).publish_refused(f"citygw/v1/{NORTH}/config", b"own desired config")
    north = Session(broker, None, cert=NORTH)
    assert north.try_subscribe(TELEMETRY, "citygw/v1/+/telemetry", "#") == [False, False, False]
    north.subscribe(f"citygw/v1/{NORTH}/cmd")
    api = Session(broker, None, cert=API)
    api.publish(f"citygw/v1/{SOUTH}/cmd", b"not for north")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"for north")
    assert north.received() == (f"citygw/v1/{NORTH}/cmd", b"for north")
    north.publish(f"citygw/v1/{NORTH}/telemetry", b"own")
    assert collector.received() == (f"citygw/v1/{NORTH}/telemetry", b"own")
    # The client id is the CN too: asking for the collector's or SOUTH's throws nobody off.
    for victim in ("collector-1", COLLECTOR, SOUTH):
        attacker = Session(broker, None, cert=NORTH, client_id=victim)
        attacker.publish(f"citygw/v1/{NORTH}/telemetry", victim.encode())
        attacker.close()
    assert receive_all([collector], 3) == [[b"collector-1", COLLECTOR.encode(), SOUTH.encode()]]
    assert not collector.dropped.is_set(), "the collector was disconnected"
    assert north.messages.empty()
    assert connect(broker, *broker.client_cert(SOUTH)) == CONNACK_ACCEPTED  # control for the next test


def test_certificates_the_broker_does_not_trust_are_refused(broker: SecuredMosquitto, tmp_path: Path) -> None:
    other = Pki(tmp_path / "other-ca")
    other.init(name="CityGW test CA")  # the same name, another key
    cert, key = other.issue("agent", NORTH)
    assert "unknown ca" in refusal(broker, str(cert), str(key))
    expired, expired_key = broker.pki.issue(
        "agent", SOUTH, days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    assert "certificate expired" in refusal(broker, str(expired), str(expired_key))
    # No certificate at all, whatever user name and password the CONNECT would carry.
    assert "alert handshake failure" in refusal(broker, None)
    assert connect(broker, *broker.client_cert(NORTH)) == CONNACK_ACCEPTED


def test_a_revoked_agent_is_refused_once_the_broker_reloads_the_crl(broker: SecuredMosquitto) -> None:
    north, south = broker.client_cert(NORTH), broker.client_cert(SOUTH)
    assert connect(broker, *north) == CONNACK_ACCEPTED
    revoke_and_reload(broker, NORTH, lambda: None)
    # A connection made before stays until the plugin's user is deleted (docs/deploy.md); made
    # after the revocation and before the reload: Mosquitto reads the CRL at start and reload only.
    assert connect(broker, *south) == CONNACK_ACCEPTED
    connected = Session(broker, None, cert=SOUTH)
    revoke_and_reload(broker, SOUTH, lambda: connected.publish(f"citygw/v1/{SOUTH}/health", b"ok"))
    assert not connected.dropped.is_set()
    broker.mosquitto_ctrl("deleteClient", SOUTH)
    assert connected.dropped.wait(5), "deleteClient did not end the revoked agent's connection"
    assert connect(broker, *broker.client_cert(COLLECTOR)) == CONNACK_ACCEPTED


def test_an_expired_crl_refuses_every_client_until_it_is_signed_anew(broker: SecuredMosquitto) -> None:
    probe = broker.client_cert("probe-1")
    assert connect(broker, *probe) == CONNACK_ACCEPTED
    broker.pki.crl(now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3), days=1)  # nextUpdate: 2 days ago
    broker.reload()
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(broker, *probe)
        except ssl.SSLError as exc:
            why = str(exc)
            break
        assert time.monotonic() < deadline, "an expired CRL still let clients in 10 s after the reload"
        time.sleep(0.1)
    assert "certificate expired" in why  # OpenSSL's alert for "CRL has expired"
    broker.pki.crl()  # citygw pki crl
    broker.reload()
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(ssl.SSLError):
            if connect(broker, *probe) == CONNACK_ACCEPTED:
                break
        assert time.monotonic() < deadline, "still refused 10 s after a fresh CRL"
        time.sleep(0.1)


def revoke_and_reload(broker: SecuredMosquitto, name: str, before_reload: Callable[[], None]) -> None:
    """Revoke ``name`` and reload: then the broker refuses its certificate as revoked.

    A reload is not synchronous: a probe certificate revoked with it (CN = no user, no client id
    shared with anyone) is tried until refused; then ``name``'s, once.
    """
    probe = broker.client_cert(f"probe-{name}")
    broker.pki.revoke(name)
    broker.pki.revoke(f"probe-{name}")
    before_reload()
    broker.reload()
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(broker, *probe, client_id=b"probe")
        except ssl.SSLError:
            break
        assert time.monotonic() < deadline, "a revoked certificate still let in 10 s after the reload"
        time.sleep(0.1)
    assert "certificate revoked" in refusal(broker, *broker.client_cert(name))


async def test_a_rotated_certificate_is_used_at_the_next_connect_and_no_reading_is_lost(
    broker: SecuredMosquitto, tmp_path: Path
) -> None:
    """The agent's files are replaced by a new certificate and key, the old one is revoked, the
    broker restarts: the agent reconnects with the new pair (the old one is refused), and all
    readings taken before, during and after reach the collector, from the journal."""
    collector = Session(broker, None, cert=COLLECTOR, clean=False)
    collector.subscribe(f"citygw/v1/{NORTH}/telemetry")
    pi = tmp_path / "pi"
    pi.mkdir()
    for name, path in zip(("agent.crt", "agent.key"), broker.client_cert(NORTH), strict=True):
        shutil.copy(path, pi / name)
        shutil.copy(path, tmp_path / f"old-{name}")
    config = agent_config(tmp_path, f"mqtts://127.0.0.1:{broker.mtls_port}", agent_id=NORTH)
    files = {"ca_file": broker.ca_file, "cert_file": pi / "agent.crt", "key_file": pi / "agent.key"}
    config = config.model_copy(update={"broker": config.broker.model_copy(update=files)})
    journal = Journal(config.journal.path, NORTH)
    publisher = Publisher(config, journal)
    task = asyncio.create_task(publisher.run())

    def take(first: int, count: int) -> None:
        readings = [
            wire.Reading(device="aq-1", measurement="air_quality", ts=1_700_000_000_000 + n, fields={"n": n})
            for n in range(first, first + count)
        ]
        journal.append(readings)

    try:
        take(0, 10)
        async with asyncio.timeout(10):
            await publisher.connected.wait()
        # Rotation: a new pair issued and written over the agent's files, the old one revoked.
        broker.pki.issue("agent", NORTH, days=2)
        old_serial = x509.load_pem_x509_certificate((pi / "agent.crt").read_bytes()).serial_number
        shutil.copy(broker.pki.root / f"{NORTH}.key", pi / "agent.key")
        shutil.copy(broker.pki.root / f"{NORTH}.crt", pi / "agent.crt")
        broker.pki.revoke(f"{old_serial:x}")
        await asyncio.to_thread(Service.stop, broker)  # the link drops; the sessions of the test stay
        take(10, 10)  # while the broker is down: into the journal
        await asyncio.to_thread(broker.start)
        async with asyncio.timeout(30):
            while publisher.counters.connects < 2:  # noqa: ASYNC110 - a counter: no event to await
                await asyncio.sleep(0.05)
        take(20, 10)
        got = await asyncio.to_thread(readings_of, collector, 30)
        assert got == set(range(30))  # QoS 1: a batch may come twice, none may be missing
        assert journal.backlog() == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        journal.close()
    # So the agent reconnected with the new pair: the old one is refused.
    assert "certificate revoked" in refusal(
        broker, str(tmp_path / "old-agent.crt"), str(tmp_path / "old-agent.key")
    )


def readings_of(collector: Session, count: int) -> set[int]:
    """The ``n`` fields of the readings the collector receives until ``count`` different ones arrived."""
    got: set[int] = set()
    deadline = time.monotonic() + 30
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} readings arrived: {sorted(got)}"
        try:
            _topic, payload = collector.received(timeout=0.5)
        except queue.Empty:
            continue
        batch = wire.TelemetryBatch.model_validate_json(payload)
        got.update(int(reading.fields["n"]) for reading in batch.readings)
    return got


def test_the_collector_and_the_api_connect_with_their_certificates(
    broker: SecuredMosquitto, tmp_path: Path
) -> None:
    """Their CN is their user: the collector takes the collectors' share, the API publishes alerts."""
    url = f"mqtts://127.0.0.1:{broker.mtls_port}"
    ca = Path(broker.ca_file)
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    cert, key = map(Path, broker.client_cert(COLLECTOR))
    collector = Collector(url, store, share_group="collectors", tls_files=TlsFiles(ca, cert, key))
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    cert, key = map(Path, broker.client_cert(API))
    link = AgentLink(url, registry, time.time, ca_file=ca, cert_file=cert, key_file=key)
    collector.start()
    link.start()
    try:
        assert collector.wait_subscribed(10), "the collector did not subscribe"
        assert link.wait_connected(10), "the API's link did not connect"
        reader = Session(broker, ALERTS)
        reader.subscribe("citygw/v1/_alerts/#")
        link.publish_alert("citygw/v1/_alerts/lamp-failures", b"cabinet 7")
        assert reader.received() == ("citygw/v1/_alerts/lamp-failures", b"cabinet 7")
        reading = wire.Reading(
            device="aq-1", measurement="air_quality", ts=1_700_000_000_000, fields={"pm25": 7}
        )
        batch = wire.TelemetryBatch(agent=NORTH, seq=0, readings=[reading])
        Session(broker, None, cert=NORTH).publish(
            wire.topic(NORTH, wire.Channel.TELEMETRY), wire.encode(batch)
        )
        deadline = time.monotonic() + 10
        while not store.range(measurement="air_quality", start_ms=0, end_ms=2**62):
            assert time.monotonic() < deadline, "the reading was not stored"
            time.sleep(0.05)
    finally:
        link.stop()
        collector.stop()
        store.close()
