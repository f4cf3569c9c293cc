"""Process-wide settings a collector process runs best with, set by its entry point.

They belong to the process, not to one ``Collector``: a library class that changed them would
change them for everything else in the process (the demo runs the API beside its collector,
tests run many collectors). The entry points (``citygw collector run``, with the values of its
settings (collector/settings.py), the demo, bench/ingest.py) call ``tune_process`` once before they
start their collector.

- GIL switch interval: each time the store answers, a writer thread needs the GIL back from the
  converter; at Python's default 5 ms a busy converter halved the write rate (collector/README.md,
  "Speed"), at 1 ms it does not.
- Young-generation GC threshold: the converter allocates some thousand dicts per message and
  frees them at once (no cycles), so the cyclic collector run every 700 allocations only cost
  time (about 15 % of the converter's); every 20 000 it costs none measurable.
"""

from __future__ import annotations

import gc
import sys

GIL_SWITCH_INTERVAL_S = 0.001
GC_YOUNG_THRESHOLD = 20_000


def tune_process(
    gil_switch_interval_s: float | None = GIL_SWITCH_INTERVAL_S,
    gc_young_threshold: int | None = GC_YOUNG_THRESHOLD,
) -> None:
    """Lower the switch interval and raise the young GC threshold to these (never the reverse;
    None leaves Python's)."""
    if gil_switch_interval_s is not None and sys.getswitchinterval() > gil_switch_interval_s:
        sys.setswitchinterval(gil_switch_interval_s)
    young, *older = gc.get_threshold()
    if gc_young_threshold is not None and young < gc_young_threshold:
        gc.set_threshold(gc_young_threshold, *older)


__all__ = ["GC_YOUNG_THRESHOLD", "GIL_SWITCH_INTERVAL_S", "tune_process"]
