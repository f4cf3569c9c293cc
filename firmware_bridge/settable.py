"""What a ``set_field`` command may set on a device, and whether a value fits: the profile's own checks.

One place for the API (which refuses before storing) and the agent (which refuses before writing):
a LoRaWAN profile's ``commands`` (the downlink must encode: a number within min..max, in whole
steps, fitting its encoding), a Modbus profile's writable registers (within min..max, encodable).
Other profiles have nothing settable.
"""

from __future__ import annotations

from citygw.contract import wire
from firmware_bridge.lorawan import encode_command
from firmware_bridge.profile import LorawanProfile, Profile
from firmware_bridge.registers import encode


def settable_fields(profile: object) -> list[str]:
    """The fields of ``profile`` that ``set_field`` may set, in profile order."""
    if isinstance(profile, LorawanProfile):
        return [c.field for c in profile.commands]
    if isinstance(profile, Profile):
        return [s.field for s in profile.registers if s.writable]
    return []


def check_set_field(profile: object, field: str, value: wire.FieldValue) -> None:
    """ValueError saying why ``field`` cannot be set to ``value`` (naming the settable fields)."""
    settable = settable_fields(profile)
    model = getattr(profile, "model", type(profile).__name__)
    if field not in settable:
        raise ValueError(f"{field} cannot be set on {model}; settable: {', '.join(settable) or 'none'}")
    if isinstance(profile, LorawanProfile):
        encode_command(profile.command(field), value)
        return
    assert isinstance(profile, Profile)
    spec = profile.register(field)
    if not spec.allows(value):
        raise ValueError(f"{field}={value} is outside {spec.min}..{spec.max} of {model}")
    encode(spec, value)  # a string for a number, a value too large for its type
