"""Time on the wire of a serial Modbus RTU line: what a transaction costs at a given baud rate.

A character is a start bit, the data bits, a parity bit (unless parity N) and the stop bits:
10 bits at 8N1, 11 at 8E1. Frames are separated by at least 3.5 characters of silence; above
19200 baud the specification fixes that silence at 1.75 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from firmware_bridge.planner import ReadRequest
from firmware_bridge.profile import BIT_TABLES, DeviceTiming

FAST_LINE_BAUD = 19200
FAST_LINE_SILENCE = 0.00175  # seconds: the fixed t3.5 above 19200 baud
READ_REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)
READ_RESPONSE_OVERHEAD = 5  # unit, function, byte count, CRC (2)


@dataclass(frozen=True)
class SerialLine:
    """A serial line's character format and speed."""

    baudrate: int
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"baud rate {self.baudrate} must be positive")

    @property
    def bits_per_character(self) -> int:
        """Start bit, data bits, parity bit (if any) and stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def character_time(self) -> float:
        """Seconds one byte takes on the wire."""
        return self.bits_per_character / self.baudrate

    @property
    def silence(self) -> float:
        """The inter-frame silence t3.5 that ends an RTU frame."""
        if self.baudrate > FAST_LINE_BAUD:
            return FAST_LINE_SILENCE
        return 3.5 * self.character_time

    def frame_time(self, size: int) -> float:
        """Seconds a frame of ``size`` bytes takes on the wire (without the silence after it)."""
        return size * self.character_time

    def gap_before(self, timing: DeviceTiming | None = None) -> float:
        """Silence the line needs before a frame to a device: t3.5, or the device's longer guard."""
        return max(self.silence, timing.guard if timing is not None else 0.0)

    def read_time(self, request: ReadRequest, timing: DeviceTiming | None = None) -> float:
        """Wire time of one read: request, t3.5, response, then t3.5 or the device's guard (no turnaround)."""
        sent, answered = read_frame_sizes(request)
        return self.frame_time(sent + answered) + self.silence + self.gap_before(timing)


def read_frame_sizes(request: ReadRequest) -> tuple[int, int]:
    """Bytes of the RTU request and of its normal response for one planned read."""
    data = math.ceil(request.count / 8) if request.table in BIT_TABLES else 2 * request.count
    return READ_REQUEST_BYTES, READ_RESPONSE_OVERHEAD + data
