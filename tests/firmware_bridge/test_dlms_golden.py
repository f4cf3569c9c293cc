"""Golden tests: real DLMS/COSEM frames published by dlms-cosem (captures/dlms/PROVENANCE.md) decoded
by the client CityGW builds (Gurux, as ``firmware_bridge.dlms`` configures it) and by the simulator's
range parsing; expected values are the source's own decoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Conformance
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo

from firmware_bridge.dlms import (
    WRAPPER_HEADER,
    DlmsLine,
    DlmsRefused,
    Meter,
    Scaled,
    gurux_client,
    scaled_field,
)
from firmware_bridge.profile import DlmsField, DlmsProfile, load_dlms_profile
from firmware_bridge.simulators.dlms import hdlc_destination, range_bounds

CAPTURES = Path(__file__).parent / "captures" / "dlms"


def capture(name: str) -> bytes:
    return bytes.fromhex((CAPTURES / f"{name}.hex").read_text(encoding="utf-8"))


def test_a_meters_ua_and_aare_over_hdlc_are_accepted_with_its_conformance() -> None:
    ua, aare = capture("hdlc_ua_meter_1_17"), capture("hdlc_aare_meter_1_17")
    assert hdlc_destination(ua) == (16, None)  # the source: destination is the public client 16
    client = gurux_client(Meter(physical=17), "hdlc")  # server 1 / physical 17, public client 16
    client.snrmRequest()
    reply = GXReplyData()
    assert client.getData(GXByteBuffer(ua), reply)
    client.parseUAResponse(reply.data)
    client.aarqRequest()
    reply = GXReplyData()
    assert client.getData(GXByteBuffer(aare), reply)
    client.parseAareResponse(reply.data)  # raises unless accepted
    negotiated = Conformance(client.negotiatedConformance)
    source_says = {
        Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ,
        Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE,
        Conformance.BLOCK_TRANSFER_WITH_ACTION,
        Conformance.MULTIPLE_REFERENCES,
        Conformance.GET,
        Conformance.SET,
        Conformance.SELECTIVE_ACCESS,
        Conformance.ACTION,
    }
    assert {flag for flag in Conformance if flag and flag in negotiated} == source_says


def test_the_green_book_aare_gives_its_pdu_size() -> None:
    client = gurux_client(Meter(), "wrapper")
    assert client.settings.maxPduSize == 65535  # proposed
    client.aarqRequest()
    client.parseAareResponse(GXByteBuffer(capture("aare_accepted_green_book")))
    assert client.settings.maxPduSize == 500  # the source: server max receive PDU size 500


def wrapped(apdu: bytes, *, source: int = 1, destination: int = 16) -> bytes:
    """An APDU in an IEC 62056-47 wrapper message (version 1) from the meter to the client."""
    header = (1).to_bytes(2, "big") + source.to_bytes(2, "big") + destination.to_bytes(2, "big")
    return header + len(apdu).to_bytes(2, "big") + apdu


@asynccontextmanager
async def replaying(answers: list[bytes]) -> AsyncIterator[list[bytes]]:
    """A TCP meter answering each wrapper message with the next recorded APDU (then silence); yields
    the list the requests are collected in, and sets ``replaying.url``."""
    requests: list[bytes] = []
    queue = iter(answers)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(WRAPPER_HEADER)
                requests.append(header + await reader.readexactly(int.from_bytes(header[6:8], "big")))
                answer = next(queue, None)
                if answer is not None:
                    writer.write(wrapped(answer))
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    replaying.url = f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
    try:
        yield requests
    finally:
        server.close()
        await server.wait_closed()


COUNTER = DlmsProfile.model_validate(
    {
        "model": "m",
        "vendor": "v",
        "measurement": "electricity",
        "protocol": "dlms",
        "source": "golden test",
        "verified": "capture",
        "fields": [{"field": "count", "obis": "0.0.43.1.0.255", "class": "data", "type": "int"}],
    }
)


async def test_a_get_response_over_the_wrapper_is_the_sources_value() -> None:
    answers = [capture("aare_accepted_green_book"), capture("get_response_5009")]
    async with replaying(answers) as requests:
        url = replaying.url  # type: ignore[attr-defined]
        async with DlmsLine(url, transport="wrapper", name="w", timeout=0.2) as line:
            fields = await line.read(Meter(), COUNTER)
    assert fields == {"count": 5009}  # the source: double-long-unsigned 5009
    assert requests[1][WRAPPER_HEADER:].startswith(bytes.fromhex("c001c1000100002b0100ff0200"))


async def test_a_refused_association_is_one_clear_line() -> None:
    async with replaying([capture("aare_rejected_green_book")]):
        url = replaying.url  # type: ignore[attr-defined]
        async with DlmsLine(url, transport="wrapper", name="w", timeout=0.2) as line:
            with pytest.raises(DlmsRefused) as caught:
                await line.read(Meter(), COUNTER)
    message = str(caught.value)
    assert message.startswith("DLMS line w, meter 1 (client 16, no security): AARQ: association refused: ")
    assert "\n" not in message


@pytest.fixture
def range_request() -> list[object]:
    apdu = capture("get_request_load_profile_range")
    # GET-request-normal: tag, type, invoke id; class id, OBIS, attribute; access selection, selector
    assert apdu[3:14] == bytes.fromhex("0007") + bytes([1, 0, 99, 1, 0, 255]) + bytes([2, 1, 1])
    return _GXCommon.getData(GXDLMSSettings(True, None), GXByteBuffer(apdu[14:]), _GXDataInfo())


def test_a_load_profile_range_request_is_read_as_its_bounds(range_request: list[object]) -> None:
    start, end = range_bounds(GXDLMSSettings(True, None), range_request)
    # the source: from 01.10.2017 00:00 to 01.10.2017 01:00 (the meter's local time)
    assert (start.year, start.month, start.day, start.hour, start.minute) == (2017, 10, 1, 0, 0)
    assert (end.year, end.month, end.day, end.hour, end.minute) == (2017, 10, 1, 1, 0)
    restricting = range_request[0]
    assert isinstance(restricting, list)
    assert restricting[0] == 8
    assert bytes(restricting[1]) == bytes([0, 0, 1, 0, 0, 255])


def obis_name(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def han_registers() -> dict[str, Scaled]:
    """The registers of the Aidon HAN push (structures of OBIS, value, scaler/unit) as Gurux decodes them."""
    pdu = capture("aidon_han_se_list")
    # LLC (3), data-notification tag, long invoke id and priority (4), no date-time: then the body
    assert pdu[:9] == bytes.fromhex("e6e7000f4000000000")
    items = _GXCommon.getData(GXDLMSSettings(False, None), GXByteBuffer(pdu[9:]), _GXDataInfo())
    assert len(items) == 27  # the source: 27 list items
    return {
        obis_name(bytes(item[0])): Scaled(item[1], int(item[2][0]), int(item[2][1]))
        for item in items
        if len(item) == 3
    }


@pytest.mark.parametrize(
    ("obis", "source_says"),
    [
        ("1.0.1.7.0.255", Decimal(1122)),
        ("1.0.3.7.0.255", Decimal(1507)),
        ("1.0.31.7.0.255", Decimal(0)),
        ("1.0.51.7.0.255", Decimal("7.5")),
        ("1.0.32.7.0.255", Decimal("230.7")),
        ("1.0.52.7.0.255", Decimal("249.9")),
        ("1.0.72.7.0.255", Decimal("230.8")),
        ("1.0.43.7.0.255", Decimal(1506)),
        ("1.0.1.8.0.255", Decimal(10049926)),
        ("1.0.2.8.0.255", Decimal(8)),
        ("1.0.3.8.0.255", Decimal(6614347)),
        ("1.0.4.8.0.255", Decimal(5)),
    ],
)
def test_a_han_push_gives_the_sources_scaled_values(obis: str, source_says: Decimal) -> None:
    register = han_registers()[obis]
    spec = DlmsField(field="x", obis=obis, cosem_unit=register.unit)
    assert scaled_field(spec, register) == float(source_says)


# Shipped dlms profiles checked against a real capture (test_golden.py counts them as covered).
PROFILE_CAPTURES = {"generic_dlms_meter": "aidon_han_se_list"}


def test_the_generic_profile_reads_the_han_push() -> None:
    profile = load_dlms_profile("generic_dlms_meter")
    registers = han_registers()
    fields = {spec.field: scaled_field(spec, registers[spec.obis]) for spec in profile.fields}
    assert fields == {
        "energy_import_kwh": 10049.926,  # the source: 10049926 (Wh)
        "energy_export_kwh": 0.008,  # 8 (Wh)
        "power_import_w": 1122.0,
        "voltage_l1_v": 230.7,
        "current_l1_a": 0.0,
    }


def test_a_unit_the_profile_does_not_expect_is_refused() -> None:
    spec = DlmsField(field="energy_import_kwh", obis="1.0.1.8.0.255", cosem_unit=32)  # varh
    with pytest.raises(ValueError, match="the meter reports unit code 30, the profile expects 32"):
        scaled_field(spec, han_registers()["1.0.1.8.0.255"])
