"""Report by exception: readings published per hour by an air-quality station, deadband vs every poll.

Three Vaisala AQT530 simulators on one pty RTU line, polled by the agent's own line owner
(``edge.poller``) every 10 s of simulated time, the simulators' clocks running ``TIME_SCALE`` times
faster than real time from 00:00 UTC (pollution rising steepest towards the morning rush hour:
the hard case for a deadband):

- baseline: no ``heartbeat_s``, every poll published, as before;
- deadband: ``heartbeat_s`` 900 with the profile's deadbands, values following the day;
- steady: the same, values not moving at all (one reading per heartbeat).

The simulators add no sensor noise: a real station's noise below its deadbands costs nothing more,
noise beyond them publishes more than this. Run: ``.venv/bin/python bench/report_by_exception.py``;
the last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from citygw.contract import wire
from citygw.contract.agent_config import Device
from edge.journal import Journal
from edge.poller import HealthBoard, ModbusPoller
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty

TIME_SCALE = 360.0  # one simulated hour in 10 s
POLL_S = 10.0  # simulated seconds
HEARTBEAT_S = 900.0
HOURS = 6.0
START_S = 0.0  # 1970-01-01 00:00 UTC: only the time of day matters to the simulators


class Counting(Journal):
    """A real journal that counts what each device had journaled."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "bench")
        self.per_device: dict[str, int] = {}

    def append(self, readings: Sequence[wire.Reading]) -> int:
        for reading in readings:
            self.per_device[reading.device] = self.per_device.get(reading.device, 0) + 1
        return super().append(readings)


async def run(folder: Path) -> tuple[dict[str, int], dict[str, int], float]:
    """Published readings and good reads per device, and the simulated hours it ran."""
    moving = {"baseline": True, "deadband": True, "steady": False}
    sims = {
        name: ModbusDeviceSimulator(
            "vaisala_aqt530", unit=i + 1, animate=animate, time_scale=TIME_SCALE, start_s=START_S
        )
        for i, (name, animate) in enumerate(moving.items())
    }
    devices = [
        (
            Device(
                id=name,
                line="rs485",
                profile="vaisala_aqt530",
                unit=sim.unit,
                poll_s=POLL_S / TIME_SCALE,
                heartbeat_s=None if name == "baseline" else HEARTBEAT_S / TIME_SCALE,
            ),
            sim.profile,
        )
        for name, sim in sims.items()
    ]
    journal = Counting(folder / "journal.sqlite")
    board = HealthBoard()
    poller = ModbusPoller(devices, journal=journal, board=board, site="bench")
    async with (
        serve_serial_pty(list(sims.values()), baudrate=None) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=0.2) as line,
    ):
        started = time.monotonic()
        task = asyncio.create_task(poller.run(line))
        await asyncio.sleep(HOURS * 3600 / TIME_SCALE)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        hours = (time.monotonic() - started) * TIME_SCALE / 3600
    journal.close()
    reads = {name: record.reads for name, record in board.devices.items()}
    return journal.per_device, reads, hours


async def main() -> None:
    logging.disable(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        published, reads, hours = await run(Path(tmp))
    per_hour = {name: published.get(name, 0) / hours for name in reads}
    print(
        f"AQT530 polled every {POLL_S:g} s for {hours:.2f} simulated hours from 00:00 UTC "
        f"(x{TIME_SCALE:g}); heartbeat {HEARTBEAT_S:g} s"
    )
    for name in reads:
        print(
            f"{name:>9}: {reads[name]:5d} good reads, {published.get(name, 0):5d} published "
            f"= {per_hour[name]:6.1f} readings/h"
        )
    print(
        json.dumps(
            {
                "bench": "report_by_exception",
                "simulated_hours": round(hours, 2),
                "poll_s": POLL_S,
                "heartbeat_s": HEARTBEAT_S,
                "every_poll_per_h": round(per_hour["baseline"], 1),
                "deadband_per_h": round(per_hour["deadband"], 1),
                "steady_per_h": round(per_hour["steady"], 1),
                "deadband_vs_every_poll": round(per_hour["deadband"] / per_hour["baseline"], 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
