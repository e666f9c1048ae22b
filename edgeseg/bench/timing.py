"""Wall-clock timing of a zero-argument callable, shared by every benchmark in the project."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_callable(fn: Callable[[], object], *, warmup: int, iters: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times; return each timed call's seconds.

    Each duration is ``time.perf_counter`` taken immediately around one call, so it includes
    everything ``fn`` does and nothing else.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    durations = []
    clock = time.perf_counter
    for _ in range(iters):
        start = clock()
        fn()
        durations.append(clock() - start)
    return durations
