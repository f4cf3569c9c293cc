"""Field capture → golden case: a simulated device captured over TCP and RTU, checked, altered, replayed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from firmware_bridge.capture import (
    CAPTURE_FILE,
    EXPECTED_FILE,
    INFO_FILE,
    CaptureError,
    CaptureInfo,
    Exchange,
    capture_device,
    check_case,
    decode_capture,
    load_case,
    write_case,
)
from firmware_bridge.errors import DeviceExceptionResponse, DeviceTimeout
from firmware_bridge.probe import probe_registers
from firmware_bridge.profile import AddressRange, Profile, load_profile
from firmware_bridge.simulators import CaptureReplay, ModbusDeviceSimulator
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to

METER_VALUES = {"voltage_l1": 230.5, "total_power": 7450.0, "import_energy_kwh": 15234.5}


def info_for(profile: Profile, line: str, unit: int) -> CaptureInfo:
    return CaptureInfo(
        profile=profile.model,
        profile_file=profile.model,
        profile_sha256="0" * 64,
        profile_verified=profile.verified,
        origin="simulator",
        line=line,
        unit=unit,
        captured_at=datetime(2026, 12, 6, 22, 0, tzinfo=UTC),
        tool="citygw test",
        operator="pytest",
    )


async def capture_case(sim: ModbusDeviceSimulator, folder: Path, transport: Transport = "tcp") -> Path:
    async with line_to(transport, [sim]) as line:
        exchanges = await capture_device(line, sim.unit, sim.profile)
        name = line.name
    case = folder / "testcases" / sim.profile.model
    decoded = decode_capture(sim.profile, exchanges)
    write_case(case, info_for(sim.profile, name, sim.unit), sim.profile, exchanges, decoded)
    return case


def without_timing(exchanges: tuple[Exchange, ...] | list[Exchange]) -> list[Exchange]:
    return [e.model_copy(update={"ms": 0.0}) for e in exchanges]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_capture_is_a_case_that_passes(transport: Transport, tmp_path: Path) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=7, values=METER_VALUES)
    folder = await capture_case(meter, tmp_path, transport)
    assert sorted(p.name for p in folder.iterdir()) == sorted([CAPTURE_FILE, EXPECTED_FILE, INFO_FILE])
    lines = [json.loads(text) for text in (folder / CAPTURE_FILE).read_text().splitlines()]
    # One line per planned read, as the planner makes them for the profile: holding 2+2, then input.
    assert [(d["function"], d["address"], d["count"]) for d in lines] == [
        (3, 2, 2),
        (4, 0, 18),
        (4, 52, 24),
        (4, 342, 2),
    ]
    voltage = lines[1]
    assert voltage["unit"] == 7
    assert voltage["registers"][:2] == ["4366", "8000"]  # 230.5 as float32 ABCD
    assert all(d["ms"] >= 0 for d in lines)
    expected = yaml.safe_load((folder / EXPECTED_FILE).read_text())
    assert expected["values"]["voltage_l1"] == 230.5
    assert expected["values"]["voltage_l2"] == 229.8  # float32 shown as a display shows it
    assert expected["errors"] == {}
    case = load_case(folder)
    assert case.info.origin == "simulator"
    assert case.info.line.startswith("tcp://" if transport == "tcp" else "/dev/")
    assert check_case(case, meter.profile) == []


async def test_bits_are_captured_as_bits(tmp_path: Path) -> None:
    bay = ModbusDeviceSimulator("parking_bay", values={"occupied": True})
    folder = await capture_case(bay, tmp_path)
    lines = [json.loads(text) for text in (folder / CAPTURE_FILE).read_text().splitlines()]
    (bits,) = [d for d in lines if d["function"] == 2]
    assert bits["bits"][0] == 1
    assert "registers" not in bits
    assert load_case(folder).values["occupied"].value is True
    assert check_case(load_case(folder), bay.profile) == []


async def test_one_altered_register_fails_the_case_naming_the_field(tmp_path: Path) -> None:
    folder = await capture_case(ModbusDeviceSimulator("eastron_sdm630", values=METER_VALUES), tmp_path)
    capture = folder / CAPTURE_FILE
    capture.write_text(capture.read_text().replace('"4366","8000"', '"4367","8000"', 1))
    problems = check_case(load_case(folder), load_profile("eastron_sdm630"))
    assert len(problems) == 1, problems
    assert problems[0].startswith("voltage_l1: expected 230.5, decoded 231.5 from input 0x0000 [4367 8000]")


async def test_a_profile_change_that_changes_decoding_fails_the_case(tmp_path: Path) -> None:
    folder = await capture_case(ModbusDeviceSimulator("eastron_sdm630", values=METER_VALUES), tmp_path)
    profile = load_profile("eastron_sdm630")
    scaled = [
        s.model_copy(update={"scale": 10.0}) if s.field == "total_power" else s for s in profile.registers
    ]
    changed = profile.model_copy(update={"registers": scaled})
    (problem,) = check_case(load_case(folder), changed)
    assert problem.startswith("total_power: expected 7450.0, decoded 74500.0")
    gained = profile.model_copy(update={"registers": [*profile.registers[:-1]]})
    dropped = profile.registers[-1].field
    (problem,) = check_case(load_case(folder), gained)
    assert problem.startswith(f"{dropped}: expected")
    assert "reads no such field" in problem


async def test_expected_values_may_be_edited_from_the_display(tmp_path: Path) -> None:
    folder = await capture_case(ModbusDeviceSimulator("eastron_sdm630", values=METER_VALUES), tmp_path)
    expected = folder / EXPECTED_FILE
    data = yaml.safe_load(expected.read_text())
    data["values"]["frequency"] = {"value": 50.0, "within": 0.05}  # the display shows 50.0 Hz
    expected.write_text(yaml.safe_dump(data))
    assert check_case(load_case(folder), load_profile("eastron_sdm630")) == []
    data["values"]["frequency"] = {"value": 49.9, "within": 0.05}
    expected.write_text(yaml.safe_dump(data))
    (problem,) = check_case(load_case(folder), load_profile("eastron_sdm630"))
    assert problem.startswith("frequency: expected 49.9, decoded 50.0")


async def test_a_refused_merged_read_is_recorded_and_its_fields_read_alone(tmp_path: Path) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", values=METER_VALUES)
    meter.holes = [AddressRange(table="input", start=0x36, end=0x3B)]  # inside the 0x34+24 read
    folder = await capture_case(meter, tmp_path)
    case = load_case(folder)
    refused = [e for e in case.exchanges if e.exception is not None]
    assert [(e.address, e.count, e.exception) for e in refused] == [(0x34, 24, 2)]
    alone = [(e.address, e.count) for e in case.exchanges if e.table == "input" and 0x34 <= e.address < 0x4C]
    assert alone == [(0x34, 24), (0x34, 2), (0x3E, 2), (0x46, 2), (0x48, 2), (0x4A, 2)]
    assert case.errors == {}
    assert check_case(case, meter.profile) == []
    async with line_to("tcp", [CaptureReplay(case)]) as line:
        again = await capture_device(line, case.info.unit, meter.profile)
    assert without_timing(again) == without_timing(case.exchanges)


async def test_a_field_the_device_refuses_is_an_expected_error(tmp_path: Path) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", values=METER_VALUES)
    meter.holes = [AddressRange(table="input", start=0x156, end=0x157)]
    folder = await capture_case(meter, tmp_path)
    case = load_case(folder)
    assert set(case.errors) == {"total_energy_kwh"}
    assert "exception 02" in case.errors["total_energy_kwh"]
    assert check_case(case, meter.profile) == []


async def test_a_silent_device_is_no_capture() -> None:
    meter = ModbusDeviceSimulator("tuf_2000m")
    meter.offline = True
    async with line_to("tcp", [meter]) as line:
        with pytest.raises(DeviceTimeout, match="no answer to any of"):
            await capture_device(line, 1, meter.profile)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_replay_answers_as_captured_and_a_second_capture_equals_the_first(
    transport: Transport, tmp_path: Path
) -> None:
    meter = ModbusDeviceSimulator("tuf_2000m", unit=4, values={"flow_rate": 12.5})
    meter.delay = 0.04  # a slow device: the replay keeps its pace
    case = load_case(await capture_case(meter, tmp_path, transport))
    assert all(e.ms >= 40 for e in case.exchanges)
    replay = CaptureReplay(case)
    async with line_to(transport, [replay]) as line:
        again = await capture_device(line, 4, meter.profile)
    assert without_timing(again) == without_timing(case.exchanges)
    assert all(b.ms >= 0.9 * a.ms for a, b in zip(case.exchanges, again, strict=True))
    assert decode_capture(meter.profile, again)["flow_rate"] == 12.5


async def test_a_replay_refuses_what_was_never_captured(tmp_path: Path) -> None:
    case = load_case(await capture_case(ModbusDeviceSimulator("tuf_2000m"), tmp_path))
    async with line_to("tcp", [CaptureReplay(case)]) as line:
        assert await probe_registers(line, 1, "holding", 0, 2) == [0x0000, 0x4148]  # part of a read
        with pytest.raises(DeviceExceptionResponse, match="exception response 02"):
            await probe_registers(line, 1, "holding", 40, 2)


def test_a_broken_capture_line_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    profile = load_profile("tuf_2000m")
    good = Exchange(unit=1, function=3, address=0, count=1, registers=("0001",), ms=1.0)
    write_case(folder, info_for(profile, "tcp://x:502", 1), profile, [good], {})
    (folder / CAPTURE_FILE).write_text(
        good.line() + "\n" + '{"unit":1,"function":3,"address":0,"count":2,"registers":["0001"],"ms":1}\n'
    )
    with pytest.raises(CaptureError, match=r"capture\.jsonl:2: count is 2 but 1 values are given"):
        load_case(folder)
    (folder / CAPTURE_FILE).write_text('{"unit":1,"function":3,"address":0,"count":1,"ms":1}\n')
    with pytest.raises(CaptureError, match=r":1: give exactly one of registers, bits, exception or timeout"):
        load_case(folder)
    (folder / CAPTURE_FILE).write_text("not json\n")
    with pytest.raises(CaptureError, match=r":1: not JSON"):
        load_case(folder)


def test_a_case_is_never_overwritten(tmp_path: Path) -> None:
    profile = load_profile("tuf_2000m")
    write_case(tmp_path, info_for(profile, "tcp://x:502", 1), profile, [], {})
    with pytest.raises(FileExistsError, match="already holds files"):
        write_case(tmp_path, info_for(profile, "tcp://x:502", 1), profile, [], {})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_recorded_silence_and_exceptions_are_replayed(transport: Transport, tmp_path: Path) -> None:
    case = load_case(await capture_case(ModbusDeviceSimulator("tuf_2000m"), tmp_path))
    exchanges = list(case.exchanges)
    exchanges[1] = exchanges[1].model_copy(update={"registers": None, "timeout": True, "ms": 300.0})
    exchanges[2] = exchanges[2].model_copy(update={"registers": None, "exception": 4})
    silent = replace(case, exchanges=tuple(exchanges))
    async with line_to(transport, [CaptureReplay(silent)]) as line:
        again = await capture_device(line, 1, load_profile("tuf_2000m"))
    assert without_timing(again) == without_timing(exchanges)
    decoded = decode_capture(load_profile("tuf_2000m"), again)
    assert str(decoded["temperature_inlet"]) == "temperature_inlet: holding 32+4 got no answer"
    assert str(decoded["error_code"]) == "error_code: holding 71+1 got exception 04"
    problems = check_case(silent, load_profile("tuf_2000m"))
    assert [p.split(":")[0] for p in problems] == ["temperature_inlet", "temperature_outlet", "error_code"]
