"""An M-Bus line (EN 13757-2): the master's end of a meter bus, on a serial port through a level
converter or on a ``socket://`` M-Bus gateway, reading meters by primary or secondary address.

One transaction at a time (the bus is half duplex): SND_NKE or a secondary-address selection,
then REQ_UD2 with the frame count bit toggled for each further telegram while a telegram ends
in "more records follow" (DIF 1F); a lost or garbled answer is asked again with the same bit, so
the meter repeats it rather than skipping on. Frames are built and decoded by pyMeterBus
(``firmware_bridge.mbus_frames``); every failure names the line, the address and what came back.
"""

from __future__ import annotations

import asyncio
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import serial

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import DecodeError, DeviceCrcError, DeviceError, DeviceTimeout, LineUnavailable
from firmware_bridge.mbus_frames import (
    ACK,
    LONG_START,
    MAX_PRIMARY,
    NETWORK_LAYER,
    WILDCARD_SECONDARY,
    FrameError,
    RecordsError,
    Telegram,
    check_frame,
    check_secondary,
    decode,
    frame_length,
    profile_fields,
    req_ud2,
    select,
    show,
    snd_nke,
)
from firmware_bridge.profile import MbusProfile

DEFAULT_BAUDRATE = 2400
MAX_TELEGRAMS = 16  # a meter sending more "more records follow" than this is stuck in a loop
BITS_PER_CHARACTER = 11  # start, 8 data, even parity, stop
QUIET_CHARACTERS = 4  # silence that ends an answer when looking for a second one (collisions)
POLL_S = 0.01  # the port's read timeout: how often a wait for bytes looks at its own deadline

R = TypeVar("R")
Address = int | str
"""A meter's primary address (0-250) or secondary address (16 hex digits, F wildcards)."""


def parse_address(value: int | str) -> Address:
    """A primary address (int or digits) or a secondary address (16 hex digits); ValueError otherwise."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit() and len(value) <= 3):
        number = int(value)
        if not 0 <= number <= MAX_PRIMARY:
            raise ValueError(f"primary address {number} is outside 0..{MAX_PRIMARY}")
        return number
    return check_secondary(value)


def describe(address: Address) -> str:
    return f"primary address {address}" if isinstance(address, int) else f"secondary address {address}"


class MbusCollision(DecodeError):
    """Several meters answered a selection at once (a wildcard matching more than one)."""


@dataclass(frozen=True)
class Found:
    """A meter found by a scan: how to address it, and its first telegram or why it could not be read."""

    address: Address
    telegram: Telegram | None
    error: str | None = None


class MbusLine:
    """The master on one M-Bus line; ``async with`` opens the port, then read meters one at a time."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout: float = 1.0,
        retries: int = 1,
        name: str | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.name = name or port
        self._serial: Any = None
        self._lock = asyncio.Lock()
        self._missing: dict[Address, dict[str, DecodeError]] = {}

    async def __aenter__(self) -> Self:
        try:
            self._serial = await asyncio.to_thread(
                serial.serial_for_url,
                self.port,
                baudrate=self.baudrate,
                parity=serial.PARITY_EVEN,
                bytesize=8,
                stopbits=1,
                timeout=POLL_S,
            )
        except (OSError, ValueError, termios.error) as exc:  # SerialException is an OSError
            raise LineUnavailable(f"M-Bus line {self.name}: cannot open {self.port}: {exc}") from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._serial is not None:
            await asyncio.to_thread(self._serial.close)
            self._serial = None

    async def read_telegrams(self, address: Address) -> list[Telegram]:
        """Every telegram of one readout of the meter, following "more records follow" to the last."""
        return await self._run(self._read_telegrams, address)

    async def read(self, address: Address, profile: MbusProfile) -> dict[str, FieldValue]:
        """The profile's fields from one readout; fields whose record is missing are left out (see
        ``field_errors``)."""
        telegrams = await self.read_telegrams(address)
        maker = telegrams[0].manufacturer
        if profile.manufacturer is not None and maker and maker != profile.manufacturer:
            raise DecodeError(
                self._where(
                    address,
                    f"the meter is a {maker} (id {telegrams[0].id}), profile {profile.model} is for "
                    f"{profile.manufacturer} meters: check the address or the profile",
                )
            )
        records = [record for telegram in telegrams for record in telegram.records]
        fields, missing = profile_fields(records, profile)
        self._missing[address] = {
            name: DecodeError(self._where(address, why)) for name, why in missing.items()
        }
        return fields

    def field_errors(self, address: Address) -> dict[str, DecodeError]:
        """The profile fields left out of the meter's last readout, each with why."""
        return dict(self._missing.get(address, {}))

    async def ping(self, address: int) -> bool:
        """True when a meter at ``address`` acknowledges SND_NKE."""
        try:
            await self._run(self._reset, address)
        except DeviceTimeout:
            return False
        return True

    async def scan_primary(self, addresses: Iterable[int] = range(MAX_PRIMARY + 1)) -> list[Found]:
        """The meters answering at these primary addresses, each with its first telegram."""
        found = []
        for address in addresses:
            if await self.ping(address):
                try:
                    telegrams = await self.read_telegrams(address)
                except DeviceError as exc:  # it is there all the same: list it with why it is unreadable
                    found.append(Found(address, None, str(exc)))
                else:
                    found.append(Found(address, telegrams[0]))
        return found

    async def scan_secondary(self, mask: str = WILDCARD_SECONDARY) -> list[Found]:
        """The meters found by wildcard search: one id digit narrowed at a time while selections collide."""
        return await self._run(self._search, check_secondary(mask), 0)

    async def _run(self, job: Callable[..., R], *args: Any) -> R:
        if self._serial is None:
            raise LineUnavailable(f"M-Bus line {self.name} is not open")
        async with self._lock:
            return await asyncio.to_thread(job, *args)

    # The blocking side, run in a worker thread under the lock.

    def _read_telegrams(self, address: Address) -> list[Telegram]:
        if isinstance(address, str):
            self._select(address)
            target = NETWORK_LAYER
        else:
            self._reset(address)
            target = address
        telegrams: list[Telegram] = []
        fcb = True
        while True:
            telegram = self._request(req_ud2(target, fcb=fcb), address, "REQ_UD2")
            telegrams.append(telegram)
            if not telegram.more_follow:
                return telegrams
            if len(telegrams) >= MAX_TELEGRAMS:
                raise DecodeError(
                    f"M-Bus line {self.name}, {describe(address)}: still 'more records follow' after "
                    f"{MAX_TELEGRAMS} telegrams; readout abandoned"
                )
            fcb = not fcb

    def _reset(self, address: int) -> None:
        """SND_NKE: the meter acknowledges and starts its telegram sequence again."""
        error: DeviceError | None = None
        for _ in range(self.retries + 1):
            self._send(snd_nke(address))
            try:
                answer = self._receive(address, "SND_NKE")
            except DeviceError as exc:
                error = exc
                continue
            if answer == bytes([ACK]):
                return
            error = DecodeError(self._where(address, f"SND_NKE answered with {show(answer)}, not E5"))
        assert error is not None
        raise error

    def _request(self, frame: bytes, address: Address, what: str) -> Telegram:
        """Send ``frame`` and decode the telegram; a lost or garbled answer is asked for again as it was."""
        error: DeviceError | None = None
        for _ in range(self.retries + 1):
            self._send(frame)
            try:
                data = self._receive(address, what)
                return decode(data)
            except RecordsError as exc:
                error = DecodeError(self._where(address, f"{what}: {exc}"))
            except FrameError as exc:
                error = DeviceCrcError(self._where(address, f"{what}: {exc}"))
            except DeviceError as exc:
                error = exc
        assert error is not None
        raise error

    def _select(self, secondary: str) -> None:
        """Select the meter(s) matching ``secondary``; raises unless exactly one acknowledged."""
        self._send(select(secondary))
        first = self._read(1, self.timeout)
        if not first:
            raise DeviceTimeout(self._where(secondary, f"no meter acknowledges the selection of {secondary}"))
        rest = self._read_until_quiet()
        if first == bytes([ACK]) and not rest:
            return
        raise MbusCollision(
            self._where(
                secondary,
                f"several meters answer the selection of {secondary}: received {show(first + rest)}",
            )
        )

    def _search(self, mask: str, position: int) -> list[Found]:
        """libmbus's secondary scan: select mask with id digit ``position`` set to 0..9; on a collision
        narrow the next digit, on a single acknowledgement read that meter."""
        found: list[Found] = []
        for digit in "0123456789":
            probe = mask[:position] + digit + mask[position + 1 :]
            try:
                self._select(probe)
            except DeviceTimeout:
                continue
            except MbusCollision as exc:
                if position + 1 < 8:
                    found += self._search(probe, position + 1)
                else:  # the whole id collides: meters sharing it, told apart by manufacturer, version, medium
                    found.append(Found(probe, None, str(exc)))
                continue
            try:
                telegram = self._request(req_ud2(NETWORK_LAYER, fcb=True), probe, "REQ_UD2")
            except DeviceError as exc:
                found.append(Found(probe, None, str(exc)))
            else:
                found.append(Found(telegram.secondary, telegram))
        return found

    def _send(self, frame: bytes) -> None:
        self._serial.reset_input_buffer()
        self._serial.write(frame)
        self._serial.flush()

    def _receive(self, address: Address, what: str) -> bytes:
        """One whole frame; DeviceTimeout on silence, DeviceCrcError on a frame that is not whole."""
        first = self._read(1, self.timeout)
        if not first:
            raise DeviceTimeout(self._where(address, f"no answer to {what} within {self.timeout:g} s"))
        data = first
        try:
            if first[0] == LONG_START:
                data += self._read(3, self._frame_time(3))
            need = frame_length(data)
            data += self._read(need - len(data), self._frame_time(need))
            check_frame(data)
        except FrameError as exc:
            data += self._read_until_quiet()
            raise DeviceCrcError(self._where(address, f"{what}: {exc.what}: received {show(data)}")) from None
        return data

    def _read(self, count: int, timeout: float) -> bytes:
        """Up to ``count`` bytes arriving within ``timeout`` (the port's own timeout stays as opened:
        changing it reconfigures the port, which some drivers refuse)."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < count and time.monotonic() < deadline:
            data += self._serial.read(count - len(data))
        return data

    def _read_until_quiet(self) -> bytes:
        """Whatever still arrives until the line is quiet for a few characters' time."""
        quiet = max(0.02, QUIET_CHARACTERS * BITS_PER_CHARACTER / self.baudrate)
        data = b""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            chunk = self._read(256, quiet)
            if not chunk:
                break
            data += chunk
        return data

    def _frame_time(self, characters: int) -> float:
        """How long ``characters`` may take to arrive: their time on the wire plus the timeout."""
        return self.timeout + characters * BITS_PER_CHARACTER / self.baudrate

    def _where(self, address: Address, what: str) -> str:
        return f"M-Bus line {self.name}, {describe(address)}: {what}"
