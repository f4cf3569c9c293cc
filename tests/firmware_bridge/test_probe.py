"""The field engineer's probe against the simulators: a known value shows up under its word order."""

from __future__ import annotations

import pytest

from firmware_bridge.errors import DecodeError, DeviceTimeout
from firmware_bridge.probe import (
    Row,
    UnitAnswer,
    format_strings,
    format_table,
    format_values,
    format_wide_table,
    interpretations,
    parse_units,
    probe_profile,
    probe_registers,
    scan_units,
    string_views,
    wide_interpretations,
)
from firmware_bridge.simulators import ModbusDeviceSimulator
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to


def reading(rows: list[Row], address: int, type_: str, order: str | None) -> Row:
    (row,) = [r for r in rows if (r.address, r.type, r.order) == (address, type_, order)]
    return row


def orders_reading(rows: list[Row], type_: str, value: float) -> set[tuple[int, str | None]]:
    return {(r.address, r.order) for r in rows if r.type == type_ and r.value == value}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cdab_float_and_long_of_the_water_meter(transport: Transport) -> None:
    meter = ModbusDeviceSimulator(
        "tuf_2000m", unit=3, values={"flow_rate": 12.5, "positive_accumulator": 148213}
    )
    async with line_to(transport, [meter]) as line:
        words = await probe_registers(line, 3, "holding", 0, 10)
    assert words == [meter.image("holding").get(a, 0) for a in range(10)]
    rows = interpretations(words, 0)
    assert orders_reading(rows, "f32", 12.5) == {(0, "CDAB"), (1, "ABCD")}
    assert (8, "CDAB") in orders_reading(rows, "u32", 148213)
    assert reading(rows, 8, "i32", "CDAB").value == 148213
    # The same words read big-endian are no measurement: shown raw, not as a value.
    swapped = reading(rows, 0, "f32", "ABCD")
    assert swapped.value is None
    assert swapped.note.startswith("implausible")
    assert swapped.registers == (0x0000, 0x4148)
    lines = format_table(rows).splitlines()
    (at,) = [i for i, t in enumerate(lines) if t.rstrip().endswith(" 12.5") and "CDAB" in t]
    # The CDAB line follows the block head of address 0, which shows the raw words.
    assert lines[at - 1].split()[:5] == ["0", "0x0000", "0000", "4148", "0"]


async def test_abcd_float_of_the_energy_meter_in_input_registers() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", values={"voltage_l1": 230.5})
    async with line_to("tcp", [meter]) as line:
        words = await probe_registers(line, 1, "input", 0, 4)
    rows = interpretations(words, 0)
    assert reading(rows, 0, "f32", "ABCD").value == 230.5
    assert reading(rows, 0, "f32", "DCBA").value != 230.5


def test_single_registers_and_the_last_one() -> None:
    rows = interpretations([0xFFE7, 0x0370], 100)
    assert reading(rows, 100, "u16", None).value == 0xFFE7
    assert reading(rows, 100, "i16", None).value == -25
    assert {r.type for r in rows if r.address == 101} == {"u16", "i16"}  # no pair starts at the end
    assert len([r for r in rows if r.address == 100]) == 2 + 4 * 3
    assert format_table(rows).splitlines()[-1].split()[:5] == ["101", "0x0065", "0370", "880", "880"]


def test_nan_and_infinity_are_named() -> None:
    rows = interpretations([0x7FC0, 0x0000, 0x7F80, 0x0000], 0)
    assert reading(rows, 0, "f32", "ABCD").note == "nan"
    assert reading(rows, 2, "f32", "ABCD").note == "inf"
    assert reading(rows, 0, "u32", "ABCD").value == 0x7FC00000


async def test_counts_outside_one_read_are_refused() -> None:
    async with line_to("tcp", [ModbusDeviceSimulator("jxbs_3001")]) as line:
        with pytest.raises(ValueError, match=r"1\.\.125"):
            await probe_registers(line, 1, "holding", 0, 126)
        with pytest.raises(ValueError, match=r"1\.\.2000"):
            await probe_registers(line, 1, "coil", 0, 0)
        with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
            await probe_registers(line, 1, "holding", 0xFFFF, 2)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_probe_through_a_profile(transport: Transport) -> None:
    bin_sensor = ModbusDeviceSimulator("waste_bin_fill", unit=21, values={"tilt_alarm": 1})
    async with line_to(transport, [bin_sensor]) as line:
        values = await probe_profile(line, 21, bin_sensor.profile)
    assert values == bin_sensor.expected()
    text = format_values(bin_sensor.profile, values)
    assert "fill_level   63.5 %" in text
    assert "tilt_alarm   1" in text
    header = text.splitlines()[:2]
    assert header[0].startswith("profile waste_bin_fill: verified modelled; source: No vendor document")
    assert "modelled register map, not checked" in header[1]


async def test_probe_names_a_checked_map_and_leaves_write_only_registers_unread() -> None:
    """A datasheet-checked profile says so; a write-only setpoint is listed but never read."""
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=3)
    gateway = ModbusDeviceSimulator("ecodim_dali_gw2", unit=4)
    async with line_to("tcp", [meter, gateway]) as line:
        sdm = format_values(meter.profile, await probe_profile(line, 3, meter.profile))
        dali_values = await probe_profile(line, 4, gateway.profile)
    assert sdm.splitlines()[0].startswith("profile eastron_sdm630: verified datasheet; source: Eastron")
    assert "not checked" not in sdm.splitlines()[1]
    assert "lamp0_brightness" not in dali_values
    assert dali_values["lamp0_level"] == 254
    shown = format_values(gateway.profile, dali_values)
    (brightness,) = [line for line in shown.splitlines() if line.startswith("lamp0_brightness")]
    assert "(write-only)" in brightness
    assert not any(
        function == 3 and address == 3000 and count == 1 for function, address, count in gateway.requests
    )


async def test_probe_keeps_going_past_a_field_that_does_not_decode() -> None:
    meter = ModbusDeviceSimulator("tuf_2000m")
    meter.word_swapped = True
    async with line_to("tcp", [meter]) as line:
        values = await probe_profile(line, 1, meter.profile)
    assert isinstance(values["flow_rate"], DecodeError)
    assert values["signal_quality"] == 87
    flow = next(line for line in format_values(meter.profile, values).splitlines() if "flow_rate" in line)
    assert "ERROR" in flow


async def test_probe_of_a_silent_device_raises() -> None:
    meter = ModbusDeviceSimulator("tuf_2000m")
    meter.offline = True
    async with line_to("tcp", [meter]) as line:
        with pytest.raises(DeviceTimeout):
            await probe_profile(line, 1, meter.profile)


def test_64_bit_views_in_each_word_order() -> None:
    # 230.5 as float64 is 0x406CD000_00000000; the words sent as the four orders name them.
    rows = wide_interpretations([0x0000, 0x406C, 0xD000, 0x0000, 0x0000, 0x0001], 10)
    assert {r.address for r in rows} == {10, 11, 12}
    assert reading(rows, 11, "f64", "ABCD").value == 230.5
    assert reading(rows, 11, "u64", "ABCD").value == 0x406CD00000000000
    assert reading(rows, 12, "u64", "ABCD").value == 0xD000_0000_0000_0001
    assert reading(rows, 12, "i64", "ABCD").value == 0xD000_0000_0000_0001 - 2**64
    assert reading(rows, 12, "u64", "CDAB").value == 0x0001_0000_0000_D000  # words reversed
    assert reading(rows, 12, "u64", "BADC").value == 0x00D0_0000_0000_0100  # bytes swapped
    assert reading(rows, 12, "u64", "DCBA").value == 0x0100_0000_0000_00D0
    dcba = wide_interpretations([0x0000, 0x0000, 0x00D0, 0x6C40], 0)
    assert reading(dcba, 0, "f64", "DCBA").value == 230.5
    assert reading(dcba, 0, "f64", "ABCD").note.startswith("implausible")
    table = format_wide_table(rows).splitlines()
    (line,) = [t for t in table if t.split()[:6] == ["11", "406C", "D000", "0000", "0000", "ABCD"]]
    assert line.split()[-1] == "230.5"
    assert wide_interpretations([1, 2, 3], 0) == []


def test_text_views_in_both_byte_orders() -> None:
    words = [0x5344, 0x4D36, 0x3330, 0x0000, 0x0A41]  # "SDM630", two NULs, "\nA"
    assert string_views(words) == {"AB": "SDM630...A", "BA": "DS6M03..A."}
    assert format_strings(words, 0x40).splitlines() == [
        "ascii AB from 64: 'SDM630...A'",
        "ascii BA from 64: 'DS6M03..A.'",
    ]


async def test_text_of_the_console_shows_up_in_the_string_view() -> None:
    console = ModbusDeviceSimulator("onboard_console")
    text_spec = next(s for s in console.profile.registers if s.type == "string")
    console.set(text_spec.field, "LINE 12")
    async with line_to("tcp", [console]) as line:
        words = await probe_registers(line, 1, text_spec.table, text_spec.address, text_spec.register_count)
    view = string_views(words)["AB" if text_spec.order in ("ABCD", "BADC") else "BA"]
    assert view.startswith("LINE 12")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unit_scan_lists_who_answers(transport: Transport) -> None:
    meter = ModbusDeviceSimulator("parking_bay", unit=3)  # no holding registers: answers exception 02
    water = ModbusDeviceSimulator("tuf_2000m", unit=5)
    broken = ModbusDeviceSimulator("jxbs_3001", unit=9)
    broken.exception_code = 4
    silent = ModbusDeviceSimulator("jxbs_3001", unit=7)
    silent.offline = True
    async with line_to(transport, [meter, water, broken, silent], reply_timeout=0.05) as line:
        found = await scan_units(line, range(1, 12))
    assert found == [UnitAnswer(3, exception=2), UnitAnswer(5), UnitAnswer(9, exception=4)]
    assert [str(a) for a in found] == ["3 (exception 02)", "5", "9 (exception 04)"]


def test_unit_ranges() -> None:
    assert parse_units("1-3,7, 5") == [1, 2, 3, 5, 7]
    assert parse_units("247") == [247]
    with pytest.raises(ValueError, match="'x' is no unit id"):
        parse_units("1,x")
    with pytest.raises(ValueError, match="0 to 255"):
        parse_units("5-2")
