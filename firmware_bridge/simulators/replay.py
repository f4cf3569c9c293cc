"""A device that answers as a captured one did: the recorded words, exceptions, silences and timing.

A capture (firmware_bridge/capture.py) put back on a line, so that a field device's quirks can
be served to the agent, the probe or a test without the device.
"""

from __future__ import annotations

import asyncio
import statistics

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException

from firmware_bridge.capture import CaptureCase, Exchange, register_image
from firmware_bridge.profile import Profile, Table, load_profile
from firmware_bridge.simulators.modbus_device import TABLE_OF_FUNCTION, ModbusDeviceSimulator


class CaptureReplay(ModbusDeviceSimulator):
    """Answers each read the capture recorded as recorded, after its recorded response time.

    Any other read of captured addresses, or one whose time was not recorded, is answered from the
    captured words after the median recorded response time. A read of an address never captured
    gets exception 02, a write exception 01 (a replay is read-only). The profile (the capture's
    own by default) only names the device.
    """

    def __init__(self, case: CaptureCase, *, profile: Profile | None = None, unit: int | None = None) -> None:
        self._words = register_image(case.exchanges)
        super().__init__(
            profile if profile is not None else load_profile(case.info.profile),
            unit=case.info.unit if unit is None else unit,
        )
        self.case = case
        self._recorded: dict[tuple[int, int, int], Exchange] = {
            (e.function, e.address, e.count): e for e in case.exchanges
        }
        answered = [e.ms for e in case.exchanges if e.words is not None and e.ms is not None]
        self._typical_ms = statistics.median(answered) if answered else 0.0

    def extent(self, table: Table) -> int:
        captured = max(self._words.get(table, {}), default=-1) + 1
        return max(super().extent(table), captured)

    def image(self, table: Table) -> dict[int, int]:
        return dict(self._words.get(table, {}))

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests.append((function_code, address, count))
        if self.offline:
            raise NoSuchIdException(f"unit {self.unit} is offline")
        recorded = self._recorded.get((function_code, address, count))
        ms = recorded.ms if recorded is not None and recorded.ms is not None else self._typical_ms
        await asyncio.sleep(ms / 1000 + self.delay)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        if recorded is not None and recorded.timeout:
            raise NoSuchIdException(f"unit {self.unit} did not answer this read when captured")
        if recorded is not None and recorded.exception is not None:
            try:
                return ExcCodes(recorded.exception)
            except ValueError:  # a code pymodbus cannot send
                return ExcCodes.DEVICE_FAILURE
        table = TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        words = self._words.get(table, {})
        if not all(a in words for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        self.fill(table, start_address, registers)
        return None
