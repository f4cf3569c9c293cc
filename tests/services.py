"""Real services for integration tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Each runs as a child process on a free loopback port with its data in a temporary folder,
and can be stopped and started again on the same port (fault tests).
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def find_binary(name: str, *extra_dirs: str) -> str:
    for folder in (*extra_dirs, "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `make test` (it installs Debian's package)")
    return found


class Service:
    """A server process that can be started, killed and restarted on the same port."""

    name = "service"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return _port_open(self.port)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        try:
            _wait(self.ready, f"{self.name} on port {self.port}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log: {self.log_path.read_text(errors='replace')[-2000:]}") from exc

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL for a crash) and wait until the port is free."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


class Mosquitto(Service):
    name = "mosquitto"

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        super().__init__(workdir)
        self.extra_config = extra_config

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # Started as root, Mosquitto drops to user `mosquitto`, which cannot save its
            # persistence file into our temp folder: stay the user we are.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 100\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + self.extra_config
        )
        return [find_binary("mosquitto"), "-c", str(conf)]


class InfluxDB(Service):
    """InfluxDB 1.x (Debian's package) with the v1 HTTP API."""

    name = "influxd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "reporting-enabled = false\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.workdir}/meta"\n'
            f'[data]\n  dir = "{self.workdir}/data"\n  wal-dir = "{self.workdir}/wal"\n'
            '  query-log-enabled = false\n  wal-fsync-delay = "0s"\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "  max-body-size = 0\n"
        )
        return [find_binary("influxd"), "-config", str(conf)]

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/ping", timeout=1).status_code == 204

    def query(self, q: str, db: str | None = None) -> dict[str, object]:
        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        resp = httpx.post(f"{self.url}/query", data=params, timeout=30)
        resp.raise_for_status()
        result: dict[str, object] = resp.json()
        return result

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"')


class VictoriaMetrics(Service):
    """VictoriaMetrics single node: accepts InfluxDB's /api/v2/write."""

    name = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            find_binary("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir}/data",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-selfScrapeInterval=0",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

    def flush(self) -> None:
        """Make recent writes searchable now (test helper)."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)


__all__ = ["InfluxDB", "Mosquitto", "Service", "VictoriaMetrics", "free_port"]
