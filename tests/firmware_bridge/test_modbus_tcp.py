"""ModbusLine over Modbus TCP against the simulators: exact values, faults, writes, reconnects."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from citygw.contract.wire import DeviceState
from firmware_bridge.errors import DecodeError, DeviceExceptionResponse, DeviceTimeout, LineUnavailable
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import available_profiles
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_tcp

TIMEOUT = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_every_shipped_profile_reads_exactly() -> None:
    sims = [ModbusDeviceSimulator(name, unit=i + 1) for i, name in enumerate(available_profiles())]
    async with (
        serve_tcp(sims) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        for sim in sims:
            assert await line.read(sim.unit, sim.profile) == sim.expected(), sim.profile.model


async def test_values_set_on_the_device_are_read_back() -> None:
    aq = ModbusDeviceSimulator(
        "vaisala_aqt530", unit=7, values={"pm25": 12.3, "temperature": -14.8, "no2": 41}
    )
    async with (
        serve_tcp([aq]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        values = await line.read(7, aq.profile)
        assert (values["pm25"], values["temperature"], values["no2"]) == (12.3, -14.8, 41)
        aq.set("pm25", 55.5)
        assert (await line.read(7, aq.profile, poll="fast"))["pm25"] == 55.5


async def test_sdm630_is_read_in_few_requests() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        await line.read(1, meter.profile, poll=("fast", "slow"))
    assert meter.requests == [(4, 0x00, 18), (4, 0x34, 24), (4, 0x156, 2)]


async def test_poll_classes_select_fields() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        slow = await line.read(1, meter.profile, poll="slow")
    assert set(slow) == {"import_energy_kwh", "export_energy_kwh", "total_energy_kwh"}


async def test_dead_device_times_out_within_the_timeout() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    meter.offline = True
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        started = time.monotonic()
        with pytest.raises(DeviceTimeout) as caught:
            await line.read(1, meter.profile, poll="fast")
        assert time.monotonic() - started < TIMEOUT + 0.2
        assert caught.value.state is DeviceState.TIMEOUT
        assert "no answer within 0.3 s" in str(caught.value)
        meter.offline = False
        assert await line.read(1, meter.profile, poll="fast") == {
            k: v for k, v in meter.expected().items() if meter.profile.register(k).poll == "fast"
        }


async def test_exception_code_becomes_exception_response() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    meter.exception_code = 2
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        with pytest.raises(DeviceExceptionResponse) as caught:
            await line.read(1, meter.profile)
    assert caught.value.code == 2
    assert caught.value.state is DeviceState.EXCEPTION
    assert "02 illegal data address" in str(caught.value)


async def test_reading_past_the_device_map_is_illegal_address() -> None:
    aq = ModbusDeviceSimulator("jxbs_3001")
    async with (
        serve_tcp([aq]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        with pytest.raises(DeviceExceptionResponse, match="02 illegal data address"):
            await line.read(1, ModbusDeviceSimulator("vaisala_aqt530").profile)


async def test_unit_nobody_simulates_gets_gateway_exception() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        with pytest.raises(DeviceExceptionResponse, match="0B gateway target"):
            await line.read(42, meter.profile)


async def test_a_field_that_does_not_decode_is_left_out_and_the_rest_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = ModbusDeviceSimulator("tuf_2000m", values={"flow_rate": float("nan"), "signal_quality": 120})
    healthy = ModbusDeviceSimulator("tuf_2000m").expected()
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        with caplog.at_level(logging.WARNING, logger="firmware_bridge.modbus"):
            first = await line.read(1, meter.profile)
            second = await line.read(1, meter.profile)
        errors = line.field_errors(1)
        meter.set("flow_rate", 3.5)
        third = await line.read(1, meter.profile)
    left_out = {"flow_rate", "signal_quality"}
    assert first == second == {k: v for k, v in healthy.items() if k not in left_out}
    assert set(errors) == left_out
    assert errors["flow_rate"].state is DeviceState.DECODE_ERROR
    assert "nan" in str(errors["flow_rate"])
    assert "outside the device's range 0.0..99.0" in str(errors["signal_quality"])
    # One warning per field while it stays bad, naming line, unit, field and the raw registers.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert any(
        "unit 1 (tuf_2000m): flow_rate left out" in w and "registers [0, 32704]" in w for w in warnings
    )
    assert any("signal_quality left out" in w and "registers [120]" in w for w in warnings)
    assert third["flow_rate"] == 3.5
    assert set(line.field_errors(1)) == {"signal_quality"}


async def test_a_read_where_no_field_decodes_is_a_decode_error() -> None:
    meter = ModbusDeviceSimulator("water_quality_probe", values={"ph": 20.0})
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        only_ph = meter.profile.model_copy(update={"registers": [meter.profile.register("ph")]})
        with pytest.raises(DecodeError, match=r"ph: 20\.0 is outside") as caught:
            await line.read(1, only_ph)
        assert set(await line.read(1, meter.profile)) == {"turbidity", "free_chlorine", "temperature"}
    assert caught.value.state is DeviceState.DECODE_ERROR


async def test_write_checks_range_and_reads_back() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630")
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        assert await line.write(1, meter.profile, "demand_period_min", 15) == 15.0
        assert meter.get("demand_period_min") == 15.0
        with pytest.raises(ValueError, match=r"allowed range 0.0..60.0 min"):
            await line.write(1, meter.profile, "demand_period_min", 61)
        with pytest.raises(ValueError, match="read-only"):
            await line.write(1, meter.profile, "voltage_l1", 1.0)
    assert meter.get("demand_period_min") == 15.0
    assert meter.requests[0] == (16, 2, 2)


async def test_line_without_endpoint_is_unavailable() -> None:
    port = free_port()
    meter = ModbusDeviceSimulator("jxbs_3001")
    async with ModbusLine.tcp(host="127.0.0.1", port=port, timeout=TIMEOUT) as line:
        with pytest.raises(LineUnavailable, match="line unavailable") as caught:
            await line.read(1, meter.profile)
        assert caught.value.state is DeviceState.TIMEOUT


async def test_line_reconnects_when_the_endpoint_returns() -> None:
    meter = ModbusDeviceSimulator("jxbs_3001")
    port = free_port()
    async with ModbusLine.tcp(host="127.0.0.1", port=port, timeout=TIMEOUT) as line:
        async with serve_tcp([meter], port=port):
            assert await line.read(1, meter.profile) == meter.expected()
        with pytest.raises(LineUnavailable):
            await line.read(1, meter.profile)
        async with serve_tcp([meter], port=port):
            assert await line.read(1, meter.profile) == meter.expected()


async def test_concurrent_reads_share_the_line_safely() -> None:
    sims = [ModbusDeviceSimulator("vaisala_aqt530", unit=u, values={"no2": u}) for u in range(1, 6)]
    async with (
        serve_tcp(sims) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        results = await asyncio.gather(*(line.read(s.unit, s.profile) for s in sims))
    assert [r["no2"] for r in results] == [1, 2, 3, 4, 5]
    assert results == [s.expected() for s in sims]


async def test_animated_energy_counter_grows() -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", animate=True, time_scale=36_000)
    async with (
        serve_tcp([meter]) as endpoint,
        ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=TIMEOUT) as line,
    ):
        first = await line.read(1, meter.profile, poll="slow")
        await asyncio.sleep(0.05)
        second = await line.read(1, meter.profile, poll="slow")
    assert second["import_energy_kwh"] > first["import_energy_kwh"]  # type: ignore[operator]
