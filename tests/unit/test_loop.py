"""Every service process's garbage-collector thresholds (a measured lever: docs/PERFORMANCE.md)."""

from __future__ import annotations

import gc

from service.common.loop import GC_THRESHOLDS, run, tune_gc


def test_tune_gc_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_every_process_run_on_the_loop_gets_the_tuned_collector() -> None:
    # The relay and the consumers start through run(); the API through serve(), tune_gc too.
    async def thresholds() -> tuple[int, int, int]:
        return gc.get_threshold()

    before = gc.get_threshold()
    try:
        assert run(thresholds()) == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
