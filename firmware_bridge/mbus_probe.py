"""A field engineer's look at an M-Bus line: the meters a scan finds, and a meter's records as the rows
an ``mbus`` profile is written from (VIF, function, storage, tariff, subunit, value, unit)."""

from __future__ import annotations

from collections.abc import Sequence

from firmware_bridge.mbus import Found
from firmware_bridge.mbus_frames import Telegram

MEDIA = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat (outlet)",
    0x05: "steam",
    0x06: "hot water",
    0x07: "water",
    0x08: "heat cost allocator",
    0x0A: "cooling (outlet)",
    0x0B: "cooling (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat / cooling",
    0x15: "hot water",
    0x16: "cold water",
    0x1B: "room sensor",
}


def format_found(found: Sequence[Found]) -> str:
    """One line per meter: how to address it, its id, manufacturer, version and medium."""
    if not found:
        return "no meter answered"
    rows = [("address", "secondary", "manufacturer", "version", "medium")]
    unreadable = []
    for meter in found:
        t = meter.telegram
        if t is None:
            unreadable.append(f"{meter.address}: {meter.error}")
            continue
        medium = MEDIA.get(t.medium, f"0x{t.medium:02X}")
        rows.append((str(meter.address), t.secondary, t.manufacturer, str(t.version), medium))
    return "\n".join([_table(rows), *unreadable, f"{len(found)} meter(s)"])


def format_records(telegrams: Sequence[Telegram]) -> str:
    """Every record of a readout, numbered across its telegrams, ready to be named in a profile."""
    first = telegrams[0]
    head = (
        f"meter {first.secondary}: {first.manufacturer}, version {first.version}, "
        f"medium {MEDIA.get(first.medium, f'0x{first.medium:02X}')}, {len(telegrams)} telegram(s)"
    )
    rows = [("#", "dif", "vif", "function", "storage", "tariff", "subunit", "value", "unit")]
    records = [record for telegram in telegrams for record in telegram.records]
    for i, r in enumerate(records):
        value = "" if r.value is None else str(r.value)
        rows.append(
            (str(i), r.dif, r.vif, r.function, str(r.storage), str(r.tariff), str(r.subunit), value, r.unit)
        )
    return head + "\n" + _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
