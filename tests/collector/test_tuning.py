"""Process tuning belongs to the entry point (collector/tuning.py), not to the Collector class."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.service import Collector
from collector.store.sqlite import SqliteStore
from collector.tuning import tune_process


@pytest.fixture
def untuned() -> Iterator[None]:
    before = (sys.getswitchinterval(), gc.get_threshold())
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        sys.setswitchinterval(before[0])
        gc.set_threshold(*before[1])


@pytest.mark.usefixtures("untuned")
def test_tune_process_lowers_the_switch_interval_and_raises_the_gc_threshold_never_the_reverse() -> None:
    tune_process(gil_switch_interval_s=0.002, gc_young_threshold=12_345)
    assert sys.getswitchinterval() == pytest.approx(0.002)
    assert gc.get_threshold() == (12_345, 10, 10)

    tune_process(gil_switch_interval_s=0.004, gc_young_threshold=1000)
    assert sys.getswitchinterval() == pytest.approx(0.002)
    assert gc.get_threshold() == (12_345, 10, 10)


@pytest.mark.usefixtures("untuned")
def test_none_leaves_pythons_settings() -> None:
    tune_process(gil_switch_interval_s=None, gc_young_threshold=None)
    assert sys.getswitchinterval() == pytest.approx(0.005)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("untuned")
def test_a_collector_leaves_the_process_settings_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with Collector("mqtt://127.0.0.1:9", store):
        assert sys.getswitchinterval() == pytest.approx(0.005)
        assert gc.get_threshold() == (700, 10, 10)
    store.close()
