"""The agent's MQTT session over TLS with a username and password, on a real Mosquitto.

The test makes its own CA and server certificate with the ``openssl`` CLI and a password
file with ``mosquitto_passwd``; the broker requires both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from citygw.contract import wire
from citygw.pki import Pki
from edge.journal import Journal
from edge.publisher import Publisher
from tests.edge.conftest import AGENT, agent_config
from tests.services import Mosquitto, find_binary, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "pi-test", "s3cret:with@odd/chars"


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    openssl = find_binary("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test CA"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([str(part) for part in command], check=True, capture_output=True, timeout=30)
    return ca, cert, key


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, Path]]:
    """Mosquitto with a TLS listener and a password file; no anonymous clients."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca, cert, key = make_ca(folder)
    passwords = folder / "passwd"
    subprocess.run(
        [find_binary("mosquitto_passwd"), "-b", "-c", str(passwords), USER, PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "mosquitto",
        extra_config=(
            f"allow_anonymous false\npassword_file {passwords}\n"
            f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        ),
    )
    broker.start()
    yield broker, tls_port, ca
    broker.stop()


def url(port: int, user: str = USER, password: str = PASSWORD) -> str:
    from urllib.parse import quote

    return f"mqtts://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def publishing(
    tmp_path: Path, broker_url: str, ca: Path | None, **files: Path
) -> AsyncIterator[Publisher]:
    broker = {"ca_file": str(ca)} if ca is not None else {}
    broker.update({name: str(path) for name, path in files.items()})
    config = agent_config(tmp_path, broker_url)
    config = config.model_copy(update={"broker": config.broker.model_copy(update=broker)})
    journal = Journal(config.journal.path, AGENT)
    journal.append(
        [wire.Reading(device="aq-1", measurement="air_quality", ts=1_700_000_000_000, fields={"pm25": 7})]
    )
    publisher = Publisher(config, journal)
    task = asyncio.create_task(publisher.run())
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        journal.close()


async def test_tls_with_password_delivers(tmp_path: Path, secure_broker: tuple[Mosquitto, int, Path]) -> None:
    _, tls_port, ca = secure_broker
    context = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1", tls_port, username=USER, password=PASSWORD, tls_context=context, identifier="reader"
    ) as reader:
        await reader.subscribe(wire.topic(AGENT, wire.Channel.TELEMETRY), qos=1)
        async with publishing(tmp_path, url(tls_port), ca) as publisher:
            async with asyncio.timeout(10):
                message = await anext(aiter(reader.messages))
            assert isinstance(message.payload, bytes)
            batch = wire.TelemetryBatch.model_validate_json(message.payload)
            assert batch.readings[0].fields == {"pm25": 7}
            assert publisher.counters.connects == 1


@pytest.mark.parametrize(
    ("what", "password", "trust_ca"),
    [("wrong password", "nope", True), ("unknown CA", PASSWORD, False)],
)
async def test_refused_session_keeps_the_journal(
    tmp_path: Path, secure_broker: tuple[Mosquitto, int, Path], what: str, password: str, trust_ca: bool
) -> None:
    _, tls_port, ca = secure_broker
    async with publishing(tmp_path, url(tls_port, password=password), ca if trust_ca else None) as publisher:
        await asyncio.sleep(1.5)  # several reconnect attempts
        assert publisher.counters.connects == 0, what
        assert publisher.journal.backlog() == 1


@pytest.mark.parametrize("damage", ["missing", "not PEM"])
async def test_a_ca_file_gone_at_connect_is_retried_until_replaced(
    tmp_path: Path,
    secure_broker: tuple[Mosquitto, int, Path],
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    """The CA file was there at config load, is missing or damaged at connect: logged, retried, not fatal."""
    _, tls_port, ca = secure_broker
    replaced = tmp_path / "ca-replaced.pem"
    if damage == "not PEM":
        replaced.write_text("this is no certificate\n")
    with caplog.at_level(logging.ERROR, logger="edge.publisher"):
        async with publishing(tmp_path, url(tls_port), replaced) as publisher:
            await asyncio.sleep(1.0)  # several attempts, reconnect_max 0.5 s
            attempts = [r.getMessage() for r in caplog.records if "cannot set up TLS" in r.getMessage()]
            assert len(attempts) >= 2, attempts
            assert f"with ca_file {replaced}" in attempts[0]
            assert "trying again with back-off" in attempts[0]
            assert publisher.counters.connects == 0
            replaced.write_bytes(ca.read_bytes())  # the file is put back: the next attempt connects
            async with asyncio.timeout(10):
                await publisher.connected.wait()
            assert publisher.counters.connects == 1


async def test_a_certificate_and_key_that_do_not_match_at_connect_are_retried_until_they_do(
    tmp_path: Path, secure_broker: tuple[Mosquitto, int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation caught half-way (the new key, the old certificate): logged, retried, then connects."""
    _, tls_port, ca = secure_broker
    pki = Pki(tmp_path / "city-ca")
    pki.init()
    old_cert, _ = pki.issue("agent", AGENT)
    first = old_cert.read_bytes()
    pki.issue("agent", AGENT)  # the new pair: its key now sits beside the old certificate
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert.write_bytes(first)
    key.write_bytes((pki.root / f"{AGENT}.key").read_bytes())
    with caplog.at_level(logging.ERROR, logger="edge.publisher"):
        async with publishing(tmp_path, url(tls_port), ca, cert_file=cert, key_file=key) as publisher:
            await asyncio.sleep(1.0)
            attempts = [r.getMessage() for r in caplog.records if "cannot set up TLS" in r.getMessage()]
            assert len(attempts) >= 2, attempts
            assert f"cert_file {cert}, key_file {key}" in attempts[0]
            assert publisher.counters.connects == 0
            assert publisher.journal.backlog() == 1
            cert.write_bytes((pki.root / f"{AGENT}.crt").read_bytes())  # the copy completes
            async with asyncio.timeout(10):
                await publisher.connected.wait()
