"""Golden M-Bus cases: real meters' telegrams (captures/mbus, from libmbus) decoded by CityGW agree,
record by record, with libmbus' own published decoding (.norm.xml); profiles pick the right records;
libmbus' malformed frames each give a clear error."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from firmware_bridge.mbus_frames import FrameError, Record, decode, profile_fields, vif_quantity
from firmware_bridge.profile import MbusProfile, load_mbus_profile

CAPTURES = Path(__file__).parent / "captures" / "mbus"
METERS = sorted(p.stem for p in CAPTURES.glob("*.hex"))
ERROR_FRAMES = sorted(p.stem for p in (CAPTURES / "error-frames").glob("*.hex"))
FUNCTIONS = {
    "Instantaneous value": "instantaneous",
    "Maximum value": "maximum",
    "Minimum value": "minimum",
    "Value during error state": "error",
    "Manufacturer specific": "manufacturer",
}
# libmbus' unit names where pyMeterBus says the same thing otherwise.
UNITS = {"°C": "C", "s": "seconds"}
# The profiles checked against captures, with the captures of their meter.
PROFILE_CAPTURES = {
    "kamstrup_multical_601": ["kamstrup_multical_601"],
    "itron_cyble_water": ["itron_cyble_m-bus_v1.4_water", "itron_cyble_m-bus_v1.4_cold_water"],
    "emu_professional_375": ["EMU_EMU-Professional-375-M-Bus"],
}


def frame(name: str, folder: Path = CAPTURES) -> bytes:
    return bytes.fromhex((folder / f"{name}.hex").read_text("utf-8"))


def libmbus_xml(name: str) -> ET.Element:
    """libmbus' decoding; its files declare ISO-8859-1 but hold UTF-8 (°C), so the text is read as such."""
    text = (CAPTURES / f"{name}.norm.xml").read_text("utf-8")
    return ET.fromstring(text[text.index("?>") + 2 :])


def libmbus_records(name: str) -> list[ET.Element]:
    """libmbus' decoded records, without its "More records follow" marker (no data: a flag)."""
    root = libmbus_xml(name)
    return [r for r in root.iter("DataRecord") if r.findtext("Function") != "More records follow"]


def libmbus_value(element: ET.Element) -> float | str:
    text = element.findtext("Value") or ""
    try:
        return float(text)
    except ValueError:
        return text


def same_value(ours: object, theirs: float | str) -> bool:
    if isinstance(theirs, float):
        return isinstance(ours, int | float) and ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)
    if isinstance(ours, str) and theirs.endswith("Z"):  # libmbus writes dates as UTC timestamps
        return dt.datetime.fromisoformat(ours) == dt.datetime.fromisoformat(theirs[:-1])
    return ours == theirs


def test_the_captures_cover_ten_meters_of_several_vendors() -> None:
    vendors = {decode(frame(name)).manufacturer for name in METERS}
    assert len(METERS) >= 10
    assert len(vendors) == 14


@pytest.mark.parametrize("name", METERS)
def test_every_record_agrees_with_libmbus(name: str) -> None:
    telegram = decode(frame(name))
    theirs = libmbus_records(name)
    assert len(telegram.records) == len(theirs)
    for index, (ours, expected) in enumerate(zip(telegram.records, theirs, strict=True)):
        where = f"{name} record {index}"
        assert ours.function == FUNCTIONS[expected.findtext("Function") or ""], where
        if ours.function == "manufacturer":
            assert ours.value == expected.findtext("Value"), where
            continue
        assert ours.storage == int(expected.findtext("StorageNumber") or 0), where
        assert ours.tariff == int(expected.findtext("Tariff") or 0), where
        assert ours.subunit == int(expected.findtext("Device") or 0), where
        assert same_value(ours.value, libmbus_value(expected)), f"{where}: {ours.value!r} vs libmbus"
        unit = expected.findtext("Unit") or ""
        if unit not in ("", "-"):
            assert ours.unit == UNITS.get(unit, unit), where


@pytest.mark.parametrize("name", METERS)
def test_the_meter_identity_agrees_with_libmbus(name: str) -> None:
    telegram = decode(frame(name))
    info = libmbus_xml(name).find("SlaveInformation")
    assert info is not None
    assert int(telegram.id) == int(info.findtext("Id") or -1)
    assert telegram.manufacturer == info.findtext("Manufacturer")
    assert telegram.version == int(info.findtext("Version") or -1)
    assert telegram.access == int(info.findtext("AccessNumber") or -1)
    assert telegram.secondary.startswith(telegram.id)


def test_more_records_follow_is_seen_in_a_real_first_telegram() -> None:
    assert decode(frame("abb_delta")).more_follow
    assert decode(frame("ELV-Elvaco-CMa10")).more_follow
    assert not decode(frame("kamstrup_multical_601")).more_follow


def expected_field(
    profile: MbusProfile, field: str, records: list[ET.Element], telegram: list[Record]
) -> float | str:
    """The field's value computed from libmbus' record (found at the index of the matching record)."""
    spec = next(s for s in profile.fields if s.field == field)
    key = (vif_quantity(spec.vif), *spec.key[1:])
    index = next(
        i
        for i, r in enumerate(telegram)
        if (vif_quantity(r.vif), r.function, r.storage, r.tariff, r.subunit) == key
    )
    value = libmbus_value(records[index])
    return value * spec.scale if isinstance(value, float) and spec.type != "string" else value


@pytest.mark.parametrize(
    ("profile_name", "capture"), [(p, c) for p, captures in PROFILE_CAPTURES.items() for c in captures]
)
def test_a_profile_reads_its_meter_as_libmbus_decodes_it(profile_name: str, capture: str) -> None:
    profile = load_mbus_profile(profile_name)
    telegram = decode(frame(capture))
    fields, missing = profile_fields(telegram.records, profile)
    assert missing == {}
    assert set(fields) == {s.field for s in profile.fields}
    assert telegram.manufacturer == profile.manufacturer
    theirs = libmbus_records(capture)
    for name, value in fields.items():
        expected = expected_field(profile, name, theirs, list(telegram.records))
        if isinstance(expected, float):
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), name
        else:
            assert same_value(value, expected), name


def test_kamstrup_fields_have_their_published_values() -> None:
    """Spelled out once, from kamstrup_multical_601.norm.xml: 37351000 Wh, 561.08 m^3, 101.69 °C."""
    fields, _ = profile_fields(
        decode(frame("kamstrup_multical_601")).records, load_mbus_profile("kamstrup_multical_601")
    )
    assert fields["energy_kwh"] == 37351.0
    assert fields["volume_m3"] == 561.08
    assert fields["flow_temperature"] == 101.69
    assert fields["power_max_kw"] == 44.8
    assert fields["meter_time"] == "2011-01-05T15:26"


def test_a_meter_of_another_resolution_matches_its_profile() -> None:
    """The cold-water Cyble counts volume in 0.1 m^3 steps (VIF 15), the profile names VIF 14."""
    records = decode(frame("itron_cyble_m-bus_v1.4_cold_water")).records
    assert [r.vif for r in records if r.unit == "m^3"] == ["15", "957F", "15"]
    fields, _ = profile_fields(records, load_mbus_profile("itron_cyble_water"))
    assert fields["volume_m3"] == 453.5
    assert vif_quantity("14") == vif_quantity("15") != vif_quantity("13FD")


def test_a_missing_record_leaves_out_its_field_only() -> None:
    """The Kamstrup profile read over an EMU telegram: what is there is kept, the rest says why."""
    profile = load_mbus_profile("kamstrup_multical_601")
    fields, missing = profile_fields(decode(frame("EMU_EMU-Professional-375-M-Bus")).records, profile)
    assert fields == {"power_kw": -0.002}  # the EMU's total power (VIF 2B, W): the same quantity
    assert set(missing) == {s.field for s in profile.fields} - {"power_kw"}
    assert "no record with vif 06, instantaneous, storage 0, tariff 0" in missing["energy_kwh"]
    fields, missing = profile_fields(decode(frame("kamstrup_multical_601")).records, profile)
    assert set(fields) == {s.field for s in profile.fields}
    assert missing == {}


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("premature_end_of_data1", "record 2 (DIF 8B60): 0 of its 3 data bytes"),
        ("premature_end_of_dif1", "the DIF announces a DIFE that is not there"),
        ("premature_end_of_vif1", "the VIF or a VIFE it announces is missing"),
        ("too_many_vife", "11 VIFEs, at most 10 allowed"),
        ("too_short_header", "variable data header of 5 bytes, not 12"),
        ("application_busy", "application error (CI 70, code 8: application busy)"),
        ("too_many_dife", "Too many DIFE"),
    ],
)
def test_a_malformed_telegram_gets_a_clear_error(name: str, says: str) -> None:
    data = frame(name, CAPTURES / "error-frames")
    with pytest.raises(FrameError, match="received 68") as caught:
        decode(data)
    assert says in str(caught.value)


def test_every_error_frame_has_a_case() -> None:
    assert len(ERROR_FRAMES) == 7


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda b: b[:-2] + bytes([b[-2] ^ 1]) + b[-1:], "checksum"),
        (lambda b: b[:40], "truncated frame: 40 of"),
        (lambda b: b[:1] + bytes([b[1] + 1]) + b[2:], "length bytes differ"),
        (lambda b: b[:-1] + b"\x17", "stop byte 17, not 16"),
        (lambda b: b"\x42" + b[1:], "no M-Bus frame starts with 42"),
    ],
)
def test_a_damaged_frame_names_what_is_wrong(damage: object, says: str) -> None:
    data = damage(frame("kamstrup_multical_601"))  # type: ignore[operator]
    with pytest.raises(FrameError, match=says):
        decode(data)


def test_decoding_leaves_the_programs_logging_alone() -> None:
    """pyMeterBus runs logging.basicConfig(INFO) on import; CityGW's import of it does not."""
    code = "import logging, firmware_bridge.mbus; r = logging.getLogger(); print(len(r.handlers), r.level)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", str(logging.WARNING)]
