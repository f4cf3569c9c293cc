"""Agent software updates end to end: API → real Mosquitto → the agent under its launcher, as a process.

Releases of the real project are built from this checkout (a wheel at a bumped version, signed):
a good one is taken and the agent comes back on it, healthy, with its device answering; one whose
code crashes at import is rolled back by the launcher, which needs none of its code; one signed by a
key the agent does not pin, and one older than the running version, are refused. Every outcome is
seen in ``GET /v1/agents`` and in the audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.app import create_app
from api.registry import open_registry
from api.security import Role
from api.settings import load_settings
from citygw.contract import release
from collector.store.sqlite import SqliteStore
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_tcp
from tests.api.factories import bearer, insert_key
from tests.services import Mosquitto, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
AGENT = "cabinet-17"
BROKEN = '\nraise RuntimeError("this release is broken at import")\n'


def _source(tmp_path: Path, name: str, *, broken: bool = False) -> Path:
    """A copy of this checkout; ``broken``: its agent module raises when imported."""
    source = tmp_path / name
    source.mkdir()
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    for package in release.PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    if broken:
        agent = source / "edge" / "agent.py"
        agent.write_text(agent.read_text() + BROKEN)
    return source


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The project's wheel at 0.2.0, and a 0.3.0 that crashes at import; built at once, offline."""
    tmp = tmp_path_factory.mktemp("wheels")
    jobs = {"0.2.0": False, "0.3.0": True}
    with ThreadPoolExecutor(2) as pool:
        built = {
            version: pool.submit(
                release.build_wheel, _source(tmp, f"src-{version}", broken=broken), version, tmp / "out"
            )
            for version, broken in jobs.items()
        }
        return {version: future.result() for version, future in built.items()}


def _bundle(key: Ed25519PrivateKey, wheel: Path, version: str) -> bytes:
    """A bundle of ``wheel`` whose signed manifest says ``version`` (the wheel's own, or another)."""
    data = wheel.read_bytes()
    manifest = release.Manifest(
        version=version,
        wheel=wheel.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=1,
        min_agent_version="0.1.0",
    )
    manifest_bytes, signature = release.sign(manifest, key)
    return release.Bundle(manifest_bytes, signature, data).encode()


@pytest.fixture
def launched(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[str, str, Ed25519PrivateKey, Path]]:
    """The API (real MQTT link, real HTTP) with an admin key; yields its URL, the key, the signing key
    and the agent's config path; the caller starts the agent."""
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    with registry.session() as session:
        token = insert_key(session, Role.ADMIN)
        session.commit()
    settings = load_settings(
        registry_url=f"sqlite:///{tmp_path / 'registry.sqlite'}", broker_url=mosquitto.url
    )
    store = SqliteStore(tmp_path / "citygw.sqlite")
    with serving(create_app(store, settings=settings, registry=registry)) as url:
        yield url, token, Ed25519PrivateKey.generate(), tmp_path / "agent.yaml"
    store.close()
    registry.close()


def _write_config(path: Path, broker_url: str, api_url: str, key: Ed25519PrivateKey, meter_port: int) -> None:
    config: dict[str, Any] = {
        "agent_id": AGENT,
        "site": "depot",
        "broker": {"url": broker_url, "keepalive": 5, "reconnect_min": 0.1, "reconnect_max": 0.5},
        "journal": str(path.parent / "journal.sqlite"),
        "health": {"interval": 0.5},
        "lines": [{"id": "meters", "kind": "tcp", "host": "127.0.0.1", "port": meter_port, "timeout": 0.5}],
        "devices": [
            {"id": "meter-1", "profile": "eastron_sdm630", "line": "meters", "unit": 1, "poll_s": 0.5}
        ],
        "update": {
            "public_keys": [release.public_key_text(key.public_key())],
            "api_url": api_url,
            "staging_dir": str(path.parent / "releases"),
            "health_deadline_s": 20,
        },
    }
    path.write_text(yaml.safe_dump(config))


def _launch(config_path: Path) -> subprocess.Popen[bytes]:
    """``citygw edge launch`` as systemd would run it, its output in agent.log beside the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGW_")}
    with (config_path.parent / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "citygw.cli", "edge", "launch", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config_path.parent,
        )


async def _eventually(what: str, check: Any, within_s: float = 60.0) -> Any:
    deadline = time.monotonic() + within_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    pytest.fail(f"{what}: not within {within_s} s; last answer: {last!r}")


async def test_a_release_is_taken_a_broken_one_rolled_back_bad_and_older_ones_refused(
    launched: tuple[str, str, Ed25519PrivateKey, Path], mosquitto: Mosquitto, wheels: dict[str, Path]
) -> None:
    url, token, key, config_path = launched
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=1, values={"voltage_l1": 230.1})
    async with serve_tcp([meter]) as endpoint, httpx.AsyncClient(base_url=url, headers=bearer(token)) as api:
        _write_config(config_path, mosquitto.url, url, key, endpoint.port)
        agent = _launch(config_path)
        try:

            async def seen() -> dict[str, Any] | None:
                response = await api.get(f"/v1/agents/{AGENT}")
                return response.json() if response.status_code == 200 else None

            async def answering() -> bool:
                body = await seen()
                return body is not None and body["device_health"].get("meter-1", {}).get("state") == "ok"

            await _eventually("the agent online with its meter answering", answering)
            assert (await seen() or {})["version"] == "0.1.0"

            async def outcome(rollout: int) -> dict[str, Any] | None:
                body = await seen()
                update = (body or {}).get("update") or {}
                final = ("applied", "refused", "failed", "rolled_back")
                return body if update.get("rollout") == rollout and update.get("state") in final else None

            async def roll_out(bundle: bytes, version: str) -> int:
                uploaded = await api.post(
                    "/v1/releases", content=bundle, headers={"Content-Type": "application/octet-stream"}
                )
                assert uploaded.status_code == 201, uploaded.text
                wave = await api.post("/v1/rollouts", json={"version": version, "agents": [AGENT]})
                assert wave.status_code == 201, wave.text
                assert wave.json()["counts"] == {"pending": 1}
                return int(wave.json()["id"])

            # Signed by a key the agent does not pin: refused, nothing changes.
            stranger = Ed25519PrivateKey.generate()
            rollout = await roll_out(_bundle(stranger, wheels["0.2.0"], "0.9.0"), "0.9.0")
            body = await _eventually("the forged release refused", lambda: outcome(rollout))
            assert body["update"]["state"] == "refused"
            assert "bad signature" in body["update"]["reason"]
            assert body["version"] == "0.1.0"

            # The real next version: staged, restarted into, healthy (the meter answers again), kept.
            rollout = await roll_out(_bundle(key, wheels["0.2.0"], "0.2.0"), "0.2.0")
            body = await _eventually("0.2.0 applied", lambda: outcome(rollout), within_s=90)
            assert body["update"]["state"] == "applied", body["update"]
            assert body["version"] == "0.2.0"
            assert os.readlink(config_path.parent / "releases" / "current") == "0.2.0"
            wave = (await api.get(f"/v1/rollouts/{rollout}")).json()
            assert wave["counts"] == {"applied": 1}

            # A version that crashes at import: the launcher goes back to 0.2.0, which says why.
            rollout = await roll_out(_bundle(key, wheels["0.3.0"], "0.3.0"), "0.3.0")
            body = await _eventually("0.3.0 rolled back", lambda: outcome(rollout), within_s=90)
            assert body["update"]["state"] == "rolled_back", body["update"]
            assert "exited with code 1 before it was healthy" in body["update"]["reason"]
            assert os.readlink(config_path.parent / "releases" / "current") == "0.2.0"

            async def back_on_0_2_0() -> bool:
                again = await seen()
                return again is not None and again["version"] == "0.2.0" and again["state"] == "online"

            await _eventually("0.2.0 online again", back_on_0_2_0)

            # Older than the running 0.2.0 (signed by the right key): refused, no downgrade.
            rollout = await roll_out(_bundle(key, wheels["0.2.0"], "0.1.5"), "0.1.5")
            body = await _eventually("the downgrade refused", lambda: outcome(rollout))
            assert body["update"]["state"] == "refused"
            assert "not newer than the running 0.2.0" in body["update"]["reason"]

            audit = (await api.get("/v1/audit", params={"action": "update.result"})).json()
            said = [(e["after"]["version"], e["after"]["state"]) for e in reversed(audit)]
            assert said == [
                ("0.9.0", "refused"),
                ("0.2.0", "staged"),
                ("0.2.0", "applied"),
                ("0.3.0", "staged"),
                ("0.3.0", "rolled_back"),
                ("0.1.5", "refused"),
            ], said
        finally:
            agent.terminate()
            try:
                code = agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                code = agent.wait()
            print((config_path.parent / "agent.log").read_text(errors="replace")[-6000:])
        assert code == 0
