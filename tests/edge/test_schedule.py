"""Polling schedule: staggered phases and the backoff of a failing device."""

from __future__ import annotations

from edge.poller import MAX_BACKOFF_S, backoff, phase


def test_phase_is_stable_staggered_and_within_the_period() -> None:
    phases = [phase(f"meter-{n}", 10.0) for n in range(50)]
    assert all(0 <= p < 10.0 for p in phases)
    assert phases == [phase(f"meter-{n}", 10.0) for n in range(50)], "must not change between boots"
    assert len({round(p, 3) for p in phases}) >= 45, "devices must not all fire together"
    assert max(phases) - min(phases) > 5.0


def test_backoff_doubles_up_to_a_cap_but_never_below_the_period() -> None:
    assert [backoff(1.0, n) for n in range(8)] == [1, 2, 4, 8, 16, 32, MAX_BACKOFF_S, MAX_BACKOFF_S]
    assert backoff(300.0, 5) == 300.0
    assert backoff(0.2, 1000) == MAX_BACKOFF_S
