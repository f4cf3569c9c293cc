"""What the master's end of a meter line (M-Bus, DLMS) does whatever the protocol: open the port through
pyserial (a serial port or ``socket://``), run one transaction at a time in a worker thread (the line is
half duplex), read bytes against a deadline, and ask again when an answer was lost or garbled.

Each protocol's line extends ``MeterLine`` with its frames and its way of naming a meter.
"""

from __future__ import annotations

import asyncio
import termios
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import serial

from firmware_bridge.errors import DecodeError, DeviceError, LineUnavailable

POLL_S = 0.01  # the port's read timeout: how often a wait for bytes looks at its own deadline

R = TypeVar("R")
K = TypeVar("K")  # how the protocol addresses one meter


class MeterLine(Generic[K]):
    """One line of meters read one at a time; ``async with`` opens the port."""

    kind: ClassVar[str]
    """The protocol as messages name it (``M-Bus``, ``DLMS``)."""
    parity: ClassVar[str] = serial.PARITY_NONE

    def __init__(self, port: str, *, baudrate: int, timeout: float, retries: int, name: str | None) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.name = name or port
        self._serial: Any = None
        self._lock = asyncio.Lock()
        self._missing: dict[K, dict[str, DecodeError]] = {}

    async def __aenter__(self) -> Self:
        try:
            self._serial = await asyncio.to_thread(
                serial.serial_for_url,
                self.port,
                baudrate=self.baudrate,
                parity=self.parity,
                bytesize=8,
                stopbits=1,
                timeout=POLL_S,
            )
        except (OSError, ValueError, termios.error) as exc:  # SerialException is an OSError
            raise LineUnavailable(f"{self.kind} line {self.name}: cannot open {self.port}: {exc}") from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._serial is not None:
            await asyncio.to_thread(self._serial.close)
            self._serial = None

    def field_errors(self, meter: K) -> dict[str, DecodeError]:
        """The profile fields left out of the meter's last read, each with why."""
        return dict(self._missing.get(meter, {}))

    async def _run(self, job: Callable[..., R], *args: Any) -> R:
        """``job(*args)`` in a worker thread, alone on the line."""
        if self._serial is None:
            raise LineUnavailable(f"{self.kind} line {self.name} is not open")
        async with self._lock:
            return await asyncio.to_thread(job, *args)

    # The blocking side, run in a worker thread under the lock.

    def _asking_again(
        self,
        attempt: Callable[[], R],
        again: tuple[type[DeviceError], ...] = (DeviceError,),
        retries: int | None = None,
    ) -> R:
        """``attempt()``, made up to ``retries`` more times (the line's own by default) while it raises
        one of ``again``; the last of those errors when no attempt succeeded."""
        error: DeviceError | None = None
        for _ in range((self.retries if retries is None else retries) + 1):
            try:
                return attempt()
            except again as exc:
                error = exc
        assert error is not None
        raise error

    def _send(self, frame: bytes) -> None:
        self._serial.reset_input_buffer()
        self._serial.write(frame)
        self._serial.flush()

    def _read_by(self, count: int, deadline: float) -> bytes:
        """Up to ``count`` bytes arriving before ``deadline`` (``time.monotonic``; the port's own timeout
        stays as opened: changing it reconfigures the port, which some drivers refuse)."""
        data = b""
        while len(data) < count and time.monotonic() < deadline:
            data += self._serial.read(count - len(data))
        return data
