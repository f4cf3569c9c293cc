"""NMEA: checked sentences, fixes from RMC + GGA, no-fix cases, and a pty round trip with the bus GPS."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import os
import pty
import random
import tty
from collections.abc import AsyncGenerator
from functools import reduce
from pathlib import Path

import pytest

from firmware_bridge.nmea import KNOT_MPS, FixAssembler, GpsFix, NmeaError, NoFix, parse_sentence, read_lines
from firmware_bridge.profile import load_nmea_profile
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


def one(results: list[GpsFix | NoFix]) -> GpsFix | NoFix:
    assert len(results) == 1, results
    return results[0]


def test_gp_rmc_and_gga_make_a_fix() -> None:
    fixes = FixAssembler()
    assert fixes.feed(parse_sentence(GP_GGA)) == []
    fix = one(fixes.feed(parse_sentence(GP_RMC)))
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
    fix = one(fixes.feed(rmc))
    assert isinstance(fix, GpsFix)
    assert fix.lat == pytest.approx(47 + 17.11437 / 60)
    assert fix.lon == pytest.approx(8 + 33.91522 / 60)
    assert fix.ts_ms == int(dt.datetime(2002, 12, 9, 8, 35, 59, tzinfo=dt.UTC).timestamp() * 1000)
    assert fix.speed_mps == pytest.approx(0.004 * KNOT_MPS)
    assert (fix.satellites, fix.hdop) == (8, 1.01)


def test_southern_and_western_hemispheres_are_negative() -> None:
    rmc = with_checksum("GNRMC,010203.00,A,3351.12345,S,15112.54321,W,1.0,,010124,,,D,V")
    fixes = FixAssembler()
    assert fixes.feed(parse_sentence(rmc)) == []  # the epoch waits for its GGA...
    fix = one(fixes.flush())  # ...until the stream ends (or a newer epoch begins)
    assert isinstance(fix, GpsFix)
    assert fix.lat == pytest.approx(-(33 + 51.12345 / 60))
    assert fix.lon == pytest.approx(-(151 + 12.54321 / 60))
    assert fix.course_deg is None
    assert fix.satellites is None  # no GGA in this epoch


def test_gga_of_another_epoch_is_not_combined() -> None:
    fixes = FixAssembler()
    fixes.feed(parse_sentence(GP_GGA))
    rmc = with_checksum("GPRMC,123619,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
    undated = one(fixes.feed(parse_sentence(rmc)))  # 12:35:19 had a position but no date
    assert isinstance(undated, NoFix)
    assert undated.reason == "GGA at 12:35:19: no date yet (no RMC or ZDA)"
    fix = one(fixes.flush())
    assert isinstance(fix, GpsFix)
    assert fix.satellites is None


def epoch(second: int, *, moving: bool = True) -> dict[str, str]:
    """The sentences a u-blox 8 sends in one epoch (second 0..59 of 2015-06-19 18:11), by kind."""
    t = f"1811{second:02d}.00"
    lat, lon = f"5230.{88855 + second:05d}", f"01327.{85591 + 2 * second:05d}"
    speed = "12.500" if moving else "0.031"
    return {
        "RMC": with_checksum(f"GNRMC,{t},A,{lat},N,{lon},E,{speed},77.52,190615,,,A"),
        "VTG": with_checksum(f"GNVTG,77.52,T,,M,{speed},N,23.150,K,A"),
        "GGA": with_checksum(
            f"GNGGA,{t},{lat},N,{lon},E,1,{second % 12 + 4:02d},0.93,{60 + second}.5,M,42.1,M,,"
        ),
        "GSA": with_checksum("GNGSA,A,3,21,13,27,18,20,26,07,16,22,15,19,,1.59,0.93,1.29"),
        "GLL": with_checksum(f"GNGLL,{lat},N,{lon},E,{t},A,A"),
        "ZDA": with_checksum(f"GNZDA,{t},19,06,2015,00,00"),
    }


def expected_fix(second: int) -> GpsFix:
    ts = dt.datetime(2015, 6, 19, 18, 11, second, tzinfo=dt.UTC)
    return GpsFix(
        ts_ms=round(ts.timestamp() * 1000),
        lat=round(52 + (30 + (88855 + second) / 1e5) / 60, 8),
        lon=round(13 + (27 + (85591 + 2 * second) / 1e5) / 60, 8),
        speed_mps=12.5 * KNOT_MPS,
        course_deg=77.52,
        fix_quality=1,
        satellites=second % 12 + 4,
        hdop=0.93,
        altitude_m=60 + second + 0.5,
    )


def test_each_epoch_is_one_fix_in_whatever_order_its_sentences_come() -> None:
    """All 720 orders of an epoch's six sentences, three epochs each: each fix has its own epoch's values."""
    wrong: list[tuple[str, ...]] = []
    for order in itertools.permutations(["RMC", "VTG", "GGA", "GSA", "GLL", "ZDA"]):
        fixes = FixAssembler()
        made = [fix for second in (10, 11, 12) for kind in order for fix in fixes.feed(epoch(second)[kind])]
        if made + fixes.flush() != [expected_fix(10), expected_fix(11), expected_fix(12)]:
            wrong.append(order)
    assert wrong == []


def test_rmc_before_gga_takes_the_gga_of_its_own_epoch() -> None:
    """The field failure: an RMC-first receiver got the previous second's altitude, quality and HDOP."""
    fixes = FixAssembler()
    made = [
        fix
        for second in range(5)
        for kind in ("RMC", "VTG", "GGA")
        for fix in fixes.feed(epoch(second)[kind])
    ]
    assert made == [expected_fix(second) for second in range(5)]


@pytest.mark.parametrize(
    ("kinds", "fields"),
    [
        (("GGA", "ZDA"), {"speed_mps": None, "course_deg": None}),  # date from ZDA
        (("GLL", "VTG", "ZDA"), {"fix_quality": None, "satellites": None, "hdop": None, "altitude_m": None}),
        (
            ("GLL", "GSA", "ZDA"),
            {
                "speed_mps": None,
                "course_deg": None,
                "fix_quality": None,
                "satellites": None,
                "altitude_m": None,
            },
        ),
        (("RMC",), {"fix_quality": None, "satellites": None, "hdop": None, "altitude_m": None}),
    ],
)
def test_an_epoch_missing_sentences_has_what_its_own_sentences_say(
    kinds: tuple[str, ...], fields: dict[str, object]
) -> None:
    fixes = FixAssembler()
    made = [fix for kind in kinds for fix in fixes.feed(epoch(20)[kind])]
    made += fixes.feed(epoch(21)["ZDA"])  # a newer epoch ends it
    assert made == [dataclasses.replace(expected_fix(20), **fields)]  # type: ignore[arg-type]


def test_without_rmc_or_zda_the_last_date_given_goes_on_and_turns_at_midnight() -> None:
    fixes = FixAssembler()
    rmc = with_checksum("GPRMC,235959.00,A,4807.038,N,01131.000,E,1.0,84.4,311226,,,A")

    def gga_at(time: str) -> str:
        return with_checksum(f"GPGGA,{time},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")

    gga = gga_at("000000.00")
    back = gga_at("235950.00")  # the receiver's clock steps back 10 s: the same day
    made = fixes.feed(rmc) + fixes.feed(back) + fixes.feed(gga) + fixes.feed(gga_at("130000.00"))
    made += fixes.feed(gga)
    made += fixes.flush()
    assert [dt.datetime.fromtimestamp(fix.ts_ms / 1000, dt.UTC).isoformat() for fix in made] == [
        "2026-12-31T23:59:59+00:00",
        "2026-12-31T23:59:50+00:00",
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T13:00:00+00:00",
        "2027-01-02T00:00:00+00:00",
    ]
    never_dated = FixAssembler()
    result = one(never_dated.feed(gga) + never_dated.flush())
    assert isinstance(result, NoFix)
    assert "no date" in result.reason


def with_talker(talker: str, sentence: str) -> str:
    return with_checksum(talker + sentence[3 : sentence.index("*")])


@pytest.mark.parametrize("talker", ["GP", "GL", "GA", "GB", "BD", "GQ", "GI", "GN", "IN"])
def test_every_gnss_talker_is_read_by_default(talker: str) -> None:
    fixes = FixAssembler.for_profile(load_nmea_profile("gps_nmea"))
    made = [fix for kind in ("GGA", "VTG", "RMC") for fix in fixes.feed(with_talker(talker, epoch(30)[kind]))]
    assert made == [expected_fix(30)]


def test_talkers_of_a_profile_are_the_only_ones_read_most_trusted_first() -> None:
    """A receiver with one solution per constellation (Telit PLS83-W: GP and GA RMC/GGA of each second)."""
    galileo = {kind: with_talker("GA", s.replace("181141.00", "181140.00")) for kind, s in epoch(41).items()}
    gps = {kind: with_talker("GP", s) for kind, s in epoch(40).items()}
    galileo_first = [galileo["GGA"], gps["GGA"], galileo["RMC"], gps["RMC"]]

    def fixes_of(sentences: list[str], talkers: list[str] | None) -> list[GpsFix | NoFix]:
        fixes = FixAssembler(talkers=talkers)
        made = [fix for sentence in sentences for fix in fixes.feed(sentence)]
        return made + fixes.flush()

    assert fixes_of(galileo_first, ["GP", "GA"]) == [expected_fix(40)]
    assert fixes_of(galileo_first, ["GP"]) == [expected_fix(40)]
    assert fixes_of(galileo_first, ["GL"]) == []
    galileo_fix = fixes_of([galileo["GGA"], galileo["RMC"]], None)
    assert fixes_of(galileo_first, ["GA", "GP"]) == fixes_of(galileo_first, None) == galileo_fix
    assert galileo_fix != [expected_fix(40)]
    gps_then_galileo = FixAssembler(talkers=["GP", "GA"])
    assert [gps_then_galileo.feed(s) for s in (gps["GGA"], gps["RMC"])] == [[], [expected_fix(40)]]


def test_status_v_is_no_fix() -> None:
    rmc = with_checksum("GNRMC,083600.00,V,,,,,,,091202,,,N,V")
    fixes = FixAssembler()
    result = one(fixes.feed(parse_sentence(rmc)) + fixes.flush())
    assert isinstance(result, NoFix)
    assert result.ts_ms == int(dt.datetime(2002, 12, 9, 8, 36, tzinfo=dt.UTC).timestamp() * 1000)
    assert "status V" in result.reason


def test_mode_n_is_no_fix_even_with_status_a() -> None:
    rmc = with_checksum("GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,N,V")
    fixes = FixAssembler()
    assert isinstance(one(fixes.feed(parse_sentence(rmc)) + fixes.flush()), NoFix)


def test_gga_quality_zero_is_no_fix() -> None:
    fixes = FixAssembler()
    gga = with_checksum("GNGGA,083559.00,,,,,0,00,99.99,,,,,,")
    assert fixes.feed(parse_sentence(gga)) == []
    result = one(fixes.feed(parse_sentence(UBLOX_RMC)))
    assert isinstance(result, NoFix)
    assert "GGA fix quality 0" in result.reason


def test_vtg_is_parsed_and_only_adds_detail() -> None:
    vtg = parse_sentence(GP_VTG)
    assert vtg.sentence_type == "VTG"
    fixes = FixAssembler()
    assert fixes.feed(vtg) == []
    assert fixes.flush() == []  # no position in the epoch: nothing


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
    ("bad", "good", "says"),
    [
        ("GNGGA,083559.00,4717.11437,N,00833.91522,E,1,08,nan,499.6,M,48.0,M,,", UBLOX_RMC, "GNGGA field 8"),
        ("GNGGA,083559.00,4717.11437,N,00833.91522,E,1,08,1.01,inf,M,48.0,M,,", UBLOX_RMC, "GNGGA field 9"),
        ("GNRMC,083559.00,A,4717.11437,N,00833.91522,E,nan,77.52,091202,,,A,V", UBLOX_GGA, "GNRMC field 7"),
        ("GNRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,-inf,091202,,,A,V", UBLOX_GGA, "GNRMC field 8"),
    ],
)
def test_a_number_that_is_nan_or_infinite_is_an_unreadable_sentence(bad: str, good: str, says: str) -> None:
    """With a right checksum, 'nan' would pass float() and make a fix the wire contract refuses."""
    fixes = FixAssembler()
    fixes.feed(with_checksum("GNZDA,083558.00,09,12,2002,00,00"))  # the date, should the RMC be refused
    with pytest.raises(NmeaError, match=f"{says} .*not a finite number"):
        fixes.feed(parse_sentence(with_checksum(bad)))
    assert fixes.feed(good) == []  # the epoch goes on without the refused sentence
    fix = one(fixes.flush())
    assert isinstance(fix, GpsFix)
    assert (fix.lat, fix.lon) == (round(47 + 17.11437 / 60, 8), round(8 + 33.91522 / 60, 8))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,2a0394,003.1,W",
            r"GPRMC field 9 \(Datestamp\) '2a0394'",
        ),
        (
            "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W",
            r"GPRMC field 9 \(Datestamp\) '320394'",
        ),
        (
            "GPRMC,12x519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",
            r"GPRMC field 1 \(Timestamp\) '12x519'",
        ),
        (
            "GPGGA,256000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
            r"GPGGA field 1 \(Timestamp\) '256000'",
        ),
        (
            "GPRMC,123519,A,48o7.038,N,01131.000,E,022.4,084.4,230394,003.1,W",
            r"GPRMC field 3 \(Latitude\) '48o7.038'",
        ),
        (
            "GPRMC,123519,A,4807.038,X,01131.000,E,022.4,084.4,230394,003.1,W",
            r"GPRMC field 4 \(Latitude Direction\)",
        ),
        ("GPRMC,123519,A,9107.038,N,01131.000,E,022.4,084.4,230394,003.1,W", r"GPRMC field 3 .*beyond 90"),
        (
            "GPRMC,123519,A,4807.038,N,,E,022.4,084.4,230394,003.1,W",
            r"GPRMC says RMC status A but has no position",
        ),
        ("GPRMC,123519,A,4807.038,N,01131.000,E,fast,084.4,230394,003.1,W", r"GPRMC field 7 .* 'fast'"),
        ("GPGGA,123519,4807.038,N,01131.000,E,one,08,0.9,545.4,M,46.9,M,,", r"GPGGA field 6 .* 'one'"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,8.5,0.9,545.4,M,46.9,M,,", r"GPGGA field 7 .* '8.5'"),
        ("GPGLL,4807.038,N,01131.000,E,1235x9,A,A", r"GPGLL field 5 \(Timestamp\)"),
        ("GPVTG,054.7,T,034.4,M,005.5,N,fast,K", r"GPVTG field 7 .* 'fast'"),
        ("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.x,2.1", r"GPGSA field 16 \(HDOP"),
        ("GPZDA,201530.00,04,13,2026,00,00", r"GPZDA date 2026-13-4 is no date"),
        ("GPZDA,201530.00,04,o7,2026,00,00", r"GPZDA field 3 \(Month\) 'o7'"),
    ],
)
def test_a_garbled_field_is_an_nmea_error_naming_the_sentence_and_field(body: str, says: str) -> None:
    """The field failure: a garbled RMC date gave an internal TypeError as the health message."""
    with pytest.raises(NmeaError, match=says) as raised:
        FixAssembler().feed(with_checksum(body))
    assert type(raised.value) is NmeaError


CAPTURES = Path(__file__).parent / "captures" / "nmea"


def corpus_sentences() -> list[str]:
    lines = (
        line.strip()
        for path in sorted(CAPTURES.glob("*.log"))
        for line in path.read_text("latin-1").splitlines()
    )
    return [line for line in lines if line.startswith("$") and "*" in line]


def test_truncated_and_corrupted_real_sentences_are_nmea_errors_never_anything_else() -> None:
    """Every real sentence of the corpus cut at every field, and with random bytes changed, its checksum
    made right again so the garbage reaches the field readers: a fix, nothing, or an NmeaError."""
    noise = random.Random(16)
    checked = 0
    for sentence in corpus_sentences():
        body = sentence[1 : sentence.index("*")]
        variants = [body[:cut] for cut in range(4, len(body)) if body[cut] == ","]
        for _ in range(3):
            chars = list(body)
            chars[noise.randrange(6, len(chars))] = chr(noise.choice([*range(32, 127), 0xB0]))
            variants.append("".join(chars))
        for variant in variants:
            fixes = FixAssembler()
            try:
                fixes.feed(with_checksum(variant))
                fixes.flush()
            except NmeaError:
                pass
            checked += 1
    assert checked > 20_000
    for garbage in (b"\x00\xff\xfe$GPRMC,\x81\x82*00", b"$GPGGA,123519,4807.038,N,011"):
        with pytest.raises(NmeaError):
            FixAssembler().feed(garbage.decode("latin-1"))


async def fixes_from(port: str, wanted: type, count: int = 1) -> list[GpsFix | NoFix]:
    found: list[GpsFix | NoFix] = []
    assembler = FixAssembler()
    async with asyncio.timeout(3):
        async for line in read_lines(port, 9600):
            for result in assembler.feed(parse_sentence(line)):
                # A whole epoch (a reader opening mid-epoch may see its RMC alone).
                if isinstance(result, wanted) and (
                    isinstance(result, NoFix) or result.satellites is not None
                ):
                    found.append(result)
                    if len(found) == count:
                        return found
    return found


@pytest.mark.parametrize(("talker", "gga_first"), [("GN", False), ("GP", True), ("GL", False), ("BD", True)])
async def test_pty_round_trip_with_the_bus_gps(talker: str, gga_first: bool) -> None:
    """Climbing, so each epoch's altitude is its own: an RMC-first receiver's fix has the GGA after it."""
    route = [(52.2297, 21.0122), (52.2310, 21.0150), (52.2330, 21.0160)]
    async with BusGpsSimulator(
        route,
        speed_mps=12.0,
        vehicle_id="bus_17",
        period=0.05,
        climb_mps=3.0,
        talker=talker,
        gga_first=gga_first,
    ) as gps:
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
