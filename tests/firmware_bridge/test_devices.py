"""Device behaviour the golden cases cannot show: lamps following a write, counters growing."""

from __future__ import annotations

import asyncio
import time

import pytest

from firmware_bridge import dali
from firmware_bridge.simulators import DaliGatewaySimulator, ModbusDeviceSimulator
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dimming_a_street_lamp_changes_its_actual_level(transport: Transport) -> None:
    cabinet = ModbusDeviceSimulator("ecodim_dali_gw2", unit=5)
    async with line_to(transport, [cabinet]) as line:
        # The brightness register is write-only: nothing to read back from it.
        assert await line.write(5, cabinet.profile, "lamp1_brightness", 85) is None
        assert cabinet.requests[-1] == (6, 3005, 1)
        values = await line.read(5, cabinet.profile, poll="fast")
        assert values["lamp1_level"] == 85
        assert values["lamp0_level"] == 254
        with pytest.raises(ValueError, match=r"outside the allowed range 0.0..254.0"):
            await line.write(5, cabinet.profile, "lamp1_brightness", 255)
        with pytest.raises(ValueError, match="read-only"):
            await line.write(5, cabinet.profile, "lamp1_level", 10)
    assert cabinet.requests[0] == (6, 3005, 1)  # one register: FC06, as the gateway expects


async def test_tap_counters_grow_and_the_status_word_stays() -> None:
    validator = ModbusDeviceSimulator("ticket_validator", animate=True, time_scale=360_000)
    async with line_to("tcp", [validator]) as line:
        first = await line.read(1, validator.profile)
        await asyncio.sleep(0.05)
        second = await line.read(1, validator.profile)
    for card in ("resident", "student", "pupil", "concession"):
        assert second[f"taps_{card}"] > first[f"taps_{card}"]  # type: ignore[operator]
        assert isinstance(second[f"taps_{card}"], int)
    assert second["status"] == first["status"] == 0


def test_an_animated_device_may_start_at_a_chosen_time_of_day() -> None:
    """Pollution follows the day from the time given: rising towards the morning rush hour, then falling."""
    values: dict[float, int] = {}
    for hour in (4.0, 12.0):
        station = ModbusDeviceSimulator("vaisala_aqt530", animate=True, time_scale=3600, start_s=hour * 3600)
        time.sleep(0.2)  # 12 simulated minutes
        station.advance()
        value = station.get("co")
        assert isinstance(value, int)
        values[hour] = value
    assert values[4.0] > 310 > values[12.0]  # the profile's typical 310 ppb at the start


def test_masked_values_share_their_register_in_the_device() -> None:
    bin_sensor = ModbusDeviceSimulator("waste_bin_fill", values={"tilt_alarm": 1, "fire_alarm": 1})
    assert bin_sensor.image("holding")[3] == 0b11
    with pytest.raises(ValueError, match="does not fit in mask 1"):
        bin_sensor.set("tilt_alarm", 2)


async def test_the_dali_gateway_fades_to_a_written_level_and_reports_lamp_and_ballast_failures() -> None:
    cabinet = DaliGatewaySimulator(unit=5, fade_s=0.4, values={"lamp1_brightness": 0})
    watched = ["lamp1_level", "lamp1_status", "lamp2_level", "lamp2_status"]
    async with line_to("tcp", [cabinet]) as line:
        assert await line.read_fields(5, cabinet.profile, watched) == {
            "lamp1_level": 0,
            "lamp1_status": 0,
            "lamp2_level": 170,
            "lamp2_status": dali.LAMP_ON,
        }
        await line.write(5, cabinet.profile, "lamp1_brightness", 200)
        await asyncio.sleep(0.15)
        fading = await line.read_fields(5, cabinet.profile, watched)
        assert 0 < fading["lamp1_level"] < 200  # type: ignore[operator]
        assert fading["lamp1_status"] == dali.LAMP_ON | dali.FADE_RUNNING
        await asyncio.sleep(0.35)
        assert (await line.read_fields(5, cabinet.profile, ["lamp1_level", "lamp1_status"])) == {
            "lamp1_level": 200,
            "lamp1_status": dali.LAMP_ON,
        }
        cabinet.fail(2)
        cabinet.fail(1, ballast=True)
        dark = await line.read_fields(5, cabinet.profile, watched)
        assert dark == {
            "lamp1_level": 0,
            "lamp1_status": dali.BALLAST_FAIL,
            "lamp2_level": 0,
            "lamp2_status": dali.LAMP_FAIL,
        }
        await line.write(5, cabinet.profile, "lamp2_brightness", 254)  # asked, but the lamp is dead
        assert (await line.read_fields(5, cabinet.profile, ["lamp2_level"]))["lamp2_level"] == 0
        cabinet.repair(2)
        assert (await line.read_fields(5, cabinet.profile, ["lamp2_level", "lamp2_status"])) == {
            "lamp2_level": 254,
            "lamp2_status": dali.LAMP_ON,
        }
    with pytest.raises(ValueError, match=r"no lamp 9 \(lamps: \[0, 1, 2, 3\]\)"):
        cabinet.fail(9)
