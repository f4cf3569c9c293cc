"""Simulated M-Bus meters on a pseudo-terminal, answering real EN 13757-2 frames.

Each meter answers from recorded telegrams (``tests/firmware_bridge/captures/mbus``), given its
primary address: SND_NKE with E5 (and a fresh telegram sequence), REQ_UD2 with its next telegram
when the frame count bit toggled or the same one again when it did not, a secondary-address
selection with E5 when its identity matches the mask. Several meters matching one selection
answer at once, as on a real bus: the bytes collide. Faults: a dead meter stays silent; a meter
can send a number of answers with a wrong checksum or cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.mbus_frames import (
    ACK,
    CI_SELECT,
    FCB,
    LONG_START,
    NETWORK_LAYER,
    REQ_UD2,
    SHORT_START,
    SND_NKE,
    SND_UD,
    STOP,
    decode,
    frame_length,
)

COLLISION = bytes([0xE5 | 0x08, 0x7F])  # two meters' E5 overlapping: no valid character survives


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def long_frame(control: int, address: int, payload: bytes) -> bytes:
    """A long frame around ``payload`` (CI field onwards)."""
    body = bytes([control, address]) + payload
    return bytes([LONG_START, len(body), len(body), LONG_START]) + body + bytes([checksum(body), STOP])


def readdressed(frame: bytes, address: int) -> bytes:
    """A recorded RSP_UD frame as the meter at ``address`` sends it."""
    return long_frame(frame[4], address, frame[6:-2])


def load_capture(path: str | Path) -> bytes:
    """A recorded frame from a ``.hex`` file (hex bytes, spaces and line breaks allowed)."""
    return bytes.fromhex(Path(path).read_text(encoding="utf-8"))


def split_telegram(frame: bytes, records_first: int) -> list[bytes]:
    """One recorded RSP_UD telegram as two: its first ``records_first`` records ending in "more
    records follow" (DIF 1F), then the rest, each under the same 12-byte header.

    For multi-telegram readouts of a recorded meter; the records' bytes are the recording's.
    """
    spans = record_spans(frame)
    if not 0 < records_first < len(spans):
        raise ValueError(f"cannot split after {records_first} of {len(spans)} records")
    header = frame[6:19]
    cut = spans[records_first][0]
    payload = frame[19:-2]
    first = long_frame(frame[4], frame[5], header + payload[:cut] + bytes([0x1F]))
    second = long_frame(frame[4], frame[5], header + payload[cut:])
    return [first, second]


def record_spans(frame: bytes) -> list[tuple[int, int]]:
    """(start, end) of each data record in the frame's payload after the 12-byte header.

    Walks DIF/DIFE, VIF/VIFE and the data length of the DIF as EN 13757-3 lays them out; a
    plain-text VIF (7C/FC) carries its length and text before the VIFEs.
    """
    payload = frame[19:-2]
    sizes = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 6, 7: 8, 9: 1, 10: 2, 11: 3, 12: 4, 14: 6}
    spans = []
    i = 0
    while i < len(payload):
        start = i
        dif = payload[i]
        if dif in (0x0F, 0x1F):  # manufacturer data to the end
            spans.append((start, len(payload)))
            break
        if dif == 0x2F:  # filler
            i += 1
            continue
        i += 1
        while payload[i - 1] & 0x80:  # DIFEs
            i += 1
        vif = payload[i]
        i += 1
        if vif & 0x7F == 0x7C:
            i += 1 + payload[i]
        if vif & 0x80:
            i += 1
            while payload[i - 1] & 0x80:
                i += 1
        coding = dif & 0x0F
        if coding == 13:
            i += 1 + payload[i]
        else:
            i += sizes[coding]
        spans.append((start, i))
    return spans


@dataclass
class MbusMeterSimulator:
    """One meter: its telegrams as recorded (one readout), its primary address and its faults."""

    telegrams: list[bytes]
    primary: int
    dead: bool = False
    bad_checksums: int = 0  # this many next answers go out with a wrong checksum
    truncated: int = 0  # this many next answers are cut short
    selected: bool = False
    answers: list[bytes] = field(default_factory=list)  # what it sent, in order
    readouts: int = 0  # readouts served whole: the last telegram of a sequence sent intact
    _next: int = 0
    _last_fcb: bool | None = None
    _last: bytes | None = None

    def __post_init__(self) -> None:
        self.telegrams = [readdressed(frame, self.primary) for frame in self.telegrams]
        decode(self.telegrams[0])  # a recording that is no valid telegram fails here, not on the wire

    @classmethod
    def from_capture(
        cls, path: str | Path, primary: int, *, split_after: int | None = None
    ) -> MbusMeterSimulator:
        frame = load_capture(path)
        return cls(split_telegram(frame, split_after) if split_after else [frame], primary)

    @property
    def secondary(self) -> bytes:
        """The 8 identity bytes a selection is matched against: id, manufacturer, version, medium."""
        return self.telegrams[0][7:15]

    def reset(self) -> None:
        self._next, self._last_fcb, self._last = 0, None, None

    def telegram(self, fcb: bool | None) -> bytes:
        """The answer to REQ_UD2: the next telegram, or the last one again when the FCB did not toggle."""
        if fcb is not None and fcb == self._last_fcb and self._last is not None:
            return self._last
        frame = self.telegrams[self._next % len(self.telegrams)]
        self._next += 1
        self._last_fcb, self._last = fcb, frame
        return frame

    def matches(self, mask: bytes) -> bool:
        """Whether a selection mask (id BCD nibbles F, other bytes FF as wildcards) names this meter."""
        own = self.secondary
        for i, (want, have) in enumerate(zip(mask, own, strict=True)):
            if i < 4:
                for shift in (0, 4):
                    nibble = (want >> shift) & 0xF
                    if nibble != 0xF and nibble != (have >> shift) & 0xF:
                        return False
            elif want != 0xFF and want != have:
                return False
        return True

    def respond(self, fcb: bool) -> bytes:
        """The bytes answering REQ_UD2 (with the meter's faults), counting whole readouts served."""
        frame = self.telegram(fcb)
        sent = self.faulty(frame)
        if sent == frame and frame == self.telegrams[-1]:
            self.readouts += 1
        return sent

    def faulty(self, frame: bytes) -> bytes:
        """``frame`` as the meter's faults send it."""
        if self.bad_checksums:
            self.bad_checksums -= 1
            return frame[:-2] + bytes([frame[-2] ^ 0x5A, frame[-1]])
        if self.truncated:
            self.truncated -= 1
            return frame[: len(frame) // 2]
        return frame


class MbusResponder:
    """The meters' end of the line: reads master frames from a pty and answers as the meters would."""

    def __init__(self, meters: Iterable[MbusMeterSimulator], fd: int) -> None:
        self.meters = list(meters)  # several may share a primary address (0 from the factory): they collide
        self._fd = fd
        self._buffer = b""

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            self._buffer += os.read(self._fd, 4096)
        except OSError:  # EIO: no one has the other end open right now
            return
        while self._buffer:
            try:
                need = frame_length(self._buffer[:4])
            except ValueError:
                if self._buffer[0] == LONG_START and len(self._buffer) < 4:
                    return
                self._buffer = self._buffer[1:]  # noise: resynchronise on the next start byte
                continue
            if len(self._buffer) < need:
                return
            frame, self._buffer = self._buffer[:need], self._buffer[need:]
            answer = self.answer(frame)
            if answer:
                os.write(self._fd, answer)

    def answer(self, frame: bytes) -> bytes | None:
        """The bytes the bus carries back after the master's ``frame`` (None: silence)."""
        if frame[0] == SHORT_START:
            control, address = frame[1], frame[2]
            return self._short(control, address)
        selection = frame[0] == LONG_START and frame[5] == NETWORK_LAYER and frame[6] == CI_SELECT
        if selection and frame[4] & 0xCF == SND_UD & 0xCF:
            return self._select(frame[7:15])
        return None

    def _addressed(self, address: int) -> list[MbusMeterSimulator]:
        if address == NETWORK_LAYER:
            return [m for m in self.meters if m.selected]
        return [m for m in self.meters if m.primary == address]

    def _short(self, control: int, address: int) -> bytes | None:
        meters = [m for m in self._addressed(address) if not m.dead]
        if len(meters) != 1:
            return COLLISION if meters else None
        meter = meters[0]
        if control == SND_NKE:
            meter.reset()
            if address == NETWORK_LAYER:
                meter.selected = False  # SND_NKE to the network layer deselects
            return self._sent(meter, bytes([ACK]))
        if control & ~FCB == REQ_UD2:  # REQ_UD2 always has FCV set: the FCB counts
            fcb = bool(control & FCB)
            return self._sent(meter, meter.respond(fcb))
        return None

    def _select(self, mask: bytes) -> bytes | None:
        matching = []
        for meter in self.meters:
            meter.selected = meter.matches(mask)
            if meter.selected:
                meter.reset()
                if not meter.dead:
                    matching.append(meter)
        if len(matching) > 1:
            return COLLISION
        return self._sent(matching[0], bytes([ACK])) if matching else None

    @staticmethod
    def _sent(meter: MbusMeterSimulator, data: bytes) -> bytes:
        meter.answers.append(data)
        return data


@asynccontextmanager
async def serve_mbus_pty(meters: Iterable[MbusMeterSimulator]) -> AsyncIterator[str]:
    """Put the meters behind a pseudo-terminal; yields the port to open (ptys ignore baud and parity)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    responder = MbusResponder(meters, master)
    responder.start()
    try:
        yield os.ttyname(slave)
    finally:
        responder.stop()
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def meter_from_spec(spec: str) -> MbusMeterSimulator:
    """A meter from ``CAPTURE.hex[:PRIMARY[:SPLIT]]``: the recorded telegram, its primary address
    (default 0) and, with SPLIT, the telegram split after that many records into a two-telegram readout."""
    path, _, rest = spec.partition(":")
    primary, _, split = rest.partition(":")
    if not (primary or "0").isdigit() or not (split or "0").isdigit():
        raise ValueError(f"{spec!r}: write CAPTURE.hex[:PRIMARY[:SPLIT]], e.g. meter.hex:5:10")
    return MbusMeterSimulator.from_capture(path, int(primary or 0), split_after=int(split) if split else None)
