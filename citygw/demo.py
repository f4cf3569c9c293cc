"""``citygw demo``: simulated field devices, edge agents, broker, collector, store and API on one machine.

With no options nothing external is needed: an embedded broker and the embedded SQLite store.
``--broker`` and ``--store`` swap in real Mosquitto and InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
import yaml

import edge
from citygw.contract.agent_config import AgentConfig
from citygw.embedded_broker import EmbeddedBroker
from collector.dead_letter import DEAD_LETTER
from collector.health import AGENT_HEALTH
from collector.service import Collector
from collector.store import open_store, prepare
from collector.store.base import StoreError, TelemetryReader
from collector.tuning import tune_process
from edge.agent import Agent
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty, serve_tcp

if TYPE_CHECKING:
    from api.settings import ApiSettings
    from api.transit.feeds import TransitService
    from api.transit.timetable import Timetable
    from simulators.transit.buses import Bus

# The api package is imported where it is used: importing it logs (alembic's plugins at INFO), and
# a demo that refuses to start says so in one line.

log = logging.getLogger(__name__)

_EDGE = Path(edge.__file__).parent

# Station → (district, where, starting values): the city centre has more traffic than the suburb.
AIR_QUALITY_STATIONS = {
    "aq-rynok": ("halytskyi", (49.84195, 24.03100), {"no2": 38.0, "pm25": 14.2, "pm10": 27.5}),
    "aq-sykhiv": ("sykhivskyi", (49.80550, 24.05650), {"no2": 17.0, "pm25": 8.9, "pm10": 16.1}),
}


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path
    broker_url: str | None = None
    store_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    duration_s: float | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def simulated_city(
    workdir: Path, broker_url: str, transit: tuple[Timetable, list[Bus]] | None = None
) -> AsyncIterator[list[AgentConfig]]:
    """Start the simulated field devices; yield the configs of the edge agents that read them.

    ``transit``: the network's timetable and the vehicles to drive on it (see demo_transit).
    """
    agents: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        aqt530 = load_profile("vaisala_aqt530")
        aq_agent: dict[str, Any] = {"lines": [], "devices": []}
        for device_id, (district, (lat, lon), values) in AIR_QUALITY_STATIONS.items():
            station = ModbusDeviceSimulator(aqt530, unit=1, values=values, animate=True)
            endpoint = await stack.enter_async_context(serve_tcp([station]))
            aq_agent["lines"].append(
                {"id": f"tcp-{device_id}", "kind": "tcp", "host": endpoint.host, "port": endpoint.port}
            )
            aq_agent["devices"].append(
                {
                    "id": device_id,
                    "profile": "vaisala_aqt530",
                    "line": f"tcp-{device_id}",
                    "unit": 1,
                    "poll_s": 2,
                    "tags": {"district": district},
                    "location": {"lat": lat, "lon": lon},
                }
            )
        agents.append({"agent_id": "lviv-air", "site": "lviv-air-network", **aq_agent})

        meter = ModbusDeviceSimulator(load_profile("eastron_sdm630"), unit=1, animate=True)
        serial_port = await stack.enter_async_context(serve_serial_pty([meter]))
        agents.append(
            {
                "agent_id": "lviv-depot",
                "site": "depot-1",
                "lines": [{"id": "rs485-1", "kind": "rtu", "port": serial_port, "baudrate": 9600}],
                "devices": [
                    {
                        "id": "meter-depot-1",
                        "profile": "eastron_sdm630",
                        "line": "rs485-1",
                        "unit": 1,
                        "poll_s": 2,
                        "tags": {"district": "zaliznychnyi"},
                        "location": {"lat": 49.83720, "lon": 23.99610},  # the tram depot
                    }
                ],
            }
        )

        # Street lighting: a DALI gateway in a cabinet on the square, on the cabinet's Modbus TCP link.
        dali = ModbusDeviceSimulator(load_profile("ecodim_dali_gw2"), unit=1)
        cabinet = await stack.enter_async_context(serve_tcp([dali]))
        agents.append(
            {
                "agent_id": "lviv-lighting",
                "site": "lighting-rynok",
                "lines": [{"id": "tcp-cabinet", "kind": "tcp", "host": cabinet.host, "port": cabinet.port}],
                "devices": [
                    {
                        "id": "cabinet-rynok",
                        "profile": "ecodim_dali_gw2",
                        "line": "tcp-cabinet",
                        "unit": 1,
                        "poll_s": 5,
                        "tags": {"district": "halytskyi"},
                        "location": {"lat": 49.84165, "lon": 24.03175},
                    }
                ],
            }
        )
        # Water: an ultrasonic flow meter at a pumping station, on RS-485.
        flow = ModbusDeviceSimulator(load_profile("tuf_2000m"), unit=1, animate=True)
        water_port = await stack.enter_async_context(serve_serial_pty([flow]))
        agents.append(
            {
                "agent_id": "lviv-water",
                "site": "pumping-station-1",
                "lines": [{"id": "rs485-1", "kind": "rtu", "port": water_port, "baudrate": 9600}],
                "devices": [
                    {
                        "id": "water-main-1",
                        "profile": "tuf_2000m",
                        "line": "rs485-1",
                        "unit": 1,
                        "poll_s": 5,
                        "tags": {"district": "shevchenkivskyi"},
                        "location": {"lat": 49.85830, "lon": 24.02270},  # the pumping station
                    }
                ],
            }
        )

        if transit is not None:
            from citygw.demo_transit import vehicle_agents

            agents.extend(await vehicle_agents(stack, *transit))

        configs = []
        for agent in agents:
            # Each agent its own folder: the journal, commands.sqlite and remote-config.json (kept
            # beside the journal) of one agent must not be another's.
            folder = workdir / agent["agent_id"]
            folder.mkdir(exist_ok=True)
            # The simulators' ports change every run, so a remote config kept from an earlier run
            # (pushed through the API) would point the agent at devices that are gone: every run
            # starts each agent from the config written here.
            (folder / "remote-config.json").unlink(missing_ok=True)
            agent.update(broker={"url": broker_url}, journal=str(folder / "journal.sqlite"))
            path = workdir / f"{agent['agent_id']}.yaml"
            path.write_text(yaml.safe_dump(agent, sort_keys=False))
            configs.append(AgentConfig.model_validate(agent))
        yield configs


# What the collector stores about the system itself and what the API derives: not readings of a device.
def _system_measurements() -> frozenset[str]:
    from api.recorder import COMMAND_MEASUREMENT, VEHICLE_MEASUREMENT

    return frozenset({DEAD_LETTER, AGENT_HEALTH, VEHICLE_MEASUREMENT, COMMAND_MEASUREMENT})


def summary(store: TelemetryReader, now_ms: int) -> str:
    """A few lines: each device, its age and its latest values."""
    system = _system_measurements()
    lines = [f"{'device':<16} {'measurement':<17} {'age':>5}  values"]
    for point in sorted(store.latest(), key=lambda p: (p.measurement, p.tags.get("device", ""))):
        if point.measurement in system:
            continue
        measured = [(k, v) for k, v in point.fields.items() if k not in ("lat", "lon")]  # where, not what
        values = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in measured[:5])
        age = (now_ms - point.ts_ms) / 1000
        lines.append(f"{point.tags.get('device', '?'):<16} {point.measurement:<17} {age:>4.0f}s  {values}")
    return "\n".join(lines)


async def _print_summaries(
    store: TelemetryReader,
    every_s: float,
    transit: TransitService,
    timetable: Timetable,
    settings: ApiSettings,
) -> None:
    from citygw.demo_transit import vehicle_lines

    def both(now_ms: int) -> str:
        snapshot = transit.snapshot(
            store,
            now_ms=now_ms,
            max_age_s=settings.feed_max_vehicle_age_s,
            max_ahead_s=settings.feed_max_clock_ahead_s,
        )
        return summary(store, now_ms) + "\n\n" + "\n".join(vehicle_lines(snapshot, timetable))

    while True:
        await asyncio.sleep(every_s)
        try:
            text = await asyncio.to_thread(both, int(time.time() * 1000))
        except StoreError as exc:
            text = f"the store is unavailable: {exc}"
        print(f"\n{time.strftime('%H:%M:%S')} latest readings\n{text}", flush=True)


def _refuse(reason: str) -> int:
    print(f"citygw demo: {reason}", file=sys.stderr, flush=True)
    return 2


def _listen_problem(host: str, port: int) -> str | None:
    """Why the API could not listen on ``host:port`` (bound and closed again at once), or None."""
    if not 1 <= port <= 65535:
        return f"--port {port} is no TCP port the demo can serve on (1-65535)"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}; use --host"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use; use --port N"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


@contextlib.contextmanager
def _only_demo_in(workdir: Path) -> Iterator[bool]:
    """Hold ``workdir/.lock`` (flock, released when the process ends however it ends); False if held."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


async def run_demo(options: DemoOptions) -> int:
    """Run until Ctrl-C or ``duration_s``: 0 if all ran, 1 if a part stopped, 2 if it could not start."""
    workdir = options.workdir
    # One demo per folder: two would share the journals, the store and the registry.
    with _only_demo_in(workdir) as alone:
        if not alone:
            return _refuse(f"another demo uses {workdir}; use --workdir")
        # Before anything starts: the API binds last, and a busy port found then stops everything.
        problem = _listen_problem(options.api_host, options.api_port)
        if problem is not None:
            return _refuse(problem)
        return await _run_demo(options)


async def _run_demo(options: DemoOptions) -> int:
    workdir = options.workdir
    failed = False
    store_url = options.store_url or f"sqlite:///{workdir / 'citygw.sqlite'}"
    base = f"http://{options.api_host}:{options.api_port}"
    async with contextlib.AsyncExitStack() as stack:
        broker_url = options.broker_url
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker(port=_free_port()))
            broker_url = broker.url
        from citygw import demo_transit

        gtfs_path, timetable = demo_transit.write_network(workdir)
        fleet = demo_transit.todays_fleet(timetable, time.time())
        configs = await stack.enter_async_context(simulated_city(workdir, broker_url, (timetable, fleet)))
        store = open_store(store_url)
        stack.callback(store.close)
        await asyncio.to_thread(prepare, store)
        # The embedded broker speaks MQTT 3.1.1 only.
        collector = Collector(
            broker_url, store, client_id="citygw-demo-collector", mqtt_v5=options.broker_url is not None
        )
        tune_process()  # the demo's process runs a collector: collector/tuning.py
        collector.start()
        stack.callback(collector.stop)
        from api.app import create_app
        from api.transit.feeds import TransitService

        settings = _demo_api_settings(workdir, broker_url, gtfs_path)
        from citygw.demo_registry import register_city

        admin_token = await asyncio.to_thread(
            register_city, settings.registry_url, configs, now_ms=int(time.time() * 1000)
        )
        app = create_app(store, settings=settings)
        app.state.transit = transit = TransitService(settings)
        now_s = int(time.time())
        transit.alerts.create(
            demo_transit.operator_alert(timetable, now_s), actor="demo dispatcher", now_s=now_s
        )
        server = _ApiServer(
            uvicorn.Config(
                app,
                host=options.api_host,
                port=options.api_port,
                log_level="warning",
            )
        )
        print(
            f"CityGW demo: {len(configs)} edge agents, broker {broker_url}, store {store_url}\n"
            f"  city page:          {base}/\n"
            f"  API docs:           {base}/docs\n"
            f"  live summary:       {base}/v1/summary\n"
            f"  devices:            {base}/v1/devices\n"
            f"  transport feeds:    {base}/v1/transit/vehicle-positions (GTFS-realtime protobuf;"
            " also trip-updates, alerts)\n"
            f"                      {base}/v1/transit/vehicle-positions?format=json\n"
            f"  static timetable:   {base}/v1/transit/gtfs.zip ({len(fleet)} trams and buses of the"
            " generated Lviv network, running round the clock)\n"
            f"  agent configs:      {workdir}/*.yaml\n"
            f"  registry:           {settings.registry_url} (agents and devices registered at their sites)\n"
            f"  admin key:          {admin_token}\n"
            "                      (valid until the next demo starts; more keys: .venv/bin/citygw keys"
            f" create --registry {settings.registry_url} --name NAME --role engineer --site SITE)\n"
            "Ctrl-C stops.",
            flush=True,
        )
        background = [asyncio.create_task(Agent(c).run(), name=f"agent-{c.agent_id}") for c in configs]
        background.append(
            asyncio.create_task(_print_summaries(store, 5.0, transit, timetable, settings), name="summary")
        )
        serving = asyncio.create_task(_serve(server), name="api")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stopping = asyncio.create_task(stop.wait(), name="ctrl-c")
        try:
            done, _ = await asyncio.wait(
                [serving, stopping, *background],
                timeout=options.duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done - {stopping}:  # the API or a background task: none ends by itself
                failed = True
                log.error("%s stopped: %r", task.get_name(), task.exception())
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            server.should_exit = True
            stopping.cancel()
            for task in background:
                task.cancel()
            await _stopped([serving, *background])
            ends = await asyncio.gather(serving, *background, return_exceptions=True)
            for task, end in zip([serving, *background], ends, strict=True):
                if isinstance(end, Exception) and task not in done:
                    failed = True
                    log.error("%s failed while stopping: %r", task.get_name(), end)
    print(
        "CityGW demo stopped." if not failed else "CityGW demo stopped: a part of it failed (see above).",
        flush=True,
    )
    return 1 if failed else 0


def _demo_api_settings(workdir: Path, broker_url: str, gtfs_path: Path) -> ApiSettings:
    """The demo's API on loopback: telemetry without a key, no rate limit, registry in the demo's folder."""
    from api.settings import load_settings

    return load_settings(
        open_telemetry=True,
        registry_url=f"sqlite:///{workdir / 'registry.sqlite'}",
        broker_url=broker_url,
        rate_limit_per_s=0,
        transit_gtfs_path=gtfs_path,
    )


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception())


STOP_GRACE_S = 3.0


async def _stopped(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for cancelled ``tasks``, cancelling again what a cancellation did not stop.

    pymodbus's connect() uses asyncio.wait_for, which on Python 3.11 drops a cancellation that
    arrives as it completes (CPython gh-86296, see edge.poller): a line task asked to stop in the
    first moments goes on polling, and its agent's TaskGroup waits for it for ever. A second
    cancellation reaches only the tasks themselves, not the agent (its TaskGroup is already
    aborting), so every task of the edge package still running is cancelled again.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(3):
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        if not pending:
            return
        stuck = [t for t in asyncio.all_tasks() if not t.done() and _is_edge_task(t)]
        log.warning(
            "still stopping after %.0f s: %s; cancelling %s again",
            STOP_GRACE_S,
            ", ".join(sorted(t.get_name() for t in pending)),
            ", ".join(sorted(t.get_name() for t in stuck)) or "them",
        )
        for task in {*pending, *stuck}:
            task.cancel()
    if pending:
        names = ", ".join(sorted(t.get_name() for t in pending))
        raise RuntimeError(f"{names} did not stop")


def _is_edge_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and Path(code.co_filename).is_relative_to(_EDGE)


async def _serve(server: uvicorn.Server) -> None:
    """The API on an event loop of its own, in a thread, until ``server.should_exit``.

    The demo's loop runs every agent, and an agent does its journal's disk work on its loop (opening
    it, WAL checkpoints: fsyncs), as on a bus's Raspberry Pi where nothing else waits for it. Sharing
    that loop, every API request waited for those fsyncs, which a busy disk makes last seconds.
    uvicorn raises SystemExit when it cannot listen: an error here.
    """
    served: Future[None] = Future()

    def serve() -> None:
        try:
            asyncio.run(server.serve())
        except SystemExit as exc:
            error = RuntimeError(f"the API could not listen on {server.config.host}:{server.config.port}")
            error.__cause__ = exc
            served.set_exception(error)
        except BaseException as exc:
            served.set_exception(exc)
        else:
            served.set_result(None)

    threading.Thread(target=serve, name="demo-api", daemon=True).start()
    await asyncio.wrap_future(served)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the demo stops the API together with everything else."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
