"""MbusLine on a pseudo-terminal against simulated meters answering recorded telegrams (captures/mbus):
primary and secondary addressing, multi-telegram readouts with FCB, scans, dead meters and bad frames."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from firmware_bridge.errors import DecodeError, DeviceCrcError, DeviceTimeout, LineUnavailable
from firmware_bridge.mbus import MbusCollision, MbusLine, parse_address
from firmware_bridge.mbus_frames import ACK, decode, profile_fields
from firmware_bridge.profile import load_mbus_profile
from firmware_bridge.simulators.mbus import MbusMeterSimulator, load_capture, serve_mbus_pty

CAPTURES = Path(__file__).parent / "captures" / "mbus"
KAMSTRUP = CAPTURES / "kamstrup_multical_601.hex"
CYBLE = CAPTURES / "itron_cyble_m-bus_v1.4_water.hex"
CYBLE_COLD = CAPTURES / "itron_cyble_m-bus_v1.4_cold_water.hex"
EMU = CAPTURES / "EMU_EMU-Professional-375-M-Bus.hex"
TIMEOUT = 0.15


def recorded_fields(capture: Path, profile: str) -> dict[str, object]:
    """What the profile makes of the recorded telegram itself (checked against libmbus in the golden test)."""
    fields, missing = profile_fields(decode(load_capture(capture)).records, load_mbus_profile(profile))
    assert missing == {}
    return dict(fields)


def line(port: str, **settings: float) -> MbusLine:
    return MbusLine(port, timeout=settings.pop("timeout", TIMEOUT), name="heat-1", **settings)  # type: ignore[arg-type]


async def test_a_meter_is_read_by_primary_address() -> None:
    meter = MbusMeterSimulator.from_capture(KAMSTRUP, primary=5)
    async with serve_mbus_pty([meter]) as port, line(port) as bus:
        fields = await bus.read(5, load_mbus_profile("kamstrup_multical_601"))
    assert fields == recorded_fields(KAMSTRUP, "kamstrup_multical_601")
    assert fields["energy_kwh"] == 37351.0
    assert meter.answers[0] == bytes([ACK])  # SND_NKE first


async def test_meters_are_read_by_secondary_address_and_by_wildcard() -> None:
    kamstrup = MbusMeterSimulator.from_capture(KAMSTRUP, primary=0)
    cyble = MbusMeterSimulator.from_capture(CYBLE, primary=0)  # both at the factory primary address 0
    profile = load_mbus_profile("itron_cyble_water")
    async with serve_mbus_pty([kamstrup, cyble]) as port, line(port) as bus:
        assert await bus.read("1200007177041407", profile) == recorded_fields(CYBLE, "itron_cyble_water")
        assert await bus.read("12FFFFFFFFFFFFFF", profile) == recorded_fields(CYBLE, "itron_cyble_water")
        telegrams = await bus.read_telegrams("FFFFFFFF2D2CFFFF")  # any Kamstrup
        assert telegrams[0].id == "06855817"
        with pytest.raises(MbusCollision, match="several meters answer the selection of FFFFFFFFFFFFFFFF"):
            await bus.read_telegrams("FFFFFFFFFFFFFFFF")
        with pytest.raises(DeviceTimeout, match="no meter acknowledges the selection of 99999999FFFFFFFF"):
            await bus.read_telegrams("99999999FFFFFFFF")


async def test_a_readout_follows_more_records_follow_toggling_the_fcb() -> None:
    meter = MbusMeterSimulator.from_capture(KAMSTRUP, primary=7, split_after=10)
    async with serve_mbus_pty([meter]) as port, line(port) as bus:
        telegrams = await bus.read_telegrams(7)
        fields = await bus.read(7, load_mbus_profile("kamstrup_multical_601"))
    assert [t.more_follow for t in telegrams] == [True, False]
    assert len(telegrams[0].records) == 10
    assert sum(len(t.records) for t in telegrams) == len(decode(load_capture(KAMSTRUP)).records)
    assert fields == recorded_fields(KAMSTRUP, "kamstrup_multical_601")


async def test_a_garbled_telegram_is_asked_again_with_the_same_fcb_nothing_lost_nothing_twice() -> None:
    meter = MbusMeterSimulator.from_capture(KAMSTRUP, primary=7, split_after=10)
    meter.bad_checksums = 1
    async with serve_mbus_pty([meter]) as port, line(port) as bus:
        telegrams = await bus.read_telegrams(7)
    first, second = meter.telegrams
    assert meter.answers[1] != first  # the garbled one
    assert meter.answers[2:] == [first, second]  # repeated, then the next: none skipped
    assert [t.raw for t in telegrams] == [first, second]


async def test_a_dead_meter_times_out_naming_line_and_address_and_the_bus_carries_on() -> None:
    dead = MbusMeterSimulator.from_capture(CYBLE, primary=3)
    dead.dead = True
    alive = MbusMeterSimulator.from_capture(KAMSTRUP, primary=4)
    async with serve_mbus_pty([dead, alive]) as port, line(port) as bus:
        with pytest.raises(DeviceTimeout) as caught:
            await bus.read(3, load_mbus_profile("itron_cyble_water"))
        assert str(caught.value) == "M-Bus line heat-1, primary address 3: no answer to SND_NKE within 0.15 s"
        assert await bus.read(4, load_mbus_profile("kamstrup_multical_601"))


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("bad_checksums", "REQ_UD2: checksum .., computed ..: received 68 F7 F7 68"),
        ("truncated", "REQ_UD2: truncated frame: 126 of 253 bytes: received 68 F7 F7 68 08 09 72 17 58"),
    ],
)
async def test_a_meter_sending_bad_frames_gets_a_one_line_error(fault: str, says: str) -> None:
    meter = MbusMeterSimulator.from_capture(KAMSTRUP, primary=9)
    setattr(meter, fault, 5)
    async with serve_mbus_pty([meter]) as port, line(port) as bus:
        with pytest.raises(DeviceCrcError, match=f"^M-Bus line heat-1, primary address 9: {says}") as caught:
            await bus.read(9, load_mbus_profile("kamstrup_multical_601"))
        assert "\n" not in str(caught.value)
        setattr(meter, fault, 0)
        assert await bus.read(9, load_mbus_profile("kamstrup_multical_601"))  # and it is read again after


async def test_scan_primary_lists_the_meters_that_answer() -> None:
    meters = [
        MbusMeterSimulator.from_capture(KAMSTRUP, primary=1),
        MbusMeterSimulator.from_capture(EMU, primary=4),
        MbusMeterSimulator.from_capture(CYBLE, primary=6),
    ]
    async with serve_mbus_pty(meters) as port, line(port, timeout=0.2, retries=0) as bus:
        found = await bus.scan_primary(range(8))
    assert [(f.address, f.telegram.manufacturer) for f in found] == [(1, "KAM"), (4, "EMU"), (6, "ACW")]


async def test_scan_secondary_finds_every_meter_by_wildcard_search() -> None:
    meters = [MbusMeterSimulator.from_capture(path, primary=0) for path in (KAMSTRUP, CYBLE, CYBLE_COLD, EMU)]
    async with serve_mbus_pty(meters) as port, line(port, timeout=0.2, retries=0) as bus:
        found = await bus.scan_secondary()
    assert sorted(f.telegram.id for f in found) == ["00032629", "06855817", "10020380", "12000071"]
    assert all(f.address == f.telegram.secondary for f in found)


async def test_a_port_that_cannot_be_opened_is_a_line_error() -> None:
    with pytest.raises(LineUnavailable, match="M-Bus line heat-1: cannot open /dev/nonexistent-mbus"):
        async with line("/dev/nonexistent-mbus"):
            pass


@pytest.mark.parametrize(
    ("text", "address"), [(0, 0), ("250", 250), ("06855817ffffffff", "06855817FFFFFFFF")]
)
def test_addresses(text: int | str, address: int | str) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (251, "outside 0..250"),
        ("0685581", "16 hex digits"),
        ("0685A817FFFFFFFF", r"the id \(first 8 digits\) is decimal"),
    ],
)
def test_bad_addresses(text: int | str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_address(text)


async def test_citygw_serve_puts_recorded_meters_on_a_pty_for_a_field_engineer_to_try() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citygw.cli",
        "serve",
        "--mbus",
        f"{KAMSTRUP}:3:10",
        f"{CYBLE}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        said = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert said.startswith("M-Bus meters at 3 (068558172D2C0804), 0 (1200007177041407) on /dev/")
        async with line(said.rsplit(" ", 1)[1]) as bus:
            telegrams = await bus.read_telegrams(3)
            assert (await bus.read_telegrams("1200007177041407"))[0].manufacturer == "ACW"
        assert [t.more_follow for t in telegrams] == [True, False]
    finally:
        process.terminate()
        await process.wait()


async def test_a_meter_of_another_make_at_the_address_is_refused_not_published() -> None:
    meter = MbusMeterSimulator.from_capture(KAMSTRUP, primary=5)
    async with serve_mbus_pty([meter]) as port, line(port) as bus:
        with pytest.raises(DecodeError) as caught:
            await bus.read(5, load_mbus_profile("itron_cyble_water"))
    assert str(caught.value) == (
        "M-Bus line heat-1, primary address 5: the meter is a KAM (id 06855817), profile itron_cyble_water "
        "is for ACW meters: check the address or the profile"
    )


async def test_scans_list_a_meter_they_cannot_read_with_why() -> None:
    garbling = MbusMeterSimulator.from_capture(EMU, primary=2)
    garbling.bad_checksums = 1000
    twin_a = MbusMeterSimulator.from_capture(KAMSTRUP, primary=3)
    twin_b = MbusMeterSimulator.from_capture(KAMSTRUP, primary=4)  # the same identity twice
    async with serve_mbus_pty([garbling, twin_a, twin_b]) as port, line(port, timeout=0.2, retries=0) as bus:
        primary = await bus.scan_primary(range(3))
        secondary = await bus.scan_secondary()
    assert [(f.address, f.telegram) for f in primary] == [(2, None)]
    assert "REQ_UD2: checksum" in (primary[0].error or "")
    by_address = {f.address: f for f in secondary}
    assert by_address["06855817FFFFFFFF"].telegram is None
    assert "several meters answer the selection of 06855817FFFFFFFF" in (
        by_address["06855817FFFFFFFF"].error or ""
    )
    # The garbling EMU, alone behind the mask 00FF..: found, its address the mask that selects it.
    assert by_address["00FFFFFFFFFFFFFF"].telegram is None
    assert "REQ_UD2: checksum" in (by_address["00FFFFFFFFFFFFFF"].error or "")
