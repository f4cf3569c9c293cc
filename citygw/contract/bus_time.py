"""Bus time of a poll plan: what each RS-485 line's devices need of the wire, against what the baud allows.

A device's load is the wire time of its planned reads (frames plus RTU silences at the
line's baud rate, or the longer guard interval its profile's ``timing`` declares;
``firmware_bridge.timing``) per second of its ``poll_s``, with its slow points counted once
every ``SLOW_EVERY`` polls. That is a lower bound: the devices' turnaround comes on top, so
a line planned beyond 1 s of wire time per second can never keep its schedule and the config
is refused. Devices are planned as their overlay has them (``max_registers``, fields, guard);
when the line would fit without the overlays, the refusal names the overlay that breaks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from citygw.contract.agent_config import AgentConfig, Device, Problem, RtuLine
from firmware_bridge.overlay import apply_overlay
from firmware_bridge.planner import plan_reads
from firmware_bridge.profile import Profile
from firmware_bridge.timing import SerialLine

# Slow registers (totals, configuration) are read on a device's first poll and every this many polls.
SLOW_EVERY = 10
SPARE = 1.1  # a fix leaves this much headroom: the plan at most 1/1.1 of the wire


@dataclass(frozen=True)
class DeviceLoad:
    """Seconds of wire time one device needs per second."""

    device: str
    poll_s: float
    busy: float
    # The device's load with its profile as shipped (no overlay).
    busy_as_shipped: float = 0.0


def serial_line(line: RtuLine) -> SerialLine:
    return SerialLine(line.baudrate, parity=line.parity, stopbits=line.stopbits, bytesize=line.bytesize)


def poll_wire_time(profile: Profile, wire: SerialLine) -> float:
    """Average wire time of one poll of a device: fast points every time, slow ones every SLOW_EVERY-th."""
    fast = sum(wire.read_time(r, profile.timing) for r in plan_reads(profile, "fast"))
    both = sum(wire.read_time(r, profile.timing) for r in plan_reads(profile, ("fast", "slow")))
    return (fast * (SLOW_EVERY - 1) + both) / SLOW_EVERY


def line_load(
    line: RtuLine, devices: list[tuple[Device, Profile]], shipped: dict[str, Profile] | None = None
) -> list[DeviceLoad]:
    """Each device's share of the line, heaviest first (``shipped``: profiles before overlays, by device)."""
    wire = serial_line(line)
    loads = []
    for device, profile in devices:
        busy = poll_wire_time(profile, wire) / device.poll_s
        before = (shipped or {}).get(device.id)
        as_shipped = busy if before is None else poll_wire_time(before, wire) / device.poll_s
        loads.append(DeviceLoad(device.id, device.poll_s, busy, as_shipped))
    return sorted(loads, key=lambda load: -load.busy)


def check_bus_time(config: AgentConfig, profiles: Callable[[str], object]) -> list[Problem]:
    """A problem for every RS-485 line whose devices need more than 1 s of wire time per second."""
    problems: list[Problem] = []
    index = {device.id: i for i, device in enumerate(config.devices)}
    for i, line in enumerate(config.lines):
        if not isinstance(line, RtuLine):
            continue  # a TCP gateway's serial side and a GPS receiver are not ours to schedule
        devices = []
        shipped: dict[str, Profile] = {}
        for device in config.devices_on(line.id):
            base = profiles(device.profile) if device.profile else None
            if isinstance(base, Profile):
                devices.append((device, apply_overlay(base, device.overlay)))
                shipped[device.id] = base
        loads = line_load(line, devices, shipped)
        need = sum(load.busy for load in loads)
        if need <= 1.0:
            continue
        as_shipped = sum(load.busy_as_shipped for load in loads)
        if as_shipped <= 1.0:
            worst = max(loads, key=lambda load: load.busy - load.busy_as_shipped)
            problems.append(
                Problem(
                    f"devices[{index[worst.device]}].overlay",
                    f"with the overlay of device {worst.device!r} line {line.id} needs {need:.2f} s of "
                    f"bus time per 1.0 s at {line.baudrate} baud ({as_shipped:.2f} s without overlays): "
                    f"its polls take {worst.busy / worst.busy_as_shipped:.1f} times the wire time of its "
                    "profile's",
                    f"raise the overlay's max_registers or lower its timing.guard_ms on {worst.device}, "
                    f"or {_fix(loads, need)}",
                )
            )
            continue
        problems.append(
            Problem(
                f"lines[{i}]",
                f"line {line.id} needs {need:.2f} s of bus time per 1.0 s at {line.baudrate} baud "
                f"(wire time and guard intervals, device turnaround comes on top)",
                _fix(loads, need),
            )
        )
    return problems


def _fix(loads: list[DeviceLoad], need: float) -> str:
    """How to bring the line under 1/SPARE: slow down its one dominant device, or all of them alike."""
    target = need - 1.0 / SPARE  # what must go
    heaviest = loads[0]
    if heaviest.busy > 1.2 * target:  # one device is the problem: stretching it alone frees ``target``
        named, factor = [heaviest], heaviest.busy / (heaviest.busy - target)
    else:
        named, factor = loads, need * SPARE
    ids = sorted((n.device for n in named), key=_natural)
    who = ", ".join(ids) if len(ids) <= 3 else f"{ids[0]}..{ids[-1]} ({len(ids)} devices)"
    return (
        f"lengthen poll_s of {who} {factor:.1f} times (e.g. {heaviest.device}: "
        f"{heaviest.poll_s:g} s → {heaviest.poll_s * factor:.2g} s) or split the line"
    )


def _natural(device_id: str) -> tuple[str, int]:
    """meter-3 before meter-20."""
    stem = device_id.rstrip("0123456789")
    digits = device_id[len(stem) :]
    return stem, int(digits) if digits else -1
