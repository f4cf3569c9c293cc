"""Golden tests: real DLMS/COSEM frames published by dlms-cosem (captures/dlms/PROVENANCE.md) decoded
by the client CityGW builds (Gurux, as ``firmware_bridge.dlms`` configures it) and by the simulator's
range parsing; expected values are the source's own decoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Conformance
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo

from firmware_bridge.dlms import WRAPPER_HEADER, DlmsLine, DlmsRefused, Meter, gurux_client
from firmware_bridge.profile import DlmsProfile
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
