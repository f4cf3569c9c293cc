"""A device's configured location rides on its readings as ``lat``/``lon`` fields, never as tags."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from citygw.contract import wire
from citygw.contract.agent_config import Device, Location
from edge.poller import HealthBoard, ModbusPoller, with_location
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty
from tests.edge.test_poller import TIMEOUT, Recorder


async def test_readings_of_a_located_station_carry_its_coordinates_as_fields(tmp_path: Path) -> None:
    sims = [ModbusDeviceSimulator("vaisala_aqt530", unit=1), ModbusDeviceSimulator("vaisala_aqt530", unit=2)]
    located = Device(
        id="aq-rynok",
        line="rs485-1",
        profile="vaisala_aqt530",
        unit=1,
        poll_s=0.05,
        location=Location(lat=49.8419, lon=24.0316),
    )
    plain = Device(id="aq-plain", line="rs485-1", profile="vaisala_aqt530", unit=2, poll_s=0.05)
    journal = Recorder(tmp_path / "journal.sqlite")
    poller = ModbusPoller(
        [(located, sims[0].profile), (plain, sims[1].profile)], journal=journal, board=HealthBoard(), site="t"
    )
    async with (
        serve_serial_pty(sims, baudrate=None) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line,
    ):
        task = asyncio.create_task(poller.run(line))
        await asyncio.sleep(0.4)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    journal.close()
    by_device = {r.device: r for r in journal.readings}
    assert by_device["aq-rynok"].fields["lat"] == 49.8419
    assert by_device["aq-rynok"].fields["lon"] == 24.0316
    assert by_device["aq-rynok"].fields["pm25"] == by_device["aq-plain"].fields["pm25"]
    assert "lat" not in by_device["aq-plain"].fields
    assert not {"lat", "lon"} & set(by_device["aq-rynok"].tags)


def test_a_full_reading_and_a_device_field_of_the_same_name_keep_their_own_values() -> None:
    device = Device(id="gps", line="l", poll_s=1, location=Location(lat=1.0, lon=2.0))
    assert with_location(device, {"lat": 5.0, "x": 1}) == {"lat": 5.0, "lon": 2.0, "x": 1}
    full: dict[str, wire.FieldValue] = {f"f{i}": i for i in range(wire.MAX_FIELDS_PER_READING - 1)}
    assert with_location(device, full) == full
