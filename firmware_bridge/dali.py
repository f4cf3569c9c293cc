"""The DALI status byte (IEC 62386-102, QUERY STATUS) as DALI-to-Modbus gateways report it per lamp.

The gateway simulator sets these bits as the firmware does. Everything that reads a status word
(the agent judging a lamp command, alerts, open data, the street-lighting dashboard) decodes it by
the bits its profile names (``flags`` of a ``lamp_status`` field), never by these constants.
"""

from __future__ import annotations

BALLAST_FAIL = 0x01  # control gear failure
LAMP_FAIL = 0x02
LAMP_ON = 0x04  # lamp arc power on
FADE_RUNNING = 0x10
FAULTS = BALLAST_FAIL | LAMP_FAIL
