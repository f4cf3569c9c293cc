"""Roles on profile fields: known roles only, in a unit the role takes, lamp status bits as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge import dali
from firmware_bridge.catalogue import build, catalogue, profile_paths
from firmware_bridge.profile import (
    MbusField,
    MbusProfile,
    Profile,
    ProfileError,
    available_profiles,
    load_any_profile,
    load_profile,
)
from firmware_bridge.roles import ROLES, LampBit, Role, StateClass, canonical
from tests.firmware_bridge.test_profile import problem, write

# Fields of the shipped profiles that have no role from the vocabulary (yet), with the reason.
WITHOUT_ROLE = {
    "eastron_sdm630": {"demand_period_min"},  # a setting, not a measurement
    "ecodim_dali_gw2": {  # per-lamp and per-group bookkeeping of the gateway
        *(f"lamp{n}_available" for n in range(4)),
        *(f"group{n}_{what}" for n in range(2) for what in ("brightness", "available", "fault", "status")),
    },
    "tuf_2000m": {"positive_accumulator", "working_step"},  # positive_total is the volume, finer
    "parking_bay": {"vehicle_count"},
    "ticket_validator": {"status"},
    "onboard_console": {"route_id", "trip_id", "login"},  # the transit contract reads them
}


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_field_has_a_role_where_one_applies(name: str) -> None:
    profile = load_profile(name)
    assert {s.field for s in profile.registers if s.role is None} == WITHOUT_ROLE.get(name, set())


# M-Bus fields without a role: strings, stored (due-date) values, maxima and what the vocabulary lacks.
MBUS_WITHOUT_ROLE = {
    "emu_professional_375": set(),
    "itron_cyble_water": {"volume_m3_due_date", "customer_id", "meter_time"},
    "kamstrup_multical_601": {
        "energy_kwh",  # heat energy: no role yet
        "temperature_difference",  # K, not a temperature
        "power_kw",  # thermal power: no role yet
        "power_max_kw",
        "flow_rate_max",
        "energy_kwh_last_period",
        "operating_hours",
        "meter_time",
    },
}


@pytest.mark.parametrize("name", available_profiles("mbus"))
def test_every_mbus_field_has_a_role_where_one_applies(name: str) -> None:
    profile = load_any_profile(name)
    assert isinstance(profile, MbusProfile)
    assert {s.field for s in profile.fields if s.role is None} == MBUS_WITHOUT_ROLE.get(name, set())


def test_mbus_roles_reach_the_catalogue_and_are_checked() -> None:
    found = {(f.measurement, f.field, f.channel) for f in catalogue().of(Role.ACTIVE_ENERGY_IMPORT)}
    assert ("electricity", "import_energy_t1_kwh", "t1") in found
    assert ("heat", "volume_m3", None) in {
        (f.measurement, f.field, f.channel) for f in catalogue().of(Role.VOLUME_TOTAL)
    }
    with pytest.raises(ValueError, match="is in W, kW, not V"):
        MbusField(field="p", vif="2B", unit="V", role=Role.ACTIVE_POWER)
    with pytest.raises(ValueError, match="needs flags"):
        MbusField(field="s", vif="FD17", type="int", role=Role.LAMP_STATUS)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (
            "{field: a, role: wattage, table: input, address: 0, type: f32, unit: W}",
            "docs/profiles.md lists the roles",
        ),
        (
            "{field: a, role: active_power, table: input, address: 0, type: f32, unit: V}",
            "is in W, kW, not V",
        ),
        ("{field: a, role: active_power, table: input, address: 0, type: f32}", "not no unit"),
        ("{field: a, role: power_factor, table: input, address: 0, type: f32, unit: W}", "no unit, not W"),
        ("{field: a, role: lamp_status, table: holding, address: 0, type: u16}", "needs flags"),
        (
            "{field: a, role: lamp_status, flags: {1: lamp_failure}, table: holding, address: 0, type: u16}",
            "add <bit>: lamp_on",
        ),
        (
            "{field: a, role: lamp_status, flags: {16: lamp_on}, table: holding, address: 0, type: u16}",
            "outside the field's 16 bits",
        ),
        (
            "{field: a, role: lamp_status, flags: {2: lamp_burnt}, table: holding, address: 0, type: u16}",
            "flags[2]",
        ),
        (
            "{field: a, role: voltage, flags: {2: lamp_on}, table: input, address: 0, type: f32, unit: V}",
            "remove flags",
        ),
        ("{field: a, flags: {2: lamp_on}, table: holding, address: 0, type: u16}", "give the field a role"),
        ("{field: a, role: lamp_level, table: holding, address: 0, type: u16}", "add max"),
        ("{field: a, role: voltage, channel: L1, table: input, address: 0, type: f32, unit: V}", "channel"),
    ],
)
def test_a_role_that_does_not_fit_the_field_is_refused_with_the_fix(
    tmp_path: Path, line: str, says: str
) -> None:
    assert says in problem(tmp_path, f"  - {line}\n")


def test_a_gas_in_ppb_is_converted_by_its_own_molar_mass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {field: nitrogen, role: no2, table: holding, address: 0, type: u16, unit: ppb}\n"
        "  - {field: ozone, role: o3, table: holding, address: 1, type: u16, unit: ppb}\n",
        head="model: t\nvendor: t\nsource: t\nverified: modelled\nmeasurement: air\nregisters:\n",
    )
    found = build([path])
    assert found.chosen(Role.NO2, "air", {"nitrogen": 10})[None][1] == pytest.approx(19.1)
    assert found.value(Role.O3, "air", {"ozone": 10}) == pytest.approx(20.0)


def test_a_converted_value_carries_no_float_noise() -> None:
    assert canonical(Role.FLOW_RATE, "l/s", 0.04) == 0.144  # 0.04 * 3.6 is 0.14400000000000002
    assert canonical(Role.NO2, "ppb", 3) == 5.73  # 3 * 1.91 is 5.7299999999999995
    assert canonical(Role.ACTIVE_POWER, "W", 0.1 + 0.2) == 0.1 + 0.2  # its own unit: untouched


def test_lamp_status_bits_are_decoded_from_the_profile() -> None:
    (lamp0,) = [f for f in catalogue().of(Role.LAMP_STATUS) if f.channel == "lamp0"]
    # The profile names the bits the gateway simulator sets (firmware_bridge.dali).
    assert lamp0.bits(LampBit.LAMP_ON) == dali.LAMP_ON
    assert lamp0.bits(LampBit.FADE_RUNNING) == dali.FADE_RUNNING
    assert lamp0.fault_mask == dali.FAULTS
    assert lamp0.faults(0x03) == ["lamp", "ballast"]
    assert lamp0.faults(0x14) == []


def test_every_role_has_a_state_class_and_a_canonical_unit_factor_of_one() -> None:
    for role, spec in ROLES.items():
        assert spec.units[spec.unit] == 1.0, role
        assert isinstance(spec.state_class, StateClass)
    assert set(ROLES) == set(Role)


def test_docs_list_every_role_with_its_units() -> None:
    text = (Path(__file__).parents[2] / "docs" / "profiles.md").read_text(encoding="utf-8")
    for role, spec in ROLES.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{role.value}` |")), None)
        assert row is not None, f"docs/profiles.md has no row for role {role.value}"
        assert spec.state_class.value in row
        for unit in spec.units:
            assert unit is None or unit in row, (role, unit)


def test_two_profiles_giving_one_stored_field_two_meanings_are_refused(tmp_path: Path) -> None:
    head = "model: {0}\nvendor: t\nsource: t\nverified: modelled\nmeasurement: air_quality\nregisters:\n"
    (tmp_path / "a.yaml").write_text(
        head.format("a")
        + "  - {field: no2, role: no2, table: holding, address: 0, type: u16, unit: µg/m³}\n",
        encoding="utf-8",
    )
    with pytest.raises(ProfileError) as caught:
        build(profile_paths([tmp_path]))
    assert "field no2 of measurement air_quality is role no2 unit µg/m³" in str(caught.value)
    assert "unit ppb in" in str(caught.value)
    assert "vaisala_aqt530.yaml" in str(caught.value)


def test_a_missing_profile_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such folder of profiles"):
        profile_paths([tmp_path / "nowhere"])


def test_the_catalogue_knows_the_shipped_fields_by_role() -> None:
    found = catalogue()
    assert sorted((f.measurement, f.field) for f in found.of(Role.FLOW_RATE)) == [
        ("heat", "flow_rate"),  # the Kamstrup MULTICAL 601 (M-Bus)
        ("water", "flow_rate"),
        ("water_pumping", "flow_rate"),  # a pump station on OPC UA
    ]
    assert {f.channel for f in found.of(Role.VOLTAGE)} == {None, "l1", "l2", "l3"}
    assert isinstance(load_profile("tuf_2000m"), Profile)
