"""Field captures (``testcases/<case>/capture.jsonl`` anywhere under tests/): today's profile decodes
the captured words to the expected readings, and the replayed device answers as captured, over
Modbus TCP and over a serial line. Adding a capture adds a folder, not a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.capture import Exchange, capture_device, check_case, find_cases, load_case
from firmware_bridge.planner import ReadRequest
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import CaptureReplay
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to

TESTS = Path(__file__).parents[1]
CASES = find_cases(TESTS)


def case_id(folder: Path) -> str:
    return str(folder.relative_to(TESTS))


def test_the_repository_holds_captures_and_one_from_a_real_device() -> None:
    origins = {load_case(folder).info.origin for folder in CASES}
    assert "published" in origins or "field" in origins, [case_id(f) for f in CASES]


@pytest.mark.parametrize("folder", CASES, ids=case_id)
def test_capture_decodes_to_the_expected_readings(folder: Path) -> None:
    case = load_case(folder)
    problems = check_case(case, load_profile(case.info.profile))
    assert not problems, f"{case_id(folder)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("folder", CASES, ids=case_id)
async def test_replayed_capture_answers_as_captured(folder: Path, transport: Transport) -> None:
    case = load_case(folder)
    replay = CaptureReplay(case)
    async with line_to(transport, [replay]) as line:
        for exchange in case.exchanges:
            request = replay_request(exchange)
            if exchange.words is not None:
                assert await line.read_request(case.info.unit, request) == exchange.words
    if all(e.ms is not None for e in case.exchanges):  # a complete capture: capturing it again is equal
        async with line_to(transport, [CaptureReplay(case)]) as line:
            again = await capture_device(line, case.info.unit, replay.profile)
        assert [e.model_copy(update={"ms": None}) for e in again] == [
            e.model_copy(update={"ms": None}) for e in case.exchanges
        ]


def replay_request(exchange: Exchange) -> ReadRequest:
    return ReadRequest(exchange.table, exchange.address, exchange.count, ())
