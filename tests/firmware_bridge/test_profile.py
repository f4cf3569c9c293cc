"""Profiles: every shipped profile loads; a bad file is refused with file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.profile import (
    ProfileError,
    ReportRule,
    available_profiles,
    load_any_profile,
    load_nmea_profile,
    load_profile,
)

GOOD_HEAD = """\
model: test_meter
vendor: ACME
source: test fixture
verified: modelled
measurement: electricity
registers:
"""


def write(tmp_path: Path, registers: str, head: str = GOOD_HEAD) -> Path:
    path = tmp_path / "test_meter.yaml"
    path.write_text(head + registers, encoding="utf-8")
    return path


def problem(tmp_path: Path, registers: str, head: str = GOOD_HEAD) -> str:
    path = write(tmp_path, registers, head)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    return message


SHIPPED = {
    "eastron_sdm630": "electricity",
    "eastron_sdm120": "electricity",
    "vaisala_aqt530": "air_quality",
    "jxbs_3001": "air_quality",
    "tuf_2000m": "water",
    "ecodim_dali_gw2": "lighting",
    "ticket_validator": "validator",
    "waste_bin_fill": "waste_bin",
    "water_quality_probe": "water_quality",
    "parking_bay": "parking",
}


@pytest.mark.parametrize(("name", "measurement"), SHIPPED.items())
def test_shipped_profiles_load(name: str, measurement: str) -> None:
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.model == name
    assert profile.measurement == measurement


@pytest.mark.parametrize("name", ["ticket_validator", "waste_bin_fill", "water_quality_probe", "parking_bay"])
def test_invented_register_maps_say_so(name: str) -> None:
    assert "verify against the vendor manual" in load_profile(name).description


def test_tuf_2000m_is_cdab_with_a_byte_register() -> None:
    profile = load_profile("tuf_2000m")
    assert {s.order for s in profile.registers if s.register_count == 2} == {"CDAB"}
    quality, step = profile.register("signal_quality"), profile.register("working_step")
    assert (quality.address, quality.mask, quality.shift) == (91, 0xFF, 0)
    assert (step.address, step.mask, step.shift) == (91, 0xFF, 8)


def test_masked_values_may_share_a_register_when_their_bits_differ(tmp_path: Path) -> None:
    profile = load_profile(
        write(
            tmp_path,
            "  - {field: a, table: holding, address: 3, type: u16, mask: 1}\n"
            "  - {field: b, table: holding, address: 3, type: u16, mask: 1, shift: 1}\n"
            "  - {field: c, table: holding, address: 3, type: u16, mask: 0x3F, shift: 2}\n",
        )
    )
    assert [s.bits for s in profile.registers] == [0b1, 0b10, 0b11111100]


def test_masked_values_with_common_bits_overlap(tmp_path: Path) -> None:
    message = problem(
        tmp_path,
        "  - {field: a, table: holding, address: 3, type: u16, mask: 3}\n"
        "  - {field: b, table: holding, address: 3, type: u16, mask: 1, shift: 1}\n",
    )
    assert "b at holding 3 overlaps a" in message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{field: a, table: holding, address: 0, type: i16, mask: 1}", "unsigned type"),
        ("{field: a, table: holding, address: 0, type: u16, mask: 0xFF, shift: 9}", "does not fit in a u16"),
        ("{field: a, table: holding, address: 0, type: u16, mask: 1, writable: true}", "cannot be writable"),
        ("{field: a, table: holding, address: 0, type: u16, typical_rate: 3}", "set counter true"),
        ("{field: a, table: coil, address: 0, type: bit, counter: true}", "cannot count"),
        ("{field: a, table: holding, address: 0, type: u16, follows: b}", "follows b, which is not a field"),
    ],
)
def test_register_feature_misuse(tmp_path: Path, line: str, says: str) -> None:
    assert says in problem(tmp_path, f"  - {line}\n")


def test_sdm630_is_float32_input_abcd() -> None:
    profile = load_profile("eastron_sdm630")
    measured = [s for s in profile.registers if s.table == "input"]
    assert {s.type for s in measured} == {"f32"}
    assert {s.order for s in measured} == {"ABCD"}
    assert profile.register("total_energy_kwh").address == 0x156
    assert profile.serial.baudrate == 9600


def test_aqt530_scales_and_the_yaml_no_trap() -> None:
    profile = load_profile("vaisala_aqt530")
    assert profile.register("no").address == 0x06  # a bare `no` in YAML would be False
    assert profile.register("pm25").scale == 0.1
    assert profile.register("temperature").type == "i16"


def test_hex_strings_are_addresses(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, '  - {field: a, table: holding, address: "0x1A", type: u16}\n'))
    assert profile.registers[0].address == 26


def test_register_order_defaults_to_profile_word_order(tmp_path: Path) -> None:
    head = GOOD_HEAD.replace("registers:", "word_order: CDAB\nregisters:")
    profile = load_profile(
        write(
            tmp_path,
            "  - {field: a, table: holding, address: 0, type: u32}\n"
            "  - {field: b, table: holding, address: 2, type: u32, order: ABCD}\n",
            head,
        )
    )
    assert [s.order for s in profile.registers] == ["CDAB", "ABCD"]


def test_bit_type_in_a_register_table(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: relay, table: holding, address: 1, type: bit}\n")
    assert "registers[0] (relay)" in message
    assert "coil or discrete" in message


def test_misspelt_key_names_key_and_fix(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: a, table: holding, adress: 1, type: u16}\n")
    assert "registers[0] (a).adress" in message
    assert "remove this key or check its spelling" in message
    assert "registers[0] (a).address" in message
    assert "add this key" in message


def test_unknown_table_lists_the_choices(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: a, table: holdings, address: 1, type: u16}\n")
    assert "registers[0] (a).table" in message
    assert "'holding'" in message
    assert "use one of the listed values" in message


def test_address_beyond_65535(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: a, table: holding, address: 0x10000, type: u16}\n")
    assert "registers[0] (a).address" in message
    assert "65535" in message


def test_value_running_past_the_last_address(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: a, table: input, address: 0xFFFF, type: f32}\n")
    assert "beyond 65535" in message


def test_overlapping_fields(tmp_path: Path) -> None:
    message = problem(
        tmp_path,
        "  - {field: power, table: input, address: 0x0C, type: f32}\n"
        "  - {field: power_b, table: input, address: 0x0D, type: u16}\n",
    )
    assert "power_b" in message
    assert "overlaps power" in message


def test_duplicate_field_names(tmp_path: Path) -> None:
    message = problem(
        tmp_path,
        "  - {field: a, table: input, address: 0, type: u16}\n"
        "  - {field: a, table: input, address: 1, type: u16}\n",
    )
    assert "appears twice" in message


def test_bare_no_as_field_name_is_explained(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: no, table: holding, address: 6, type: i16}\n")
    assert "registers[0] (False).field" in message
    assert "quote the value" in message


def test_field_name_must_be_snake_case(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: PM2.5, table: holding, address: 6, type: i16}\n")
    assert "snake_case" in message


def test_string_needs_count(tmp_path: Path) -> None:
    message = problem(tmp_path, "  - {field: serial_number, table: holding, address: 0x40, type: string}\n")
    assert "needs count" in message


def test_field_in_forbidden_range(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {field: a, table: holding, address: 5, type: u16}\n"
        "forbidden:\n  - {table: holding, start: 4, end: 9, reason: firmware crashes}\n",
    )
    with pytest.raises(ProfileError, match=r"forbidden range 4\.\.9"):
        load_profile(path)


def test_unknown_profile_name_lists_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="eastron_sdm630"):
        load_profile("no_such_meter")


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"broken\.yaml: not valid YAML"):
        load_profile(path)


def test_unknown_field_lookup_names_known_fields() -> None:
    with pytest.raises(KeyError, match="voltage_l1"):
        load_profile("eastron_sdm630").register("voltage_l4")


NMEA_HEAD = """\
model: test_gps
vendor: ACME
source: test fixture
verified: modelled
measurement: vehicle_position
protocol: nmea
talkers: [GP]
"""


def test_the_gps_profile_names_its_measurement_fields_and_sentences() -> None:
    gps = load_nmea_profile("gps_nmea")
    assert gps.measurement == "vehicle_position"
    assert {f.field: f.unit for f in gps.fields} == {
        "lat": "deg",
        "lon": "deg",
        "speed_mps": "m/s",
        "course_deg": "deg",
        "fix_quality": None,
        "satellites": None,
        "hdop": None,
        "altitude_m": "m",
    }
    assert (gps.sentences, gps.talkers) == (["RMC", "GGA", "GLL", "VTG", "GSA", "ZDA"], None)  # every talker
    assert gps.epoch_complete == ("RMC", "GGA")
    assert "gps_nmea" not in available_profiles()  # the Modbus ones
    assert available_profiles("nmea") == ["gps_nmea"]


def test_a_profile_of_the_other_protocol_is_refused_saying_which_is_needed() -> None:
    with pytest.raises(ProfileError, match=r"gps_nmea.yaml: speaks nmea; a device on a Modbus line"):
        load_profile("gps_nmea")
    with pytest.raises(ProfileError, match=r"speaks modbus; a device on a GPS line \(nmea\) needs an nmea"):
        load_nmea_profile("eastron_sdm630")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            "sentences: [RMC]\nfields: [{field: lat}, {field: lon}]\nregisters: []\n",
            "registers: Extra inputs",
        ),
        ("sentences: [VTG, GSA]\nfields: [{field: lat}, {field: lon}]\n", "add RMC, GGA or GLL to sentences"),
        (
            "sentences: [RMC]\ncomplete_with: [RMC, GGA]\nfields: [{field: lat}, {field: lon}]\n",
            "complete_with names GGA, which is not read",
        ),
        (
            "sentences: [RMC]\ntalkers: [gps]\nfields: [{field: lat}, {field: lon}]\n",
            "talkers[0]: String should",
        ),
        ("sentences: [RMC]\nfields: [{field: lat}]\n", "needs the fields lat and lon"),
        ("sentences: [RMC]\nfields: [{field: lat}, {field: lon}, {field: heading}]\n", "fields[2] (heading)"),
        ("sentences: [GSV]\nfields: [{field: lat}, {field: lon}]\n", "sentences[0]: Input should be"),
    ],
)
def test_a_bad_nmea_profile_is_refused_naming_the_field(tmp_path: Path, body: str, says: str) -> None:
    path = tmp_path / "test_gps.yaml"
    path.write_text(NMEA_HEAD + body, encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_nmea_profile(path)
    assert str(path) in str(caught.value)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("missing", "fix"),
    [("source", "add source: the vendor document"), ("verified", "add verified: datasheet")],
)
def test_a_profile_that_does_not_say_where_it_comes_from_is_refused(
    tmp_path: Path, missing: str, fix: str
) -> None:
    head = "".join(line + "\n" for line in GOOD_HEAD.splitlines() if not line.startswith(f"{missing}:"))
    message = problem(tmp_path, "  - {field: v, table: input, address: 0, type: f32}\n", head)
    assert f"{missing}: Field required — fix: {fix}" in message


def test_verified_takes_only_the_three_kinds_of_check(tmp_path: Path) -> None:
    head = GOOD_HEAD.replace("verified: modelled", "verified: yes")
    message = problem(tmp_path, "  - {field: v, table: input, address: 0, type: f32}\n", head)
    assert "verified: Input should be 'datasheet', 'capture' or 'modelled'" in message


# tests/firmware_bridge/captures/nmea and captures/mbus; the LoRaWAN ones: the vendors' codec examples
# (captures/lorawan)
CAPTURED = {
    "gps_nmea",
    "emu_professional_375",
    "itron_cyble_water",
    "kamstrup_multical_601",
    "dingtek_df703",
    "milesight_em400_udl",
    "nwave_nps405",
}
MODELLED = {
    "eastron_sdm120",
    "ecodim_dali_gw2",
    "generic_dlms_meter",
    "jxbs_3001",
    "onboard_console",
    "parking_bay",
    "ticket_validator",
    "tuf_2000m",
    "waste_bin_fill",
    "water_quality_probe",
    "water_pump_station",
    "opc_40223_pump",  # its paths checked against the spec's example instance (captures/opcua)
}


@pytest.mark.parametrize("name", available_profiles(None))
def test_every_shipped_profile_says_where_it_comes_from(name: str) -> None:
    """The validator, console, bin, bay and probe are modelled maps; so is any map not checked."""
    profile = load_any_profile(name)
    expected = "modelled" if name in MODELLED else "capture" if name in CAPTURED else "datasheet"
    assert profile.verified == expected
    assert len(profile.source) > 40
    if profile.verified == "modelled":
        assert any(word in profile.source for word in ("No vendor document", "not found")), profile.source


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{field: a, table: holding, address: 0, type: i16, deadband: -1}", "deadband -1 is negative"),
        ("{field: a, table: holding, address: 0, type: i16, deadband: -5%}", "'-5%' is no deadband"),
        (
            "{field: a, table: holding, address: 0, type: i16, deadband: lots}",
            "a percentage of the last published",
        ),
        (
            "{field: a, table: coil, address: 0, type: bit, deadband: 1}",
            "a bit has no deadband: use on_change",
        ),
        (
            "{field: a, table: holding, address: 0, type: u32, counter: true, deadband: 1}",
            "remove its deadband",
        ),
        ("{field: a, table: holding, address: 0, type: u16, deadband: 1, report: on_change}", "keep one"),
        ("{field: a, table: holding, address: 0, type: u16, report: always}", "on_change"),
    ],
)
def test_a_deadband_that_cannot_be_used_says_how_to_write_it(tmp_path: Path, line: str, says: str) -> None:
    message = problem(tmp_path, f"  - {line}\n")
    assert "registers[0] (a)" in message
    assert says in message


def test_a_profile_gives_each_field_its_default_report_rule(tmp_path: Path) -> None:
    profile = load_profile(
        write(
            tmp_path,
            "  - {field: a, table: holding, address: 0, type: i16, deadband: 0.5}\n"
            "  - {field: b, table: holding, address: 1, type: i16, deadband: 5%}\n"
            "  - {field: c, table: holding, address: 2, type: u16, report: on_change}\n"
            "  - {field: d, table: holding, address: 3, type: u32, counter: true}\n"
            "  - {field: e, table: holding, address: 5, type: u16}\n",
        )
    )
    assert [s.report_rule for s in profile.registers] == [
        ReportRule("absolute", 0.5),
        ReportRule("percent", 5.0),
        ReportRule("change"),
        ReportRule("change"),
        None,
    ]
