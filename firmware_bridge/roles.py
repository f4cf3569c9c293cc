"""Semantic roles of profile fields: what a field measures, in the city's words, and in which unit.

A profile gives a field a ``role`` (``active_power``, ``flow_rate``, ``no2``, ``lamp_status``...)
so that alerts, open data, the air-quality index and the dashboards find "the flow rate of a water
meter" whatever the model calls it. Each role has a canonical unit, the units a field may use
(each with its factor to the canonical one) and a state class, as Home Assistant's device_class and
state_class do. The vocabulary is documented in docs/profiles.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from citygw.contract.air_quality import PPB_TO_UGM3


class Role(StrEnum):
    # electricity
    ACTIVE_POWER = "active_power"
    VOLTAGE = "voltage"
    CURRENT = "current"
    POWER_FACTOR = "power_factor"
    FREQUENCY = "frequency"
    ACTIVE_ENERGY_IMPORT = "active_energy_import"
    ACTIVE_ENERGY_EXPORT = "active_energy_export"
    ACTIVE_ENERGY_TOTAL = "active_energy_total"
    # water
    FLOW_RATE = "flow_rate"
    FLOW_VELOCITY = "flow_velocity"
    VOLUME_TOTAL = "volume_total"
    VOLUME_REVERSE = "volume_reverse"
    VOLUME_NET = "volume_net"
    SIGNAL_QUALITY = "signal_quality"
    WATER_PH = "water_ph"
    TURBIDITY = "turbidity"
    FREE_CHLORINE = "free_chlorine"
    # air
    PM1 = "pm1"
    PM2_5 = "pm2_5"
    PM10 = "pm10"
    NO2 = "no2"
    O3 = "o3"
    SO2 = "so2"
    NO = "no"
    CO = "co"
    CO2 = "co2"
    TVOC = "tvoc"
    HUMIDITY = "humidity"
    PRESSURE = "pressure"
    TEMPERATURE = "temperature"
    # lighting
    LAMP_STATUS = "lamp_status"
    LAMP_LEVEL = "lamp_level"
    LAMP_SETPOINT = "lamp_setpoint"
    BUS_LOAD = "bus_load"
    BUS_STATUS = "bus_status"
    # any device
    ERROR_CODE = "error_code"
    ALARM = "alarm"
    BATTERY_VOLTAGE = "battery_voltage"
    FILL_LEVEL = "fill_level"
    OCCUPIED = "occupied"
    TAPS = "taps"


class StateClass(StrEnum):
    MEASUREMENT = "measurement"  # a value now: mean, min and max make sense
    TOTAL_INCREASING = "total_increasing"  # a counter: only its growth makes sense
    TOTAL = "total"  # a running total that may also go down (net volume)
    STATE = "state"  # a code, a bit word or a flag: compared, never averaged


class LampBit(StrEnum):
    """What a bit of a lamp's status word means (``flags:`` of a ``lamp_status`` field)."""

    LAMP_ON = "lamp_on"
    FADE_RUNNING = "fade_running"
    BALLAST_FAILURE = "ballast_failure"
    LAMP_FAILURE = "lamp_failure"
    LIMIT_ERROR = "limit_error"
    POWER_FAILURE = "power_failure"


# The failures among the bit meanings, in words an alert uses.
LAMP_FAULTS: Mapping[LampBit, str] = MappingProxyType(
    {
        LampBit.LAMP_FAILURE: "lamp",
        LampBit.BALLAST_FAILURE: "ballast",
        LampBit.POWER_FAILURE: "power",
        LampBit.LIMIT_ERROR: "limit",
    }
)

UGM3 = "µg/m³"
NO_UNIT: Mapping[str | None, float] = MappingProxyType({None: 1.0})


@dataclass(frozen=True)
class RoleSpec:
    """One role: the units a field may be in (the first is canonical: factor 1), its state class."""

    units: Mapping[str | None, float]
    state_class: StateClass
    description: str
    needs_max: bool = field(default=False)  # a level read against the field's max (its full scale)
    bits: bool = field(default=False)  # a status word whose bits the field's ``flags`` name

    @property
    def unit(self) -> str | None:
        """The canonical unit (None: the role has no unit)."""
        return next(iter(self.units))


def _units(*pairs: tuple[str | None, float]) -> Mapping[str | None, float]:
    return MappingProxyType(dict(pairs))


def _gas(role: str) -> Mapping[str | None, float]:
    return _units((UGM3, 1.0), ("ppb", PPB_TO_UGM3[role]), ("mg/m³", 1000.0))


_M, _T, _TI, _S = StateClass.MEASUREMENT, StateClass.TOTAL, StateClass.TOTAL_INCREASING, StateClass.STATE
_KWH = _units(("kWh", 1.0), ("Wh", 0.001), ("MWh", 1000.0))
_PM = _units((UGM3, 1.0))

ROLES: Mapping[Role, RoleSpec] = MappingProxyType(
    {
        Role.ACTIVE_POWER: RoleSpec(
            _units(("W", 1.0), ("kW", 1000.0)), _M, "active power (a phase's with a channel)"
        ),
        Role.VOLTAGE: RoleSpec(_units(("V", 1.0), ("kV", 1000.0)), _M, "voltage, phase to neutral"),
        Role.CURRENT: RoleSpec(_units(("A", 1.0), ("mA", 0.001)), _M, "current"),
        Role.POWER_FACTOR: RoleSpec(NO_UNIT, _M, "power factor, -1..1"),
        Role.FREQUENCY: RoleSpec(_units(("Hz", 1.0)), _M, "mains frequency"),
        Role.ACTIVE_ENERGY_IMPORT: RoleSpec(_KWH, _TI, "active energy imported (from the grid)"),
        Role.ACTIVE_ENERGY_EXPORT: RoleSpec(_KWH, _TI, "active energy exported (to the grid)"),
        Role.ACTIVE_ENERGY_TOTAL: RoleSpec(_KWH, _TI, "active energy, import plus export"),
        Role.FLOW_RATE: RoleSpec(
            _units(("m³/h", 1.0), ("l/s", 3.6), ("l/min", 0.06), ("l/h", 0.001)), _M, "volume flow rate"
        ),
        Role.FLOW_VELOCITY: RoleSpec(_units(("m/s", 1.0)), _M, "flow velocity in the pipe"),
        Role.VOLUME_TOTAL: RoleSpec(_units(("m³", 1.0), ("l", 0.001)), _TI, "volume delivered (forward)"),
        Role.VOLUME_REVERSE: RoleSpec(_units(("m³", 1.0), ("l", 0.001)), _TI, "volume that flowed backwards"),
        Role.VOLUME_NET: RoleSpec(_units(("m³", 1.0), ("l", 0.001)), _T, "forward minus reverse volume"),
        Role.SIGNAL_QUALITY: RoleSpec(_units((None, 1.0), ("%", 1.0)), _M, "measuring signal quality"),
        Role.WATER_PH: RoleSpec(_units(("pH", 1.0)), _M, "pH of the water"),
        Role.TURBIDITY: RoleSpec(_units(("NTU", 1.0), ("FNU", 1.0)), _M, "turbidity"),
        Role.FREE_CHLORINE: RoleSpec(_units(("mg/L", 1.0), ("ppm", 1.0)), _M, "free chlorine"),
        Role.PM1: RoleSpec(_PM, _M, "particulate matter below 1 µm"),
        Role.PM2_5: RoleSpec(_PM, _M, "particulate matter below 2.5 µm"),
        Role.PM10: RoleSpec(_PM, _M, "particulate matter below 10 µm"),
        Role.NO2: RoleSpec(_gas("no2"), _M, "nitrogen dioxide (ppb: at 20 °C, 1013.25 hPa)"),
        Role.O3: RoleSpec(_gas("o3"), _M, "ozone (ppb: at 20 °C, 1013.25 hPa)"),
        Role.SO2: RoleSpec(_gas("so2"), _M, "sulphur dioxide (ppb: at 20 °C, 1013.25 hPa)"),
        # NO 30.01 g/mol, CO 28.01 g/mol over 24.04 l/mol (20 °C, 1013.25 hPa).
        Role.NO: RoleSpec(_units((UGM3, 1.0), ("ppb", 1.25)), _M, "nitrogen monoxide"),
        Role.CO: RoleSpec(
            _units((UGM3, 1.0), ("ppb", 1.165), ("ppm", 1165.0), ("mg/m³", 1000.0)), _M, "carbon monoxide"
        ),
        Role.CO2: RoleSpec(_units(("ppm", 1.0)), _M, "carbon dioxide"),
        Role.TVOC: RoleSpec(_units(("ppb", 1.0)), _M, "total volatile organic compounds"),
        Role.HUMIDITY: RoleSpec(_units(("%", 1.0)), _M, "relative humidity"),
        Role.PRESSURE: RoleSpec(_units(("hPa", 1.0), ("Pa", 0.01), ("kPa", 10.0)), _M, "air pressure"),
        Role.TEMPERATURE: RoleSpec(
            _units(("°C", 1.0)), _M, "temperature (of the air, or the water's with a channel)"
        ),
        Role.LAMP_STATUS: RoleSpec(NO_UNIT, _S, "a lamp's status word; flags name its bits", bits=True),
        Role.LAMP_LEVEL: RoleSpec(
            _units((None, 1.0), ("%", 1.0)), _M, "a lamp's actual light level, 0..max", needs_max=True
        ),
        Role.LAMP_SETPOINT: RoleSpec(
            _units((None, 1.0), ("%", 1.0)), _S, "a lamp's brightness set point, 0..max", needs_max=True
        ),
        Role.BUS_LOAD: RoleSpec(_units(("%", 1.0)), _M, "load of the field bus a gateway drives (DALI)"),
        Role.BUS_STATUS: RoleSpec(NO_UNIT, _S, "status of the field bus a gateway drives (0 = ok)"),
        Role.ERROR_CODE: RoleSpec(NO_UNIT, _S, "the device's error or fault word (0 = none)"),
        Role.ALARM: RoleSpec(NO_UNIT, _S, "an alarm flag (non-zero = raised); the channel says which"),
        Role.BATTERY_VOLTAGE: RoleSpec(_units(("V", 1.0), ("mV", 0.001)), _M, "battery voltage"),
        Role.FILL_LEVEL: RoleSpec(_units(("%", 1.0)), _M, "how full a container is"),
        Role.OCCUPIED: RoleSpec(NO_UNIT, _S, "a place is taken (true) or free"),
        Role.TAPS: RoleSpec(NO_UNIT, _TI, "card taps at a ticket validator; the channel is the fare type"),
    }
)


def lamp_faults(flags: Mapping[int, LampBit], status: int) -> list[str]:
    """The failures a lamp status word reports by its profile's ``flags``, in words ("lamp", "ballast")."""
    return [
        word
        for what, word in LAMP_FAULTS.items()
        if any(status >> b & 1 for b, w in flags.items() if w == what)
    ]


def unit_problem(role: Role, unit: str | None) -> str | None:
    """Why a field in ``unit`` cannot have ``role`` (with the units it could have), or None."""
    units = ROLES[role].units
    if unit in units:
        return None
    allowed = ", ".join("no unit" if u is None else u for u in units)
    return f"role {role.value} is in {allowed}, not {'no unit' if unit is None else unit}"


def canonical(role: Role, unit: str | None, value: float) -> float:
    """``value`` (in ``unit``) in the role's canonical unit, to 12 significant digits (0.04 l/s is
    0.144 m³/h, not 0.14400000000000002)."""
    factor = ROLES[role].units[unit]
    return value if factor == 1 else float(f"{value * factor:.12g}")


def role_problem(
    role: Role | None,
    unit: str | None,
    flags: Mapping[int, LampBit] | None,
    maximum: float | None,
    width: int,
) -> str | None:
    """Why a field (its unit, flags, max and width in bits) cannot have ``role``, with the fix; or None."""
    if role is None:
        return "flags name the bits of a status word: give the field a role (lamp_status)" if flags else None
    spec = ROLES[role]
    problem = unit_problem(role, unit)
    if problem:
        return f"{problem}: convert the field (scale) or choose another role"
    if spec.bits:
        if not flags:
            return f"role {role.value} needs flags: what each bit means, e.g. {{2: lamp_on, 1: lamp_failure}}"
        if LampBit.LAMP_ON not in flags.values():
            return f"role {role.value} needs the bit that says the lamp is on: add <bit>: lamp_on to flags"
        wide = sorted(b for b in flags if not 0 <= b < width)
        if wide:
            return f"flags name bit {wide[0]}, outside the field's {width} bits: use 0..{width - 1}"
    elif flags:
        return f"role {role.value} has no bits to name: remove flags"
    if spec.needs_max and (maximum is None or maximum <= 0):
        return f"role {role.value} is read against the field's full scale: add max (e.g. 254 for DALI)"
    return None
