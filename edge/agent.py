"""The edge agent: lines, pollers, journal and publisher in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from citygw import wire
from edge.config import AgentConfig, NmeaLine, RtuLine, TcpLine, load_agent_config
from edge.journal import Journal
from edge.poller import GpsPoller, HealthBoard, ModbusPoller, now_ms
from edge.publisher import Publisher
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import Profile, load_profile

log = logging.getLogger(__name__)

LINE_RETRY_S = 10.0


class Agent:
    """One Raspberry Pi's agent; ``run()`` until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        profiles: Callable[[str], Profile] = load_profile,
        version: str | None = None,
    ) -> None:
        self.config = config
        self.board = HealthBoard()
        self.profiles = {d.profile: profiles(d.profile) for d in config.devices if d.profile is not None}
        self.version = version
        self.journal: Journal | None = None
        self.publisher: Publisher | None = None
        # One per Modbus line, the only way onto it: commands go through submit_priority().
        self.pollers: dict[str, ModbusPoller] = {}
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Poll, journal and publish until cancelled; then close the lines and the journal."""
        config = self.config
        journal = open_journal(config)
        self.journal = journal
        publisher = Publisher(config, journal, version=self.version)
        self.publisher = publisher
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(publisher.run(), name="publisher")
                tasks.create_task(self._publish_health(publisher, journal), name="health")
                for line in config.lines:
                    devices = config.devices_on(line.id)
                    if not devices:
                        continue
                    if isinstance(line, NmeaLine):
                        gps = GpsPoller(line, devices[0], journal=journal, board=self.board, site=config.site)
                        tasks.create_task(gps.run(), name=f"line:{line.id}")
                    else:
                        profiled = [(d, self.profiles[d.profile or ""]) for d in devices]
                        poller = ModbusPoller(profiled, journal=journal, board=self.board, site=config.site)
                        self.pollers[line.id] = poller
                        tasks.create_task(self._own_modbus_line(line, poller), name=f"line:{line.id}")
                log.info(
                    "agent %s polling %d devices on %d lines, publishing to %s",
                    config.agent_id,
                    len(config.devices),
                    len(config.lines),
                    config.broker.redacted_url,
                )
                self.started.set()
        finally:
            journal.close()

    async def _own_modbus_line(self, line: TcpLine | RtuLine, poller: ModbusPoller) -> None:
        """Open the line and poll it; a line that cannot be opened is reported and retried, never fatal."""
        devices = self.config.devices_on(line.id)
        while True:
            modbus = _modbus_line(line)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(modbus)
                except Exception as exc:  # serial drivers raise OSError, termios.error, ValueError...
                    error = f"line {line.id} cannot be opened: {exc!r}"
                    log.warning("%s; retrying in %.0f s", error, LINE_RETRY_S)
                    for device in devices:
                        self.board.failed(device.id, wire.DeviceState.TIMEOUT, error)
                else:
                    await poller.run(modbus)
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
    return ModbusLine.rtu(
        port=line.port,
        baudrate=line.baudrate,
        parity=line.parity,
        stopbits=line.stopbits,
        bytesize=line.bytesize,
        timeout=line.timeout,
    )


def open_journal(config: AgentConfig) -> Journal:
    """The journal the config describes (quota, policy, which devices count as slow)."""
    settings = config.journal
    return Journal(
        settings.path,
        config.agent_id,
        fsync=settings.fsync,
        quota_bytes=None if settings.quota_mb is None else int(settings.quota_mb * 1_000_000),
        policy=settings.on_full,
        slow_devices=frozenset(d.id for d in config.devices if d.poll_s >= settings.slow_poll_s),
    )


async def run_agent(config_path: str | Path) -> None:
    """Load the config file and run the agent until SIGTERM or Ctrl-C (``citygw edge run``)."""
    agent = Agent(load_agent_config(config_path))
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
