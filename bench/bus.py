"""Bus benchmark: 20 devices of mixed profiles on ONE simulated 9600-baud RS-485 line.

The simulators sit behind a pseudo-terminal that paces every byte at 9600 baud 8N1
(``serve_serial_pty(..., baudrate=9600)``); the agent's own line owner (``edge.poller``)
polls them with a poll period well below what the line can carry, so the line is always busy.

- transactions per cycle (every device once; slow points every SLOW_EVERY-th poll), against
  one request per field (the naive reader) and against the fewest any planner could send;
- bus utilisation = wire time the answered frames need in theory (frames + t3.5 silences at
  9600 baud) ÷ the measured time, over a window after warm-up (target ≥ 0.85);
- the same line with 2 dead devices: how much the 18 live devices' read rate drops (< 10 %).

Run: ``.venv/bin/python bench/bus.py``; the last line is one JSON object of headline figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path

from citygw.contract.agent_config import Device
from citygw.contract.bus_time import SLOW_EVERY
from edge.journal import Journal
from edge.poller import HealthBoard, ModbusPoller
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.planner import ReadRequest, fewest_reads, plan_reads
from firmware_bridge.profile import Poll, Profile
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty
from firmware_bridge.simulators.modbus_device import TABLE_OF_FUNCTION
from firmware_bridge.timing import SerialLine

BAUD = 9600
PROFILES = (
    "eastron_sdm630",
    "eastron_sdm120",
    "tuf_2000m",
    "vaisala_aqt530",
    "jxbs_3001",
    "ecodim_dali_gw2",
    "ticket_validator",
    "waste_bin_fill",
    "water_quality_probe",
    "parking_bay",
)
DEVICES = 20
DEAD = (7, 14)  # unit ids that stop answering in the second run
POLL_S = 0.2  # far below a cycle's ~1 s of wire time: every device is always due
TURNAROUND_S = 0.1  # the line's reply timeout on top of the frames' wire time
WARM_UP_S = 4.0
WINDOW_S = 8.0
TARGET_UTILISATION = 0.85
TARGET_RATE_DROP = 0.10


def fleet() -> list[ModbusDeviceSimulator]:
    return [ModbusDeviceSimulator(PROFILES[i % len(PROFILES)], unit=i + 1) for i in range(DEVICES)]


def per_cycle(count: dict[tuple[Poll, ...], int]) -> float:
    """Average per poll of a count that differs between fast-only polls and polls with slow points."""
    return (count[("fast",)] * (SLOW_EVERY - 1) + count[("fast", "slow")]) / SLOW_EVERY


def planned(profile: Profile) -> tuple[float, float, float]:
    """Per poll of one device: planned reads, one read per field, the fewest reads possible."""
    polls: list[tuple[Poll, ...]] = [("fast",), ("fast", "slow")]
    return (
        per_cycle({p: len(plan_reads(profile, p)) for p in polls}),
        per_cycle({p: len(profile.select(p)) for p in polls}),
        per_cycle({p: len(fewest_reads(profile, p)) for p in polls}),
    )


def wire_time(sims: list[ModbusDeviceSimulator], wire: SerialLine, skip: dict[int, int]) -> float:
    """Theoretical wire time of every read the simulators answered after ``skip`` requests each."""
    total = 0.0
    for sim in sims:
        for function, address, count in sim.requests[skip[sim.unit] :]:
            total += wire.read_time(ReadRequest(TABLE_OF_FUNCTION[function], address, count, ()))
    return total


async def run(dead: tuple[int, ...], folder: Path) -> dict[str, float]:
    """Poll the fleet (``dead`` units silent) and measure over the window after warm-up."""
    sims = fleet()
    for sim in sims:
        sim.offline = sim.unit in dead
    board = HealthBoard()
    journal = Journal(folder / f"journal-{len(dead)}.sqlite", "bench")
    devices = [
        (
            Device(id=f"dev-{s.unit}", line="rs485", profile=s.profile.model, unit=s.unit, poll_s=POLL_S),
            s.profile,
        )
        for s in sims
    ]
    poller = ModbusPoller(devices, journal=journal, board=board, site="bench")
    wire = SerialLine(BAUD)
    async with (
        serve_serial_pty(sims, baudrate=BAUD) as port,
        ModbusLine.rtu(port=port, baudrate=BAUD, timeout=TURNAROUND_S) as line,
    ):
        task = asyncio.create_task(poller.run(line))
        await asyncio.sleep(WARM_UP_S)
        skip = {s.unit: len(s.requests) for s in sims}
        reads_before = {d: r.reads for d, r in board.devices.items()}
        started = time.monotonic()
        await asyncio.sleep(WINDOW_S)
        elapsed = time.monotonic() - started
        reads = {d: r.reads - reads_before[d] for d, r in board.devices.items()}
        live = [s for s in sims if s.unit not in dead]
        busy = wire_time(live, wire, skip)
        transactions = sum(len(s.requests) - skip[s.unit] for s in sims)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    journal.close()
    live_reads = sum(n for d, n in reads.items() if int(d.split("-")[1]) not in dead)
    survivors = sum(n for d, n in reads.items() if int(d.split("-")[1]) not in DEAD)
    return {
        "survivor_reads_per_s": survivors / elapsed,
        "elapsed_s": elapsed,
        "wire_s": busy,
        "utilisation": busy / elapsed,
        "live_reads": live_reads,
        "live_reads_per_s": live_reads / elapsed,
        "transactions": transactions,
        "dead_timeouts": sum(board.devices[f"dev-{u}"].failures for u in dead),  # since start
    }


async def main() -> None:
    logging.disable(logging.ERROR)  # pymodbus logs every timeout of the dead devices
    sims = fleet()
    per_device = [planned(s.profile) for s in sims]
    ours, naive, fewest = (sum(p[i] for p in per_device) for i in range(3))
    print(f"{DEVICES} devices of {len(PROFILES)} profiles on one {BAUD}-baud RTU line (baud-paced pty)")
    print(f"transactions per cycle: {ours:.1f} planned, {naive:.1f} one-per-field, {fewest:.1f} lower bound")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        alive = await run((), folder)
        with_dead = await run(DEAD, folder)
    # The same 18 devices in both runs: how much slower are they read with their 2 dead neighbours?
    drop = 1 - with_dead["survivor_reads_per_s"] / alive["survivor_reads_per_s"]
    for name, figures in (("all live", alive), (f"{len(DEAD)} dead", with_dead)):
        print(
            f"{name:>9}: {figures['wire_s']:.2f} s of wire time in {figures['elapsed_s']:.2f} s "
            f"-> utilisation {figures['utilisation']:.3f}; {figures['live_reads_per_s']:.1f} live reads/s; "
            f"{figures['transactions']:.0f} transactions; dead devices' timeouts since start "
            f"{figures['dead_timeouts']:.0f}"
        )
    print(
        f"live devices' read rate with {len(DEAD)} dead: {-drop:+.1%} (target: drop < {TARGET_RATE_DROP:.0%})"
    )
    print(
        json.dumps(
            {
                "bus_utilisation": round(alive["utilisation"], 3),
                "transactions_vs_per_field": round(ours / naive, 3),
                "transactions_vs_lower_bound": round(ours / fewest, 3),
                "live_rate_drop_with_dead": round(drop, 3),
                "target_bus_utilisation": TARGET_UTILISATION,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
