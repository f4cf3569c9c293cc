"""A DALI-to-Modbus gateway (ECOdim DALI GW2 profile) with lamps that fade, fail and report it.

The gateway's brightness registers are write-only set points; what a lamp does is its actual
level and its DALI status byte (``firmware_bridge.dali``). Here a written level is reached over
``fade_s``; a lamp failure or a ballast (control gear) failure keeps the lamp dark whatever is
asked, with the failure bit set; the status byte tells lamp on and fade running as well.
"""

from __future__ import annotations

import re
from typing import Any

from firmware_bridge import dali
from firmware_bridge.profile import Profile, Table
from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator

_LAMP_LEVEL = re.compile(r"^lamp(\d+)_level$")


class DaliGatewaySimulator(ModbusDeviceSimulator):
    """The gateway and its lamps: actual level against set point, fade time, lamp and ballast faults."""

    def __init__(
        self, profile: Profile | str = "ecodim_dali_gw2", *, fade_s: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(profile, **kwargs)
        self.fade_s = fade_s
        self.lamps = sorted(
            int(match.group(1)) for s in self.profile.registers if (match := _LAMP_LEVEL.match(s.field))
        )
        self._faults: dict[int, int] = {}

    def fail(self, lamp: int, *, ballast: bool = False) -> None:
        """The lamp fails (its tube or LED module), or its ballast does: dark from now on."""
        self._check(lamp)
        self._faults[lamp] = self._faults.get(lamp, 0) | (dali.BALLAST_FAIL if ballast else dali.LAMP_FAIL)

    def repair(self, lamp: int) -> None:
        """The failed part is replaced: the lamp goes back to its set point."""
        self._check(lamp)
        self._faults.pop(lamp, None)
        self.set(f"lamp{lamp}_level", self.get(f"lamp{lamp}_brightness"))

    def image(self, table: Table) -> dict[int, int]:
        self._follow()
        for lamp in self.lamps:
            level = f"lamp{lamp}_level"
            faults = self._faults.get(lamp, 0)
            if faults:
                self._ramps.pop(level, None)
                self._values[level] = 0
            status = faults
            if not faults and self._values[level] not in (0, 0.0):
                status |= dali.LAMP_ON
            if level in self._ramps:
                status |= dali.FADE_RUNNING
            self._values[f"lamp{lamp}_status"] = status
        return super().image(table)

    def _check(self, lamp: int) -> None:
        if lamp not in self.lamps:
            raise ValueError(f"the profile {self.profile.model} has no lamp {lamp} (lamps: {self.lamps})")
