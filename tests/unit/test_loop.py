"""The API process's garbage-collector thresholds (a measured lever: docs/PERFORMANCE.md)."""

from __future__ import annotations

import gc

from service.common.loop import GC_THRESHOLDS, tune_gc


def test_tune_gc_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)
