"""deploy/mosquitto on real Mosquitto: TLS, no anonymous, per-client users, topic rights.

Each refusal is checked with a control: the message that must not arrive is sent first, a
message that must arrive is sent after it on the same path, so "it never arrived" is
decided by the broker's ordering, not by a timeout guess.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from citygw.contract import wire
from collector.owners import OwnerPolicy
from collector.service import Collector
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import END, now_ms, wait_until
from tests.deploy.broker import PASSWORD, SecuredMosquitto, Session
from tests.services import find_binary

pytestmark = pytest.mark.integration
NORTH, SOUTH = "depot-north-1", "depot-south-1"
COLLECTOR, COLLECTOR_2, API = "svc.collector-1", "svc.collector-2", "svc.api-1"
ALERTS, ALERTS_2 = "city.alerts", "city.alerts-2"
TELEMETRY = "$share/collectors/citygw/v1/+/telemetry"
# MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, empty client id.
PLAIN_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecuredMosquitto]:
    users = [NORTH, SOUTH, COLLECTOR, COLLECTOR_2, API, ALERTS, ALERTS_2]
    server = SecuredMosquitto(tmp_path / "mosquitto", users)
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
    collector = Session(broker, COLLECTOR)
    collector.subscribe("citygw/v1/+/telemetry")
    Session(broker, NORTH).publish_refused(f"citygw/v1/{SOUTH}/telemetry", b"spoofed")
    Session(broker, NORTH).publish_refused(f"citygw/v1/{NORTH}/config", b"spoofed desired config")
    Session(broker, NORTH).publish(f"citygw/v1/{NORTH}/telemetry", b"own")
    assert collector.received() == (f"citygw/v1/{NORTH}/telemetry", b"own")
    assert collector.messages.empty()


def test_an_agent_reads_only_its_own_config_and_commands(broker: SecuredMosquitto) -> None:
    north = Session(broker, NORTH)
    assert north.try_subscribe("citygw/v1/+/telemetry") == [False]
    # Granted (the pattern is citygw/v1/+/cmd), but the acl_file delivers only NORTH's own.
    north.subscribe(f"citygw/v1/{SOUTH}/cmd", f"citygw/v1/{SOUTH}/config")
    north.subscribe(f"citygw/v1/{NORTH}/cmd", f"citygw/v1/{NORTH}/config")
    api = Session(broker, API)
    south = Session(broker, SOUTH)
    api.publish(f"citygw/v1/{SOUTH}/cmd", b"switch off lamp 3")
    api.publish(f"citygw/v1/{SOUTH}/config", b"south config")
    south.publish(f"citygw/v1/{SOUTH}/telemetry", b"south readings")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"north command")
    api.publish(f"citygw/v1/{NORTH}/config", b"north config")
    assert north.received() == (f"citygw/v1/{NORTH}/cmd", b"north command")
    assert north.received() == (f"citygw/v1/{NORTH}/config", b"north config")
    assert north.messages.empty()


def test_update_orders_reach_their_agent_only_and_only_the_api_writes_them(broker: SecuredMosquitto) -> None:
    """An order carries its wave's download token: no other agent may read it, nor any agent forge one."""
    north = Session(broker, NORTH)
    north.subscribe(f"citygw/v1/{SOUTH}/update", f"citygw/v1/{NORTH}/update")
    Session(broker, SOUTH).publish_refused(f"citygw/v1/{NORTH}/update", b"forged order")
    api = Session(broker, API)
    api.subscribe("citygw/v1/+/update/state")
    api.publish(f"citygw/v1/{SOUTH}/update", b"south order")
    api.publish(f"citygw/v1/{NORTH}/update", b"north order")
    assert north.received() == (f"citygw/v1/{NORTH}/update", b"north order")
    assert north.messages.empty()
    north.close()  # one connection per user: the sessions below would take its place
    Session(broker, NORTH).publish_refused(f"citygw/v1/{SOUTH}/update/state", b"spoofed result")
    Session(broker, NORTH).publish(f"citygw/v1/{NORTH}/update/state", b"applied")
    assert api.received() == (f"citygw/v1/{NORTH}/update/state", b"applied")
    assert api.messages.empty()


def test_the_collector_reads_all_telemetry_also_on_a_shared_subscription(broker: SecuredMosquitto) -> None:
    collector = Session(broker, COLLECTOR)
    collector.subscribe("$share/collectors/citygw/v1/+/telemetry", "citygw/v1/+/health")
    # One connection per user at a time: the broker makes the user name the client id.
    for agent, channel in ((NORTH, "telemetry"), (SOUTH, "telemetry"), (SOUTH, "health")):
        session = Session(broker, agent)
        session.publish(f"citygw/v1/{agent}/{channel}", agent.encode() if channel == "telemetry" else b"ok")
        session.close()
    got = sorted(collector.received() for _ in range(3))
    assert got == [
        (f"citygw/v1/{NORTH}/telemetry", NORTH.encode()),
        (f"citygw/v1/{SOUTH}/health", b"ok"),
        (f"citygw/v1/{SOUTH}/telemetry", SOUTH.encode()),
    ]
    # The collector may not publish commands, nor the API telemetry.
    api = Session(broker, API)
    north = Session(broker, NORTH)
    north.subscribe(f"citygw/v1/{NORTH}/cmd")
    collector.publish_refused(f"citygw/v1/{NORTH}/cmd", b"from the collector")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"from the api")
    assert north.received() == (f"citygw/v1/{NORTH}/cmd", b"from the api")
    assert north.messages.empty()


def test_agents_connect_over_the_documented_tls_listener(broker: SecuredMosquitto) -> None:
    collector = Session(broker, COLLECTOR)
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


def receive_all(sessions: list[Session], count: int) -> list[list[bytes]]:
    """The payloads each session receives until ``count`` have arrived in all."""
    got: list[list[bytes]] = [[] for _ in sessions]
    deadline = time.monotonic() + 20
    while sum(map(len, got)) < count:
        assert time.monotonic() < deadline, f"{sum(map(len, got))} of {count} messages arrived"
        for session, payloads in zip(sessions, got, strict=True):
            with contextlib.suppress(queue.Empty):
                payloads.append(session.received(timeout=0.05)[1])
    return got


@pytest.mark.parametrize(("mqtt5", "clean"), [(False, True), (False, False), (True, True), (True, False)])
def test_no_agent_takes_over_the_collectors_or_another_agents_connection(
    broker: SecuredMosquitto, mqtt5: bool, clean: bool
) -> None:
    """NORTH connects with the collector's client id, then with SOUTH's: both victims stay connected,
    SOUTH's will is not published, and everything SOUTH sends after the attempts reaches the collector."""
    collector = Session(broker, COLLECTOR, client_id="collector-1", clean=False)
    collector.subscribe(TELEMETRY, "$share/collectors/citygw/v1/+/status")
    will = (f"citygw/v1/{SOUTH}/status", b"offline")
    south = Session(broker, SOUTH, client_id=SOUTH, clean=False, will=will)
    for victim in ("collector-1", COLLECTOR, SOUTH):
        for tls in (True, False):
            attacker = Session(broker, NORTH, client_id=victim, mqtt5=mqtt5, clean=clean, tls=tls)
            attacker.publish(f"citygw/v1/{NORTH}/telemetry", b"attacker connected")
            attacker.close()
    assert receive_all([collector], 6) == [[b"attacker connected"] * 6]
    south.publish(f"citygw/v1/{SOUTH}/status", b"online")  # a will published before it would come first
    for n in range(50):
        south.publish(f"citygw/v1/{SOUTH}/telemetry", str(n).encode())
    assert receive_all([collector], 51) == [[b"online", *(str(n).encode() for n in range(50))]]
    assert not collector.dropped.is_set(), "the collector was disconnected"
    assert not south.dropped.is_set(), f"{SOUTH} was disconnected"


def test_collectors_share_the_telemetry_and_no_agent_can_join_their_group(broker: SecuredMosquitto) -> None:
    """Two collectors, each its own user, split the stream; NORTH's $share and wildcard
    subscriptions are refused (MQTT 3.1.1 and 5), its own cmd and config are granted."""
    collectors = [Session(broker, user, clean=False) for user in (COLLECTOR, COLLECTOR_2)]
    for collector in collectors:
        collector.subscribe(TELEMETRY)
    for mqtt5 in (False, True):
        north = Session(broker, NORTH, mqtt5=mqtt5)
        refused = [
            TELEMETRY,
            "$share/collectors/citygw/v1/#",
            "$share/anything/#",
            "citygw/v1/+/telemetry",
            "#",
        ]
        assert north.try_subscribe(*refused) == [False] * len(refused), "mqtt5" if mqtt5 else "3.1.1"
        assert north.try_subscribe(f"citygw/v1/{NORTH}/cmd", f"citygw/v1/{NORTH}/config") == [True, True]
        north.close()
    south = Session(broker, SOUTH)
    for n in range(60):
        south.publish(f"citygw/v1/{SOUTH}/telemetry", str(n).encode())
    got = receive_all(collectors, 60)
    assert sorted(int(payload) for payloads in got for payload in payloads) == list(range(60))
    assert all(got), f"one collector got nothing: {[len(payloads) for payloads in got]}"


def test_the_alerts_reader_reads_alerts_and_publishes_nothing(broker: SecuredMosquitto) -> None:
    """A city system's reader user: citygw/v1/_alerts/# only; each refused publish is followed by
    a control on the same path, which arrives alone."""
    reader = Session(broker, ALERTS)
    assert reader.try_subscribe("citygw/v1/+/telemetry", "#", TELEMETRY) == [False, False, False]
    reader.subscribe("citygw/v1/_alerts/#")
    api = Session(broker, API)
    api.publish("citygw/v1/_alerts/lamp-failures", b"cabinet 7: 3 lamps out")
    assert reader.received() == ("citygw/v1/_alerts/lamp-failures", b"cabinet 7: 3 lamps out")
    reader.close()
    observer = Session(broker, ALERTS_2)
    observer.subscribe("citygw/v1/_alerts/#")
    collector = Session(broker, COLLECTOR)
    collector.subscribe(TELEMETRY)
    north = Session(broker, NORTH)
    north.subscribe(f"citygw/v1/{NORTH}/cmd")
    refused = ("citygw/v1/_alerts/lamp-failures", f"citygw/v1/{ALERTS}/telemetry", f"citygw/v1/{NORTH}/cmd")
    for topic in refused:
        Session(broker, ALERTS).publish_refused(topic, b"from the reader")
    api.publish("citygw/v1/_alerts/lamp-failures", b"control")
    Session(broker, SOUTH).publish(f"citygw/v1/{SOUTH}/telemetry", b"control")
    api.publish(f"citygw/v1/{NORTH}/cmd", b"control")
    for session in (observer, collector, north):
        assert session.received()[1] == b"control"
        assert session.messages.empty()


def test_the_users_script_refuses_names_the_acl_would_misread(broker: SecuredMosquitto) -> None:
    for kind, user, says in (
        ("agent", "svc.thing", "is no agent id"),
        ("collector", "collector-3", "needs a dot"),
        ("robot", "x", "unknown kind"),
        ("collector", NORTH, "needs a dot"),
        ("agent", NORTH, "exists"),
        ("collector", COLLECTOR_2, "exists"),
    ):
        done = broker.users_script("add", kind, user)
        assert done.returncode == 2, (kind, user, done.stderr)
        assert says in done.stderr, (kind, user, done.stderr)
    done = broker.users_script("init", str(broker.dynsec_file), "admin")
    assert done.returncode == 2, "init must never overwrite the broker's users"
    assert "exists" in done.stderr
    assert broker.users_script("roles").returncode == 0, "running it again changes nothing"
    with pytest.raises(PermissionError):
        Session(broker, "svc.thing")


def test_the_broker_listens_only_on_the_configured_listeners(broker: SecuredMosquitto) -> None:
    """A listener setting above the first `listener` line makes Mosquitto open 1883 on every address."""
    assert broker.proc is not None
    sockets = subprocess.run([find_binary("ss"), "-ltnpH"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in sockets.splitlines() if f"pid={broker.proc.pid}," in line]
    ports = {line.split()[3].rsplit(":", 1)[1] for line in mine}
    assert ports == {str(broker.port), str(broker.tls_port), str(broker.mtls_port)}


def test_the_collector_stores_every_reading_while_an_agent_tries_its_client_id(
    broker: SecuredMosquitto, tmp_path: Path
) -> None:
    """Issue 21.1 measured 0 of 500 stored while an agent held the collector's id; now all 500 are,
    with the attacker reconnecting under the collector's id every 10 batches (3.1.1 and 5, clean
    and persistent) while the real collector runs on its shared subscription."""
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    url = f"mqtt://{COLLECTOR}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"
    collector = Collector(
        url, store, client_id="collector-1", share_group="collectors", batch_max_seconds=0.05
    )
    collector.start()
    try:
        assert collector.wait_subscribed(10), "collector did not subscribe"
        south = Session(broker, SOUTH)
        t0 = now_ms() - 60_000
        attempts = [(mqtt5, clean) for mqtt5 in (False, True) for clean in (True, False)]
        for seq in range(100):
            readings = [
                wire.Reading(
                    device=f"meter-{i}", measurement="electricity", ts=t0 + seq * 10 + i, fields={"kwh": i}
                )
                for i in range(5)
            ]
            south.publish(
                wire.topic(SOUTH, wire.Channel.TELEMETRY),
                wire.encode(wire.TelemetryBatch(agent=SOUTH, seq=seq, readings=readings)),
            )
            if seq % 10 == 0:
                mqtt5, clean = attempts[seq // 10 % len(attempts)]
                victim = ("collector-1", COLLECTOR)[seq // 40 % 2]
                Session(broker, NORTH, client_id=victim, mqtt5=mqtt5, clean=clean, tls=True).close()

        def count() -> int:
            return len(store.range(measurement="electricity", start_ms=0, end_ms=END))

        wait_until(lambda: count() == 500, "500 readings stored", timeout=30)
    finally:
        collector.stop()
        store.close()


def test_the_collector_reads_every_agents_config_and_holds_agents_to_it(
    broker: SecuredMosquitto, tmp_path: Path
) -> None:
    """Issue 21.2 on the shipped rights: the collector's role may read the configs the API pushes (no
    reading is converted until it has), and may not write one."""
    Session(broker, COLLECTOR_2).publish_refused(f"citygw/v1/{NORTH}/config", b"from a collector")
    api = Session(broker, API)
    desired = wire.DesiredConfig(
        agent=NORTH,
        version=1,
        issued_at=now_ms(),
        site="depot-north",
        lines=[],
        devices=[{"id": "meter-1", "line": "rs485-1", "profile": "eastron_sdm630", "unit": 1, "poll_s": 10}],
    )
    api.client.publish(
        f"citygw/v1/{NORTH}/config", wire.encode(desired), qos=1, retain=True
    ).wait_for_publish(5)
    api.close()
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    url = f"mqtt://{COLLECTOR}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"
    collector = Collector(
        url,
        store,
        client_id=COLLECTOR,
        share_group="collectors",
        batch_max_seconds=0.05,
        owners=OwnerPolicy.STRICT,
    )
    collector.start()
    try:
        assert collector.wait_subscribed(10), "collector did not subscribe"
        north = Session(broker, NORTH)
        for seq, device in enumerate(("meter-of-south", "meter-1")):
            reading = wire.Reading(device=device, measurement="electricity", ts=now_ms(), fields={"kwh": 1.5})
            batch = wire.TelemetryBatch(agent=NORTH, seq=seq, readings=[reading])
            north.publish(wire.topic(NORTH, wire.Channel.TELEMETRY), wire.encode(batch))

        def rows(measurement: str) -> list[tuple[str, str]]:
            found = store.range(measurement=measurement, start_ms=0, end_ms=END)
            return [
                (row.tags.get("device", ""), row.tags.get("reason", row.tags.get("site", "")))
                for row in found
            ]

        wait_until(lambda: rows("electricity") == [("meter-1", "depot-north")], "meter-1 stored", timeout=20)
        wait_until(lambda: rows("dead_letter") == [("", "not_owned")], "the other meter refused")
    finally:
        collector.stop()
        store.close()


def test_only_collectors_publish_acks_and_each_agent_reads_only_its_own(broker: SecuredMosquitto) -> None:
    """End-to-end acks (citygw/v1/<agent>/ack): the collector's role publishes them; an agent's
    subscription is granted (the pattern is citygw/v1/+/ack), but the acl_file delivers only its own;
    no agent may publish one, not even on its own topic, nor may the API. Each refused publish is
    followed by a collector's ack on the same path, which arrives alone."""
    north = Session(broker, NORTH)
    assert north.try_subscribe("citygw/v1/+/ack") == [True]
    south = Session(broker, SOUTH, clean=False)  # its session keeps what reaches it while it is away
    south.subscribe(f"citygw/v1/{SOUTH}/ack")
    north.publish_refused(f"citygw/v1/{SOUTH}/ack", b"forged by north")
    south.publish_refused(f"citygw/v1/{SOUTH}/ack", b"forged by south")
    north = Session(broker, NORTH)
    north.subscribe("citygw/v1/+/ack")
    south = Session(broker, SOUTH, clean=False)
    Session(broker, API).publish_refused(f"citygw/v1/{NORTH}/ack", b"from the api")
    collector = Session(broker, COLLECTOR)
    collector.publish(f"citygw/v1/{SOUTH}/ack", b"south stored")
    collector.publish(f"citygw/v1/{NORTH}/ack", b"north stored")
    assert south.received() == (f"citygw/v1/{SOUTH}/ack", b"south stored")
    assert north.received() == (f"citygw/v1/{NORTH}/ack", b"north stored")
    time.sleep(0.5)  # south's ack went out first: had north been given it, it would be here by now
    assert north.messages.empty()
    assert south.messages.empty()


def test_a_collector_whose_role_may_not_publish_acks_sends_none_and_keeps_its_connection(
    broker: SecuredMosquitto, tmp_path: Path
) -> None:
    """Roles made before acks existed: Mosquitto closes the connection of a client publishing where
    it may not, so the collector checks once (wire.ACK_PROBE_TOPIC) and then sends no ack at all,
    instead of being thrown out after every batch (measured: 70 messages acknowledged for 20 sent)."""
    answer = broker.mosquitto_ctrl(
        "removeRoleACL", "citygw-collector", "publishClientSend", "citygw/v1/+/ack"
    )
    assert "rror" not in answer, answer
    north = Session(broker, NORTH)
    north.subscribe(f"citygw/v1/{NORTH}/ack")
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    url = f"mqtt://{COLLECTOR}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"
    collector = Collector(url, store, client_id=COLLECTOR, batch_max_seconds=0.05)
    collector.start()
    try:
        assert collector.wait_subscribed(10), "collector did not subscribe"
        for seq in range(20):
            reading = wire.Reading(
                device="m-1", measurement="electricity", ts=now_ms() - seq, fields={"kwh": 1.0}
            )
            batch = wire.TelemetryBatch(agent=NORTH, seq=seq, readings=[reading])
            north.publish(wire.topic(NORTH, wire.Channel.TELEMETRY), wire.encode(batch))
            time.sleep(0.05)
        wait_until(lambda: collector.stats.messages >= 20, "20 messages stored", timeout=20)
        time.sleep(1)
        assert collector.stats.messages == 20, "each message stored and acknowledged once"
        assert not collector.acks
        assert north.messages.empty(), "no ack"
    finally:
        collector.stop()
        store.close()


def test_running_roles_again_gives_a_broker_from_before_acks_their_rights(broker: SecuredMosquitto) -> None:
    """Upgrading: `citygw-broker-users roles` on a broker whose roles predate acks adds them."""

    def role_acls(role: str) -> str:  # broker.mosquitto_ctrl runs `roles` first: not here
        env = {**os.environ, "XDG_CONFIG_HOME": str(broker.workdir / "ctrl")}
        command = [find_binary("mosquitto_ctrl"), "dynsec", "getRole", role]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30).stdout

    for role, acltype in (("citygw-collector", "publishClientSend"), ("citygw-agent", "subscribePattern")):
        answer = broker.mosquitto_ctrl("removeRoleACL", role, acltype, "citygw/v1/+/ack")
        assert "rror" not in answer, answer
        assert "citygw/v1/+/ack" not in role_acls(role)
    done = broker.users_script("roles")
    assert done.returncode == 0, done.stderr
    for role in ("citygw-collector", "citygw-agent"):
        assert "citygw/v1/+/ack" in role_acls(role)
