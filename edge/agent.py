"""The edge agent: lines, pollers, journal and publisher in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import TypeVar

from citygw.contract import wire
from citygw.contract.agent_config import (
    AgentConfig,
    AnyLine,
    Device,
    DialinLine,
    DlmsLine,
    LorawanLine,
    MbusLine,
    NmeaLine,
    OpcUaLine,
    RtuLine,
    TcpLine,
)
from edge import systemd
from edge.commands import Commands, Refused
from edge.config_file import load_agent_config
from edge.dialin import dialin_listener
from edge.journal import Journal
from edge.lorawan import LorawanBridge
from edge.poller import DlmsPoller, GpsPoller, HealthBoard, LinePoller, MbusPoller, ModbusPoller, now_ms
from edge.publisher import Publisher
from edge.remote_config import RemoteConfig
from edge.update import Updater
from edge.vehicles import Vehicles
from firmware_bridge import dlms, mbus
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.overlay import apply_overlay
from firmware_bridge.profile import (
    Profile,
    load_dlms_profile,
    load_lorawan_profile,
    load_mbus_profile,
    load_nmea_profile,
    load_opcua_profile,
    load_profile,
)

log = logging.getLogger(__name__)
L = TypeVar("L")

LINE_RETRY_S = 10.0
GOODBYE_FLUSH_S = 10.0


class Agent:
    """One Raspberry Pi's agent; ``run()`` until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        profiles: Callable[[str], Profile] = load_profile,
        version: str | None = None,
    ) -> None:
        self.base_config = config  # the local file: broker, journal, and the fallback lines and devices
        self.config = config  # what runs now (the file's, or the last applied remote config)
        self.board = HealthBoard()
        self.vehicles = Vehicles()  # the consoles' log-ins, shared by the pollers of every line
        self._load_profile = profiles
        self.profiles: dict[str, Profile] = {}
        # Each Modbus device's profile with its overlay applied, by device id.
        self.device_profiles: dict[str, Profile] = {}
        self.version = version
        self.journal: Journal | None = None
        self.publisher: Publisher | None = None
        self.remote: RemoteConfig | None = None
        self.updater: Updater | None = None
        self.exit_code = 0
        self._main: asyncio.Task[None] | None = None
        # One per Modbus line, the only way onto it: commands go through submit_priority().
        self.pollers: dict[str, ModbusPoller] = {}
        # One per LoRaWAN line: its network server session, the way downlinks go out.
        self.bridges: dict[str, LorawanBridge] = {}
        # A dialin line's pollers (one per modem), by line id and device id.
        self.modem_pollers: dict[str, dict[str, ModbusPoller]] = {}
        self._lines: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Poll, journal and publish until cancelled; then close the lines and the journal."""
        base = self.base_config
        self._main = asyncio.current_task()
        journal = open_journal(base)
        self.journal = journal
        publisher = Publisher(base, journal, version=self.version)
        self.publisher = publisher
        commands = Commands(self, base.journal.path.with_name("commands.sqlite"), self._send_result)
        publisher.listen(wire.Channel.CMD, commands.receive)
        if base.remote.enabled:
            self.remote = RemoteConfig(
                base,
                apply=self.reconfigure,
                current=lambda: self.config,
                board=self.board,
                report=self._send_config_state,
                profiles=self._load_profile,
                settings_check=self._settings_problems,
            )
            self.config = self.remote.startup_config()
            publisher.config_version = self.remote.applied_version
            publisher.listen(wire.Channel.CONFIG, self.remote.receive)
        if base.update is not None:
            self.updater = Updater(
                base.agent_id,
                base.update,
                running=publisher.version,
                report=self._send_update_state,
                exit=self._exit,
                answering=self._answering,
            )
            publisher.listen(wire.Channel.UPDATE, self.updater.receive)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(publisher.run(), name="publisher")
                tasks.create_task(self._publish_health(publisher, journal), name="health")
                self.reconfigure(self.config, initial=True)
                config = self.config
                log.info(
                    "agent %s polling %d devices on %d lines, publishing to %s",
                    config.agent_id,
                    len(config.devices),
                    len(config.lines),
                    config.broker.redacted_url,
                )
                if self.updater is not None:
                    tasks.create_task(self.updater.report_last(), name="update-result")
                    tasks.create_task(self.updater.judge_trial(self._health_problems), name="update-trial")
                self.started.set()
                systemd.notify("READY=1")
                tasks.create_task(systemd.keep_watchdog_fed(), name="watchdog")
        finally:
            self._tasks = None
            commands.close()
            journal.close()

    def reconfigure(self, config: AgentConfig, *, initial: bool = False) -> set[str]:
        """Run ``config``'s lines: restart only those whose settings or devices changed; returns their ids."""
        assert self._tasks is not None
        assert self.journal is not None
        self.config = config
        self.vehicles.configure(config.devices)
        modbus_lines = {line.id for line in config.lines if isinstance(line, TcpLine | RtuLine | DialinLine)}
        names = {d.profile for d in config.devices if d.profile is not None and d.line in modbus_lines}
        for name in names - self.profiles.keys():
            self.profiles[name] = self._load_profile(name)
        self.device_profiles = {
            d.id: apply_overlay(self.profiles[d.profile], d.overlay)
            for d in config.devices
            if d.profile is not None and d.line in modbus_lines
        }
        wanted = {
            line.id: (_signature(config, line.id), line)
            for line in config.lines
            if config.devices_on(line.id)
        }
        changed: set[str] = set()
        for line_id, (signature, task) in list(self._lines.items()):
            if line_id not in wanted or wanted[line_id][0] != signature:
                task.cancel()
                del self._lines[line_id]
                poller = self.pollers.pop(line_id, None)
                if poller is not None:
                    poller.close()
                self.bridges.pop(line_id, None)
                for modem_poller in set(self.modem_pollers.pop(line_id, {}).values()):
                    modem_poller.close()
                changed.add(line_id)
        for line_id, (signature, line) in wanted.items():
            if line_id not in self._lines:
                self._lines[line_id] = (signature, self._start_line(line, config))
                changed.add(line_id)
        device_ids = {d.id for d in config.devices}
        for gone in set(self.board.devices) - device_ids:
            del self.board.devices[gone]
        settings = config.journal
        self.journal.slow_devices = frozenset(
            d.id for d in config.devices if d.poll_s >= settings.slow_poll_s
        )
        self.journal.quota_bytes = _quota_bytes(settings.quota_mb)
        self.journal.policy = settings.on_full
        self.journal.set_fsync(settings.fsync)
        if self.publisher is not None:
            self.publisher.config = config  # publish settings: read at each batch
        if not initial and self.publisher is not None and self.remote is not None:
            self.publisher.config_version = self.remote.applied_version
        return changed

    def _start_line(self, line: AnyLine, config: AgentConfig) -> asyncio.Task[None]:
        assert self._tasks is not None
        assert self.journal is not None
        devices = config.devices_on(line.id)
        run: Callable[[], Awaitable[None]]
        if isinstance(line, LorawanLine):
            bridge = LorawanBridge(
                line,
                [(d, load_lorawan_profile(d.profile or "")) for d in devices],
                journal=self.journal,
                board=self.board,
                site=config.site,
                client_id=f"citygw-{config.agent_id}-{line.id}",
                vehicles=self.vehicles,
            )
            self.bridges[line.id] = bridge
            run = bridge.run
        elif isinstance(line, NmeaLine):
            device = devices[0]
            profile = load_nmea_profile(device.profile) if device.profile else None
            run = GpsPoller(
                line,
                device,
                journal=self.journal,
                board=self.board,
                site=config.site,
                profile=profile,
                vehicles=self.vehicles,
            ).run
        elif isinstance(line, MbusLine):
            meters = [(d, load_mbus_profile(d.profile or "")) for d in devices]
            mbus_poller = MbusPoller(
                meters, journal=self.journal, board=self.board, site=config.site, vehicles=self.vehicles
            )
            bus = partial(mbus.MbusLine, line.port, baudrate=line.baudrate, timeout=line.timeout)
            run = partial(
                self._own_line, line.id, partial(bus, retries=line.retries, name=line.id), mbus_poller
            )
        elif isinstance(line, OpcUaLine):
            from edge.opcua_poller import OpcUaPoller  # asyncua: ~40 MB, loaded only by agents with OPC UA

            run = OpcUaPoller(
                line,
                [(d, load_opcua_profile(d.profile or "")) for d in devices],
                journal=self.journal,
                board=self.board,
                site=config.site,
                vehicles=self.vehicles,
            ).run
        elif isinstance(line, DialinLine):
            run = partial(self._listen, line, devices, config)
        elif isinstance(line, DlmsLine):
            dlms_poller = DlmsPoller(
                [(d, load_dlms_profile(d.profile or "")) for d in devices],
                journal=self.journal,
                board=self.board,
                site=config.site,
                vehicles=self.vehicles,
            )
            link = partial(
                dlms.DlmsLine,
                line.port,
                transport=line.transport,
                baudrate=line.baudrate,
                timeout=line.timeout,
                retries=line.retries,
                name=line.id,
            )
            run = partial(self._own_line, line.id, link, dlms_poller)
        else:
            profiled = [(d, self.device_profiles[d.id]) for d in devices]
            poller = ModbusPoller(
                profiled, journal=self.journal, board=self.board, site=config.site, vehicles=self.vehicles
            )
            self.pollers[line.id] = poller
            run = partial(self._own_line, line.id, partial(_modbus_line, line), poller)
        return self._tasks.create_task(self._supervise(line.id, devices, run), name=f"line:{line.id}")

    async def _supervise(
        self, line_id: str, devices: list[Device], run: Callable[[], Awaitable[None]]
    ) -> None:
        """Run one line's task; an unexpected error stops that line only, never the agent.

        The error is logged with its traceback and put on the health of the line's devices, and
        the line starts again after ``LINE_RETRY_S``: the other lines and publishing go on.
        """
        while True:
            try:
                await run()
            except Exception as exc:
                error = f"line {line_id} stopped on an unexpected error: {exc!r}"
                log.exception("%s; restarting it in %.0f s", error, LINE_RETRY_S)
                for device in devices:
                    self.board.failed(device.id, wire.DeviceState.TIMEOUT, error)
            await asyncio.sleep(LINE_RETRY_S)

    def lorawan_bridge(self, device_id: str) -> LorawanBridge | None:
        """The bridge of the LoRaWAN line ``device_id`` is on; None for a device on another line."""
        for device in self.config.devices:
            if device.id == device_id:
                return self.bridges.get(device.line)
        return None

    async def _listen(self, line: DialinLine, devices: list[Device], config: AgentConfig) -> None:
        """Listen for the line's modems and poll each modem's devices over its connection."""
        assert self.journal is not None
        listener, behind = dialin_listener(line, devices, self.device_profiles)
        pollers = self.modem_pollers.setdefault(line.id, {})
        async with listener, asyncio.TaskGroup() as tasks:
            for name, modem_devices in behind.items():
                poller = ModbusPoller(
                    [(d, self.device_profiles[d.id]) for d in modem_devices],
                    journal=self.journal,
                    board=self.board,
                    site=config.site,
                    vehicles=self.vehicles,
                )
                pollers.update((d.id, poller) for d in modem_devices)
                modem = listener.modems[name]
                open_line = partial(modem.modbus_line, timeout=line.timeout)
                tasks.create_task(self._own_line(line.id, open_line, poller), name=f"line:{line.id}:{name}")

    def commandable(self, device_id: str) -> tuple[Device, Profile, ModbusPoller]:
        """The device a command names, its profile and its line's poller; raises Refused."""
        for device in self.config.devices:
            if device.id == device_id:
                poller = self.pollers.get(device.line) or self.modem_pollers.get(device.line, {}).get(
                    device.id
                )
                if device.profile is None or poller is None:
                    raise Refused(f"device {device_id} is not on a Modbus line")
                return device, self.device_profiles[device.id], poller
        raise Refused(f"no device {device_id} on agent {self.config.agent_id}")

    async def _send_result(self, result: wire.CommandResult) -> None:
        assert self.publisher is not None
        await self.publisher.send(wire.Channel.CMD_RESULT, result)

    async def _send_config_state(self, state: wire.ConfigState) -> None:
        assert self.publisher is not None
        await self.publisher.send(wire.Channel.CONFIG_STATE, state, retain=True)
        if self.remote is not None:
            self.publisher.config_version = self.remote.applied_version
            self.publisher.announce()

    async def _send_update_state(self, state: wire.UpdateState) -> None:
        assert self.publisher is not None
        await self.publisher.send(wire.Channel.UPDATE_STATE, state, retain=True)

    async def _exit(self, code: int) -> None:
        """Stop the agent with exit code ``code`` (a release to start, or a trial that failed)."""
        self.exit_code = code
        if self.publisher is not None:
            await self.publisher.drain_outbox(GOODBYE_FLUSH_S)
        if self._main is not None:
            self._main.cancel()

    async def _settings_problems(self, since_ms: int) -> list[str]:
        """After settings changed: the broker link works (a health message goes out, a waiting reading
        was acknowledged after ``since_ms``) and the journal can be written."""
        problems = []
        publisher = self.publisher
        if publisher is None or not await publisher.publish_health(self.health()):
            problems.append(f"MQTT: cannot publish to {self.base_config.broker.redacted_url}")
        elif self.journal is not None and self.journal.backlog() and publisher.last_ack_ms < since_ms:
            problems.append(f"publishing: {self.journal.backlog()} readings wait, none acknowledged since")
        if self.journal is not None:
            problem = writable(self.journal.path.parent)
            if problem:
                problems.append(f"journal: {problem}")
        return problems

    def _answering(self) -> list[str]:
        return [d for d, r in self.board.devices.items() if r.state is wire.DeviceState.OK]

    def _health_problems(self, since_ms: int, answering: list[str]) -> list[str]:
        """What keeps a new version from being healthy: broker link, journal, devices heard before."""
        problems = []
        if self.publisher is None or not self.publisher.connected.is_set():
            problems.append(f"MQTT: not connected to {self.base_config.broker.redacted_url}")
        if self.journal is not None:
            problem = writable(self.journal.path.parent)
            if problem:
                problems.append(f"journal: {problem}")
        silent = [d for d in answering if (self.board.record(d).last_ok or 0) < since_ms]
        if silent:
            problems.append(f"devices that answered before the update are silent: {', '.join(silent)}")
        return problems

    async def _own_line(
        self, line_id: str, open_line: Callable[[], AbstractAsyncContextManager[L]], poller: LinePoller[L]
    ) -> None:
        """Open the line and poll it; a line that cannot be opened is reported and retried, never fatal."""
        devices = self.config.devices_on(line_id)
        while True:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    opened = await stack.enter_async_context(open_line())
                except Exception as exc:  # serial drivers raise OSError, termios.error, ValueError...
                    error = f"line {line_id} cannot be opened: {exc!r}"
                    log.warning("%s; retrying in %.0f s", error, LINE_RETRY_S)
                    for device in devices:
                        self.board.failed(device.id, wire.DeviceState.TIMEOUT, error)
                else:
                    await poller.run(opened)
            await asyncio.sleep(LINE_RETRY_S)

    def health(self) -> wire.Health:
        assert self.journal is not None
        return wire.Health(
            agent=self.config.agent_id,
            ts=now_ms(),
            devices=self.board.snapshot(),
            journal=self.journal.health(),
        )

    async def _publish_health(self, publisher: Publisher, journal: Journal) -> None:
        while True:
            await asyncio.sleep(self.config.health.interval)
            await publisher.publish_health(self.health())


def _modbus_line(line: TcpLine | RtuLine) -> ModbusLine:
    if isinstance(line, TcpLine):
        return ModbusLine.tcp(host=line.host, port=line.port, timeout=line.timeout)
    server = line.socket_address
    if server is not None:  # RTU frames to a serial server over TCP
        return ModbusLine.rtu_over_tcp(
            host=server[0],
            port=server[1],
            baudrate=line.baudrate,
            parity=line.parity,
            stopbits=line.stopbits,
            bytesize=line.bytesize,
            timeout=line.timeout,
        )
    return ModbusLine.rtu(
        port=line.port,
        baudrate=line.baudrate,
        parity=line.parity,
        stopbits=line.stopbits,
        bytesize=line.bytesize,
        timeout=line.timeout,
    )


def _signature(config: AgentConfig, line_id: str) -> str:
    """Everything that shapes a line's task: its settings, its devices and the site tag."""
    devices = ",".join(d.model_dump_json() for d in config.devices_on(line_id))
    return f"{config.line(line_id).model_dump_json()}|{devices}|{config.site}"


def writable(folder: Path) -> str | None:
    """None if a file can be written and synced in ``folder``, else why not."""
    probe = folder / ".write-probe"
    try:
        with open(probe, "wb") as out:
            out.write(b"ok")
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror}"
    return None


def _quota_bytes(quota_mb: float | None) -> int | None:
    return None if quota_mb is None else int(quota_mb * 1_000_000)


def open_journal(config: AgentConfig) -> Journal:
    """The journal the config describes (quota, policy, which devices count as slow, end-to-end ack)."""
    settings = config.journal
    return Journal(
        settings.path,
        config.agent_id,
        fsync=settings.fsync,
        quota_bytes=_quota_bytes(settings.quota_mb),
        policy=settings.on_full,
        slow_devices=frozenset(d.id for d in config.devices if d.poll_s >= settings.slow_poll_s),
        hold=config.publish.end_to_end_ack,
    )


async def run_agent(config_path: str | Path, *, broker_url: str | None = None) -> int:
    """Load the config file and run the agent until SIGTERM or Ctrl-C (``citygw edge run``);
    ``broker_url`` replaces the file's (edge/settings.py).

    Returns the exit code: 0, or the launcher's EXIT_RESTART / EXIT_UNHEALTHY (edge/launcher.py).
    """
    agent = Agent(load_agent_config(config_path, broker_url=broker_url))
    task = asyncio.current_task()
    assert task is not None
    # systemd stops with SIGTERM: shut down like Ctrl-C (say offline, close the journal).
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await agent.run()
    except asyncio.CancelledError:
        log.info("agent %s stopped", agent.config.agent_id)
    return agent.exit_code
