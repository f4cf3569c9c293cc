"""The agent's side of a rollout, against a real HTTP server that drops the link mid-download."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygw.contract import release, wire
from citygw.contract.agent_config import UpdateSettings
from edge.launcher import EXIT_RESTART, LAUNCHED_ENV
from edge.releases import Releases
from edge.update import Updater

KEY = Ed25519PrivateKey.generate()


def _wheel(version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("edge/__init__.py", "# " + "x" * 50_000)  # big enough to be cut in the middle
        wheel.writestr(f"citygw-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
    return buffer.getvalue()


class FlakyApi:
    """Serves one wheel with Range; the first answer stops after ``cut`` bytes, as a dropped cellular link."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self.data = data
        self.cut = cut
        self.ranges: list[str | None] = []

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        wanted = headers.get("Range") or headers.get("range")
        self.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        body = self.data[start:]
        status = "206 Partial Content" if start else "200 OK"
        extra = f"Content-Range: bytes {start}-{len(self.data) - 1}/{len(self.data)}\r\n" if start else ""
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        if self.cut is not None:
            body, self.cut = body[: self.cut], None
        writer.write(body)
        await writer.drain()
        writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"http://127.0.0.1:{port}"


def _order(version: str, data: bytes, *, rollout: int = 5, min_agent: str = "0.1.0") -> bytes:
    manifest = release.Manifest(
        version=version,
        wheel=f"citygw-{version}-py3-none-any.whl",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=1,
        min_agent_version=min_agent,
    )
    manifest_bytes, signature = release.sign(manifest, KEY)
    return wire.encode(
        wire.UpdateOrder(
            agent="cab-1",
            rollout=rollout,
            version=version,
            manifest=manifest_bytes.decode(),
            signature=signature,
            path=f"/v1/releases/{version}/wheel?token=t",
            issued_at=1,
        )
    )


class Agent:
    """What the updater needs of the agent: where it reports, how it exits, who answers."""

    def __init__(self, tmp_path: Path, api_url: str, running: str = "0.1.0") -> None:
        self.said: list[wire.UpdateState] = []
        self.exits: list[int] = []
        settings = UpdateSettings(
            public_keys=[release.public_key_text(KEY.public_key())],
            api_url=api_url,
            staging_dir=tmp_path / "releases",
            download_timeout_s=20,
        )
        self.updater = Updater(
            "cab-1",
            settings,
            running=running,
            report=self._report,
            exit=self._exit,
            answering=lambda: ["m-1"],
        )

    async def _report(self, state: wire.UpdateState) -> None:
        self.said.append(state)

    async def _exit(self, code: int) -> None:
        self.exits.append(code)


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCHED_ENV, "1")


@pytest.mark.usefixtures("launched")
async def test_a_dropped_download_resumes_then_the_release_is_staged_and_restarted_into(
    tmp_path: Path,
) -> None:
    data = _wheel("0.2.0")
    api = FlakyApi(data, cut=20_000)
    async with api.serving() as url:
        agent = Agent(tmp_path, url)
        await agent.updater.receive(_order("0.2.0", data))
    assert api.ranges == [None, "bytes=20000-"]
    assert [(s.state, s.version) for s in agent.said] == [(wire.UpdateOutcome.STAGED, "0.2.0")]
    assert agent.exits == [EXIT_RESTART]
    releases = Releases(tmp_path / "releases")
    assert releases.current() == "0.2.0"
    assert (releases.folder("0.2.0") / "edge" / "__init__.py").exists()
    trial = releases.trial()
    assert trial is not None
    assert (trial.version, trial.previous, trial.rollout, trial.answering) == ("0.2.0", None, 5, ["m-1"])
    assert releases.handled() == 5
    assert not any((tmp_path / "releases" / "downloads").iterdir())
    # The retained order again (a reconnect): handled already, nothing happens.
    await agent.updater.receive(_order("0.2.0", data))
    assert len(agent.said) == 1


@pytest.mark.usefixtures("launched")
async def test_a_wheel_that_is_not_the_signed_one_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    signed, served = _wheel("0.2.0"), _wheel("0.2.0").replace(b"xxxx", b"evil", 1)
    assert len(signed) == len(served)
    async with FlakyApi(served, cut=None).serving() as url:
        agent = Agent(tmp_path, url)
        await agent.updater.receive(_order("0.2.0", signed))
    [said] = agent.said
    assert said.state is wire.UpdateOutcome.REFUSED
    assert said.reasons[0].startswith("wrong hash")
    assert agent.exits == []
    releases = Releases(tmp_path / "releases")
    assert (releases.current(), releases.trial(), releases.handled()) == (None, None, 5)
    assert json.loads((tmp_path / "releases" / "result").read_text())["state"] == "refused"


@pytest.mark.usefixtures("launched")
async def test_a_release_for_newer_agents_only_is_refused_before_any_download(tmp_path: Path) -> None:
    api = FlakyApi(_wheel("0.3.0"), cut=None)
    async with api.serving() as url:
        agent = Agent(tmp_path, url, running="0.2.0")
        await agent.updater.receive(_order("0.3.0", _wheel("0.3.0"), min_agent="0.2.5"))
    assert "needs an agent of at least 0.2.5" in agent.said[0].reasons[0]
    assert api.ranges == []


async def test_an_agent_not_under_the_launcher_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    agent = Agent(tmp_path, "http://127.0.0.1:9")
    await agent.updater.receive(_order("0.2.0", _wheel("0.2.0")))
    assert "not started by citygw edge launch" in agent.said[0].reasons[0]
    assert os.environ.get(LAUNCHED_ENV) is None
