"""What can go wrong when talking to a field device, each mapped to the health state it reports."""

from __future__ import annotations

from typing import ClassVar

from citygw.contract.wire import DeviceState

# Modbus exception codes as the specification names them.
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


class DeviceError(Exception):
    """A device did not deliver a usable answer; ``state`` is what its health reports."""

    state: ClassVar[DeviceState] = DeviceState.UNKNOWN


class DeviceTimeout(DeviceError):
    """The device did not answer within the timeout."""

    state = DeviceState.TIMEOUT


class LineUnavailable(DeviceTimeout):
    """The line itself is down: the serial port cannot be opened or the TCP endpoint refuses."""


class DeviceExceptionResponse(DeviceError):
    """The device answered with a Modbus exception response."""

    state = DeviceState.EXCEPTION

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        name = EXCEPTION_NAMES.get(code, "unknown exception code")
        text = f"exception response {code:02X} {name}"
        super().__init__(f"{detail}: {text}" if detail else text)


class DeviceCrcError(DeviceError):
    """A frame arrived with a wrong checksum."""

    state = DeviceState.CRC_ERROR


class NotModbus(DeviceError):
    """Something answered, but not in Modbus (an HTTP server on port 502, a device in another protocol)."""

    state = DeviceState.CRC_ERROR


class DecodeError(DeviceError):
    """The device answered, but the registers do not hold a valid value."""

    state = DeviceState.DECODE_ERROR
