"""NMEA: checked sentences, fixes from RMC + GGA, no-fix cases, and a pty round trip with the bus GPS."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pty
import tty
from collections.abc import AsyncGenerator
from functools import reduce

import pytest

from firmware_bridge.nmea import KNOT_MPS, FixAssembler, GpsFix, NmeaError, NoFix, parse_sentence, read_lines
from firmware_bridge.simulators import BusGpsSimulator


def with_checksum(body: str) -> str:
    """``$body*hh`` with the NMEA checksum (XOR of the characters between $ and *)."""
    return f"${body}*{reduce(lambda acc, ch: acc ^ ord(ch), body, 0):02X}"


GP_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GP_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
GP_VTG = "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48"
UBLOX_RMC = with_checksum("GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A,V")
UBLOX_GGA = with_checksum("GNGGA,083559.00,4717.11437,N,00833.91522,E,1,08,1.01,499.6,M,48.0,M,,")


def test_known_sentences_have_valid_checksums() -> None:
    assert with_checksum(GP_RMC[1:-3]) == GP_RMC
    assert with_checksum(GP_GGA[1:-3]) == GP_GGA


def test_gp_rmc_and_gga_make_a_fix() -> None:
    fixes = FixAssembler()
    assert fixes.feed(parse_sentence(GP_GGA)) is None
    fix = fixes.feed(parse_sentence(GP_RMC))
    assert isinstance(fix, GpsFix)
    assert fix.ts_ms == int(dt.datetime(1994, 3, 23, 12, 35, 19, tzinfo=dt.UTC).timestamp() * 1000)
    assert fix.lat == pytest.approx(48 + 7.038 / 60)
    assert fix.lon == pytest.approx(11 + 31.0 / 60)
    assert fix.speed_mps == pytest.approx(22.4 * 0.514444, rel=1e-5)
    assert fix.course_deg == 84.4
    assert (fix.fix_quality, fix.satellites, fix.hdop, fix.altitude_m) == (1, 8, 0.9, 545.4)


def test_ublox_rmc_with_mode_and_nav_status_is_a_fix() -> None:
    rmc = parse_sentence(UBLOX_RMC)
    assert rmc.talker == "GN"
    assert not rmc.is_valid  # pynmea2 wants nav status S/C/U; u-blox sends V ("none given")
    fixes = FixAssembler()
    fixes.feed(parse_sentence(UBLOX_GGA))
    fix = fixes.feed(rmc)
    assert isinstance(fix, GpsFix)
    assert fix.lat == pytest.approx(47 + 17.11437 / 60)
    assert fix.lon == pytest.approx(8 + 33.91522 / 60)
    assert fix.ts_ms == int(dt.datetime(2002, 12, 9, 8, 35, 59, tzinfo=dt.UTC).timestamp() * 1000)
    assert fix.speed_mps == pytest.approx(0.004 * KNOT_MPS)
    assert (fix.satellites, fix.hdop) == (8, 1.01)


def test_southern_and_western_hemispheres_are_negative() -> None:
    rmc = with_checksum("GNRMC,010203.00,A,3351.12345,S,15112.54321,W,1.0,,010124,,,D,V")
    fix = FixAssembler().feed(parse_sentence(rmc))
    assert isinstance(fix, GpsFix)
    assert fix.lat == pytest.approx(-(33 + 51.12345 / 60))
    assert fix.lon == pytest.approx(-(151 + 12.54321 / 60))
    assert fix.course_deg is None
    assert fix.satellites is None  # no GGA seen yet


def test_gga_of_another_epoch_is_not_combined() -> None:
    fixes = FixAssembler()
    fixes.feed(parse_sentence(GP_GGA))
    rmc = with_checksum("GPRMC,123619,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
    fix = fixes.feed(parse_sentence(rmc))
    assert isinstance(fix, GpsFix)
    assert fix.satellites is None


def test_status_v_is_no_fix() -> None:
    rmc = with_checksum("GNRMC,083600.00,V,,,,,,,091202,,,N,V")
    result = FixAssembler().feed(parse_sentence(rmc))
    assert isinstance(result, NoFix)
    assert result.ts_ms == int(dt.datetime(2002, 12, 9, 8, 36, tzinfo=dt.UTC).timestamp() * 1000)
    assert "status V" in result.reason


def test_mode_n_is_no_fix_even_with_status_a() -> None:
    rmc = with_checksum("GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,N,V")
    assert isinstance(FixAssembler().feed(parse_sentence(rmc)), NoFix)


def test_gga_quality_zero_is_no_fix() -> None:
    fixes = FixAssembler()
    gga = with_checksum("GNGGA,083559.00,,,,,0,00,99.99,,,,,,")
    assert isinstance(fixes.feed(parse_sentence(gga)), NoFix)
    assert isinstance(fixes.feed(parse_sentence(UBLOX_RMC)), NoFix)


def test_vtg_is_parsed_and_only_adds_detail() -> None:
    vtg = parse_sentence(GP_VTG)
    assert vtg.sentence_type == "VTG"
    assert FixAssembler().feed(vtg) is None


def test_wrong_checksum() -> None:
    with pytest.raises(NmeaError, match="wrong checksum"):
        parse_sentence(GP_RMC[:-2] + "6B")


def test_missing_checksum() -> None:
    with pytest.raises(NmeaError, match="no checksum"):
        parse_sentence(GP_RMC[:-3])


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "$",
        "$GPRMC",
        "\ufffd\ufffd$GP\ufffdRMC,,,*00",
        with_checksum("GPXYZ,1,2,3"),
        b"\xff\xfe\x00$GPGGA,\x80\x81*47",
        "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*ZZ",
    ],
)
def test_garbage_raises_nmea_error_only(garbage: str | bytes) -> None:
    with pytest.raises(NmeaError):
        parse_sentence(garbage)


@pytest.mark.parametrize(
    ("gga", "rmc"),
    [
        ("GNGGA,083559.00,4717.11437,N,00833.91522,E,1,08,nan,499.6,M,48.0,M,,", UBLOX_RMC),
        ("GNGGA,083559.00,4717.11437,N,00833.91522,E,1,08,1.01,inf,M,48.0,M,,", UBLOX_RMC),
        (UBLOX_GGA, "GNRMC,083559.00,A,4717.11437,N,00833.91522,E,nan,77.52,091202,,,A,V"),
        (UBLOX_GGA, "GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,-inf,091202,,,A,V"),
    ],
)
def test_a_number_that_is_nan_or_infinite_is_an_unreadable_sentence(gga: str, rmc: str) -> None:
    """With a right checksum, 'nan' would pass float() and make a fix the wire contract refuses."""
    fixes = FixAssembler()
    fixes.feed(parse_sentence(gga if gga.startswith("$") else with_checksum(gga)))
    with pytest.raises(NmeaError, match="finite"):
        fixes.feed(parse_sentence(rmc if rmc.startswith("$") else with_checksum(rmc)))


def test_unreadable_fields_raise_nmea_error() -> None:
    rmc = with_checksum("GNRMC,08xx59.00,A,4717.11437,N,00833.91522,E,fast,77.52,091202,,,A,V")
    with pytest.raises(NmeaError):
        FixAssembler().feed(parse_sentence(rmc))


async def fixes_from(port: str, wanted: type, count: int = 1) -> list[GpsFix | NoFix]:
    found: list[GpsFix | NoFix] = []
    assembler = FixAssembler()
    async with asyncio.timeout(3):
        async for line in read_lines(port, 9600):
            result = assembler.feed(parse_sentence(line))
            if result is None or not isinstance(result, wanted):
                continue
            if not isinstance(result, GpsFix) or result.satellites is not None:
                found.append(result)
                if len(found) == count:
                    return found
    return found


async def test_pty_round_trip_with_the_bus_gps() -> None:
    route = [(52.2297, 21.0122), (52.2310, 21.0150), (52.2330, 21.0160)]
    async with BusGpsSimulator(route, speed_mps=12.0, vehicle_id="bus_17", period=0.05) as gps:
        fixes = await fixes_from(gps.port, GpsFix, count=3)
        assert len(fixes) == 3
        for fix in fixes:
            assert fix in gps.emitted  # exactly what it printed: time, position, speed, course, GGA
        assert isinstance(gps.last_fix, GpsFix)
        gps.no_fix = True
        assert await fixes_from(gps.port, NoFix)


async def test_read_lines_tolerates_garbled_bytes() -> None:
    async with BusGpsSimulator([(0.0, 0.0), (0.0, 0.01)], period=0.05) as gps:
        seen: list[str] = []
        async with asyncio.timeout(2):
            async for line in read_lines(gps.port, 9600):
                if not seen:
                    gps.inject(b"\xff\xfe noise \x00\r\n")
                seen.append(line)
                if any("\ufffd" in s for s in seen) and line.startswith("$GNGGA"):
                    break
    garbled = next(s for s in seen if "\ufffd" in s)
    with pytest.raises(NmeaError):
        parse_sentence(garbled)
    assert parse_sentence(seen[-1]).sentence_type == "GGA"


async def test_read_lines_drops_a_run_without_line_end_and_goes_on() -> None:
    """A floating or shorted RX line: 80 KB of NUL with no line end is dropped, not a crash."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    dropped: list[str] = []
    rmc = "$GPRMC,120000.00,A,4950.508,N,02401.896,E,0.0,0.0,010124,,,A*6B"
    try:
        lines = read_lines(os.ttyname(slave), 9600, discarded=dropped.append)
        assert isinstance(lines, AsyncGenerator)
        async with asyncio.timeout(5):
            reading = asyncio.ensure_future(anext(lines))
            for _ in range(20):  # 80 KB, a pty buffer at a time
                os.write(master, b"\x00" * 4096)
                await asyncio.sleep(0.01)
            os.write(master, f"\r\n{rmc}\r\n".encode())
            rest = await reading  # what came after the dropped run, up to the line end
            assert set(rest) == {"\x00"}
            assert len(rest) < 80 * 1024 - 64 * 1024
            assert await anext(lines) == rmc
        await lines.aclose()
    finally:
        os.close(master)
        os.close(slave)
    assert len(dropped) == 1
    assert "without a line end" in dropped[0]
