"""The scaffolding every meter line shares: asking again, naming the line when its port is missing."""

from __future__ import annotations

import pytest

from firmware_bridge.errors import DecodeError, DeviceCrcError, DeviceTimeout, LineUnavailable
from firmware_bridge.meter_line import MeterLine


class _Line(MeterLine[int]):
    kind = "Test"


def _line(retries: int = 2) -> _Line:
    return _Line("/dev/nonexistent-meter-port", baudrate=2400, timeout=0.1, retries=retries, name="t1")


def test_an_attempt_is_made_again_until_it_succeeds() -> None:
    errors = [DeviceTimeout("lost"), DeviceCrcError("garbled")]

    def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "telegram"

    assert _line(retries=2)._asking_again(attempt) == "telegram"


def test_the_last_error_is_raised_when_every_attempt_failed() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise DeviceTimeout(f"lost {len(calls)}")

    with pytest.raises(DeviceTimeout, match="lost 3"):
        _line(retries=2)._asking_again(attempt)
    calls.clear()
    with pytest.raises(DeviceTimeout, match="lost 1"):
        _line(retries=2)._asking_again(attempt, retries=0)


def test_an_error_not_named_again_is_not_retried() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise DecodeError("refused")

    with pytest.raises(DecodeError):
        _line(retries=3)._asking_again(attempt, (DeviceTimeout,))
    assert len(calls) == 1


async def test_a_missing_port_names_the_line() -> None:
    with pytest.raises(LineUnavailable, match="Test line t1: cannot open /dev/nonexistent-meter-port"):
        async with _line():
            pass


async def test_a_closed_line_runs_nothing() -> None:
    with pytest.raises(LineUnavailable, match="Test line t1 is not open"):
        await _line()._run(lambda: None)
