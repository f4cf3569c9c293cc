"""Decoding and encoding registers: a vector table of wire bytes → value for every word order."""

from __future__ import annotations

import math

import pytest

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import DecodeError
from firmware_bridge.profile import RegisterSpec
from firmware_bridge.registers import BadFieldValue, decode, decode_raw, encode


def spec(type_: str, order: str = "ABCD", **extra: object) -> RegisterSpec:
    return RegisterSpec.model_validate(
        {"field": "x", "table": "holding", "address": 0, "type": type_, "order": order, **extra}
    )


def registers(wire: str) -> list[int]:
    """Register values from the bytes as they travel in the response (hex, spaces ignored)."""
    data = bytes.fromhex(wire)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# (type, order, wire bytes, value)
VECTORS: list[tuple[str, str, str, FieldValue]] = [
    ("u16", "ABCD", "12 34", 0x1234),
    ("u16", "BADC", "34 12", 0x1234),
    ("i16", "ABCD", "FF DD", -35),
    ("i16", "BADC", "DD FF", -35),
    ("u32", "ABCD", "11 22 33 44", 0x11223344),
    ("u32", "CDAB", "33 44 11 22", 0x11223344),
    ("u32", "BADC", "22 11 44 33", 0x11223344),
    ("u32", "DCBA", "44 33 22 11", 0x11223344),
    ("i32", "ABCD", "FF FF FF FE", -2),
    ("i32", "CDAB", "FF FE FF FF", -2),
    ("i32", "BADC", "FF FF FE FF", -2),
    ("i32", "DCBA", "FE FF FF FF", -2),
    ("f32", "ABCD", "43 66 80 00", 230.5),
    ("f32", "CDAB", "80 00 43 66", 230.5),
    ("f32", "BADC", "66 43 00 80", 230.5),
    ("f32", "DCBA", "00 80 66 43", 230.5),
    ("f32", "ABCD", "C1 48 00 00", -12.5),
    ("u64", "ABCD", "01 02 03 04 05 06 07 08", 0x0102030405060708),
    ("u64", "CDAB", "07 08 05 06 03 04 01 02", 0x0102030405060708),
    ("u64", "BADC", "02 01 04 03 06 05 08 07", 0x0102030405060708),
    ("u64", "DCBA", "08 07 06 05 04 03 02 01", 0x0102030405060708),
    ("i64", "ABCD", "FF FF FF FF FF FF FF FF", -1),
    ("f64", "ABCD", "3F F8 00 00 00 00 00 00", 1.5),
    ("f64", "CDAB", "00 00 00 00 00 00 3F F8", 1.5),
    ("f64", "BADC", "F8 3F 00 00 00 00 00 00", 1.5),
    ("f64", "DCBA", "00 00 00 00 00 00 F8 3F", 1.5),
]


@pytest.mark.parametrize(("type_", "order", "wire", "value"), VECTORS)
def test_decode_vector(type_: str, order: str, wire: str, value: FieldValue) -> None:
    decoded = decode(spec(type_, order), registers(wire))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(("type_", "order", "wire", "value"), VECTORS)
def test_encode_vector(type_: str, order: str, wire: str, value: FieldValue) -> None:
    assert encode(spec(type_, order), value) == registers(wire)


@pytest.mark.parametrize(
    ("order", "wire"),
    [("ABCD", "53 44 4D 36 33 30 00 00"), ("BADC", "44 53 36 4D 30 33 00 00")],
)
def test_string(order: str, wire: str) -> None:
    string = spec("string", order, count=4)
    assert decode(string, registers(wire)) == "SDM630"
    assert encode(string, "SDM630") == registers(wire)


def test_scale_keeps_the_decimals_of_the_register() -> None:
    pm25 = spec("i16", scale=0.1)
    assert decode(pm25, [231]) == 23.1
    assert decode(pm25, registers("FF DD")) == -3.5
    assert encode(pm25, 23.1) == [231]


def test_offset_and_scale() -> None:
    kelvin = spec("u16", scale=0.01, offset=-273.15)
    assert decode(kelvin, [29315]) == 20.0
    assert encode(kelvin, 20.0) == [29315]


def test_unscaled_integer_stays_int_and_scaled_becomes_float() -> None:
    assert type(decode(spec("u16"), [7])) is int
    assert type(decode(spec("u16", scale=2), [7])) is float


@pytest.mark.parametrize("wire", ["7F C0 00 00", "7F 80 00 00", "FF 80 00 00"])
def test_nan_and_infinity_are_bad_values_of_their_field_only(wire: str) -> None:
    with pytest.raises(BadFieldValue, match="no valid measurement"):
        decode(spec("f32"), registers(wire))


def test_a_value_scaled_beyond_a_float_is_a_bad_value_of_its_field_only() -> None:
    """A finite register under an extreme scale: never an infinity in a reading (the poller relies on it)."""
    with pytest.raises(BadFieldValue, match="scaled is inf"):
        decode(spec("f32", scale=1e300), encode(spec("f32"), 1e10))


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected 2"):
        decode_raw(spec("f32"), [1])


def test_bits() -> None:
    coil = RegisterSpec(field="lamp_on", table="coil", address=3, type="bit")
    assert decode(coil, [1]) is True
    assert encode(coil, False) == [0]


@pytest.mark.parametrize(("type_", "value"), [("u16", 70000), ("u16", -1), ("i16", 40000)])
def test_value_that_does_not_fit(type_: str, value: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(spec(type_), value)


def test_float32_round_trip_shows_float32_precision() -> None:
    f32 = spec("f32")
    value = decode(f32, encode(f32, 231.2))
    assert isinstance(value, float)
    assert value != 231.2
    assert math.isclose(value, 231.2, rel_tol=1e-7)


def test_mask_and_shift_pick_bytes_of_a_register() -> None:
    assert decode(spec("u16", mask=0xFF), [0x0252]) == 0x52
    assert decode(spec("u16", mask=0xFF, shift=8), [0x0252]) == 0x02
    assert encode(spec("u16", mask=0xFF, shift=8), 2) == [0x0200]
    assert decode(spec("u32", mask=0xF, shift=16), [0x0003, 0x0000]) == 3


def test_word_swapped_float_is_a_decode_error_naming_the_order() -> None:
    # 12.5 is 0x41480000; sent with the other word order it reads as 2.3e-41.
    with pytest.raises(DecodeError, match=r"check the word order \(ABCD\)") as caught:
        decode(spec("f32"), [0x0000, 0x4148])
    assert not isinstance(caught.value, BadFieldValue)  # every value of the device is suspect
    assert decode(spec("f32"), [0x0000, 0x0000]) == 0.0


def test_value_outside_the_device_range_is_a_bad_value_of_its_field_only() -> None:
    with pytest.raises(BadFieldValue, match=r"outside the device's range 0\.0\.\.99\.0"):
        decode(spec("u16", min=0, max=99), [100])
    assert decode(spec("u16", min=0, max=99), [99]) == 99
