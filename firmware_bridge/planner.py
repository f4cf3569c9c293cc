"""Read planning for one device: as few requests as the protocol and the device allow.

On RS-485 at 9600 baud a transaction costs ~20 characters of framing and silences plus the
device's turnaround (10 to 50 ms), while one extra register costs 2 bytes (~2 ms). Reading
through a gap of up to ``DEFAULT_MAX_GAP`` registers is therefore cheaper than a new request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firmware_bridge.profile import BIT_TABLES, AddressRange, Poll, Profile, RegisterSpec, Table

ILLEGAL_DATA_ADDRESS = 0x02  # the exception a device answers for a register it does not have
UNLIMITED_GAP = 0xFFFF
MAX_REGISTERS = 125  # Modbus limit of FC03/FC04
MAX_BITS = 2000  # Modbus limit of FC01/FC02
DEFAULT_MAX_GAP = 16
_TABLE_ORDER: dict[str, int] = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}


@dataclass(frozen=True)
class ReadRequest:
    """One read on the wire and the fields it delivers."""

    table: Table
    address: int
    count: int
    specs: tuple[RegisterSpec, ...]

    def slice_for(self, spec: RegisterSpec, values: Sequence[int]) -> Sequence[int]:
        """The part of this request's answer that holds ``spec``."""
        start = spec.address - self.address
        return values[start : start + spec.register_count]


def plan_requests(
    specs: Iterable[RegisterSpec],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = DEFAULT_MAX_GAP,
    forbidden: Iterable[AddressRange] = (),
) -> list[ReadRequest]:
    """Merge registers of the same table that are close together into as few reads as possible."""
    blocked = list(forbidden)
    ordered = sorted(specs, key=lambda s: (_TABLE_ORDER[s.table], s.address))
    requests: list[ReadRequest] = []
    group: list[RegisterSpec] = []
    start = end = 0

    def flush() -> None:
        if group:
            requests.append(ReadRequest(group[0].table, start, end - start + 1, tuple(group)))

    for spec in ordered:
        limit = max_bits if spec.table in BIT_TABLES else max_registers
        if spec.register_count > limit:
            raise ValueError(
                f"{spec.field} needs {spec.register_count} registers, more than one read ({limit})"
            )
        if (
            group
            and group[0].table == spec.table
            and spec.address - end - 1 <= max_gap
            and max(end, spec.end) - start + 1 <= limit
            and not _crosses(blocked, spec.table, end + 1, spec.end)
        ):
            group.append(spec)
            end = max(end, spec.end)
            continue
        flush()
        group = [spec]
        start, end = spec.address, spec.end
    flush()
    return requests


def _crosses(blocked: list[AddressRange], table: str, first: int, last: int) -> bool:
    return any(r.table == table and first <= r.end and r.start <= last for r in blocked)


def plan_reads(
    profile: Profile, poll: Poll | Iterable[Poll] | None = None, *, learned: Iterable[AddressRange] = ()
) -> list[ReadRequest]:
    """The reads of one device's poll: its profile's limits and forbidden ranges plus the holes learned."""
    return plan_requests(
        profile.select(poll),
        max_registers=profile.max_registers,
        max_gap=DEFAULT_MAX_GAP,
        forbidden=[*profile.forbidden, *learned],
    )


def fewest_reads(profile: Profile, poll: Poll | Iterable[Poll] | None = None) -> list[ReadRequest]:
    """The fewest reads any planner could send: gaps of any width filled (a lower bound, not a good plan).

    Greedy merging is optimal for covering sorted ranges with reads of bounded size.
    """
    return plan_requests(
        profile.select(poll),
        max_registers=profile.max_registers,
        max_gap=UNLIMITED_GAP,
        forbidden=profile.forbidden,
    )


def split_request(request: ReadRequest) -> tuple[ReadRequest, ReadRequest] | None:
    """Two reads that deliver the request's fields without its middle; None when it holds one register run.

    Used to find a hole the profile does not declare: the halves are read and the gap between
    them is what the device refused.
    """
    starts = sorted({s.address for s in request.specs})
    if len(starts) < 2:
        return None
    pivot = starts[len(starts) // 2]
    left = [s for s in request.specs if s.address < pivot]
    right = [s for s in request.specs if s.address >= pivot]
    if max(s.end for s in left) >= pivot:  # masked fields overlapping the pivot: no clean cut
        return None
    return covering(left), covering(right)


def covering(specs: Sequence[RegisterSpec]) -> ReadRequest:
    """One read over exactly the registers of ``specs`` (all of one table)."""
    start = min(s.address for s in specs)
    end = max(s.end for s in specs)
    return ReadRequest(specs[0].table, start, end - start + 1, tuple(specs))


def gap_between(left: ReadRequest, right: ReadRequest, reason: str = "") -> AddressRange | None:
    """The registers between two reads of one table, if any."""
    first, last = left.address + left.count, right.address - 1
    if first > last:
        return None
    return AddressRange(table=left.table, start=first, end=last, reason=reason)
