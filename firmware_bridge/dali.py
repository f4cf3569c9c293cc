"""The DALI status byte (IEC 62386-102, QUERY STATUS) as DALI-to-Modbus gateways report it per lamp.

One place for its bits: the gateway simulator sets them, the agent judges a lamp command by
them, the API's alerts and the street-lighting dashboard count failed and lit lamps with them.
"""

from __future__ import annotations

BALLAST_FAIL = 0x01  # control gear failure
LAMP_FAIL = 0x02
LAMP_ON = 0x04  # lamp arc power on
FADE_RUNNING = 0x10
FAULTS = BALLAST_FAIL | LAMP_FAIL


def faults(status: int) -> list[str]:
    """The failures a status byte reports, in words ("lamp", "ballast")."""
    return [what for bit, what in ((LAMP_FAIL, "lamp"), (BALLAST_FAIL, "ballast")) if status & bit]
