"""Real services for integration tests: Mosquitto, InfluxDB 1.x, VictoriaMetrics and PostgreSQL.

Each runs as a child process on a free loopback port with its data in a temporary folder,
and can be stopped and started again on the same port (fault tests). ``serving`` runs an ASGI
app (the API) on uvicorn in a thread, for clients that need a real socket (streams, a browser).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn


def _first_ephemeral_port() -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


# Below the kernel's ephemeral range: a port the kernel hands out as the source port of some
# test's outgoing connection cannot be, between our check and the server's bind, the one we chose.
_PORTS = range(max(1024, _first_ephemeral_port() - 12000), _first_ephemeral_port())


def free_port() -> int:
    """A loopback port nothing listens on, outside the range of outgoing connections' source ports."""
    for _ in range(1000):
        port = random.choice(_PORTS)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise OSError("no free loopback port")


class _Exited(Exception):
    """The server process ended while we waited for it to come up."""


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


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on uvicorn on a free loopback port, in a thread; yields its base URL, stops it after."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started or not thread.is_alive(), "uvicorn to start", timeout=10)
        assert server.started, "uvicorn did not start (see its log above)"
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.choose_ports()
        self._started = False

    def choose_ports(self) -> None:
        """Pick the ports to listen on (again, if another process took one before the first start)."""
        self.port = free_port()

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return _port_open(self.port)

    def start(self) -> None:
        """Start the server; the first start picks other ports if one was taken meanwhile (3 tries)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            try:
                _wait(self._up, f"{self.name} on port {self.port}")
            except (TimeoutError, _Exited) as exc:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")
                if self._started or attempt == 2 or "in use" not in log_text:
                    raise TimeoutError(f"{exc}; log: {log_text[-2000:]}") from exc
                self.choose_ports()
            else:
                self._started = True
                return

    def _up(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise _Exited(f"{self.name} on port {self.port} exited")
        return self.ready()

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

    def choose_ports(self) -> None:
        super().choose_ports()
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


class PostgreSQL(Service):
    """A throw-away PostgreSQL cluster (Debian's ``postgresql``), TCP on loopback only, trusting local users.

    PostgreSQL refuses to run as root: under root, the cluster belongs to the ``postgres`` system user
    the Debian package creates, in a folder of its own under the system temp dir (pytest's temp
    folders are private to root), and the binaries are started through ``setpriv``.
    """

    name = "postgres"
    user = "citygw"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.bin = self._bin_dir()
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.datadir = Path(tempfile.mkdtemp(prefix="citygw-postgres-")) / "data"
        if self.owner is not None:
            os.chown(self.datadir.parent, self.owner.pw_uid, self.owner.pw_gid)
        subprocess.run(
            [
                *self._as_owner(),
                f"{self.bin}/initdb",
                f"--pgdata={self.datadir}",
                f"--username={self.user}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    @staticmethod
    def _bin_dir() -> str:
        # Debian keeps the server binaries out of PATH, one folder per major version.
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
        return str(versions[-1].parent) if versions else str(Path(find_binary("postgres")).parent)

    def _as_owner(self) -> list[str]:
        if self.owner is None:
            return []
        return [
            "setpriv",
            f"--reuid={self.owner.pw_uid}",
            f"--regid={self.owner.pw_gid}",
            "--init-groups",
            "--",
        ]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def command(self) -> list[str]:
        return [
            *self._as_owner(),
            f"{self.bin}/postgres",
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            # A test cluster: speed over durability.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=database, autocommit=True
        )

    def ready(self) -> bool:
        try:
            with self.connect() as connection:
                connection.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


__all__ = ["InfluxDB", "Mosquitto", "PostgreSQL", "Service", "VictoriaMetrics", "free_port"]
