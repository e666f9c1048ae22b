"""Benchmark worker, run in a fresh process so every measurement starts from a clean interpreter.

``python -m edgeseg.bench.probe --bundle B --mode {latency,memory} ...`` loads the bundle with the
torch-free runtime, runs the requested timing boundary and prints exactly one JSON object on stdout
(anything else written to stdout, native libraries included, is sent to stderr).

* latency: seconds to ``runtime.load`` as an application calls it, bundle sha256 check included
  (``load_s``), the first call (``first_inference_ms``), then ``--warmup`` untimed and ``--iters``
  timed calls (``seconds``).
* memory: load and a few calls, then peak (``VmHWM``) and current (``VmRSS``) resident set size in MiB.

A latency pass with ``--scenario`` runs an MLPerf LoadGen scenario instead of the ``--iters`` calls
(:mod:`edgeseg.bench.scenarios`; ``seconds`` are then the per-sample latencies the system under test saw and
the record gains a ``scenario`` block); with ``--duration`` it repeats the boundary for that many seconds
(:mod:`edgeseg.bench.sustained`; a ``sustained`` block with the time series, drift and energy).

The boundary is ``model`` (``seg.logits`` on a fixed normalised input), ``end-to-end``
(``seg.predict`` on a fixed uint8 image of ``--image-size``) or ``stream`` (``seg.stream`` over a cycle of
uint8 frames of ``--image-size``: each duration is the interval between two consecutive results, the first
``--warmup`` intervals untimed). Inputs are made before any timing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg import runtime
from edgeseg.bench import BOUNDARIES, DEFAULT_IMAGE_SIZE, IMAGE_BOUNDARIES
from edgeseg.bench.energy import SYSFS
from edgeseg.bench.scenarios import SCENARIOS, ScenarioSettings, run_scenario
from edgeseg.bench.sustained import run_sustained
from edgeseg.bench.timing import time_callable
from edgeseg.imaging import parse_size

MODES = ("latency", "memory")
MEMORY_RUNS = 3
# Distinct frames the stream boundary cycles through (so no two neighbours are the same array).
STREAM_FRAMES = 4


def _parser() -> argparse.ArgumentParser:
    """Command-line arguments of the worker."""
    p = argparse.ArgumentParser(prog="python -m edgeseg.bench.probe", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--backend", default=None, help="runtime backend; default: the bundle's own")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads; default: the backend's")
    p.add_argument("--any-precision", action="store_true", help="run another precision's artifact (see runtime.load)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--boundary", choices=tuple(BOUNDARIES), default="model")
    p.add_argument("--image-size", type=parse_size, default=DEFAULT_IMAGE_SIZE, help="HxW, end-to-end and stream")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--video", type=Path, default=None, help="frames of end-to-end and stream, decoded from this file")
    p.add_argument(
        "--inferences", type=int, default=None, help="stream: frames in the model at once; default: video_inferences"
    )
    p.add_argument("--scenario", choices=tuple(SCENARIOS), default=None, help="MLPerf LoadGen scenario (model)")
    p.add_argument("--min-duration", type=float, default=ScenarioSettings.min_duration_s, help="LoadGen, seconds")
    p.add_argument("--min-queries", type=int, default=ScenarioSettings.min_queries, help="LoadGen")
    p.add_argument("--server-qps", type=float, default=None, help="Server target QPS; default: from the warm-up")
    p.add_argument("--server-latency-ms", type=float, default=None, help="Server latency bound; default: warm-up")
    p.add_argument("--duration", type=float, default=None, help="sustained run of this many seconds")
    p.add_argument("--window", type=float, default=None, help="sustained run: seconds per median window")
    return p


def _frames(image_size: tuple[int, int], video: Path | None) -> Iterator[np.ndarray]:
    """Endless RGB frames: decoded from ``video`` (from its start again at its end; decoding is part of every
    frame), else a cycle of ``STREAM_FRAMES`` fixed random frames of ``image_size``."""
    if video is None:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(STREAM_FRAMES)]
        yield from itertools.cycle(frames)
        return
    from edgeseg.video import open_source

    while True:
        with open_source(str(video)) as source:
            count = 0
            for frame in source:
                count += 1
                yield frame.image
        if not count:
            raise ValueError(f"{video} has no frame to benchmark")


def _workload(
    seg: runtime.Segmenter, boundary: str, image_size: tuple[int, int], video: Path | None = None
) -> Callable[[], object]:
    """The call to measure, with its fixed input already built (the video's first frame, if one is given)."""
    if boundary == "model":
        rng = np.random.default_rng(0)
        x = seg.preprocess(rng.integers(0, 256, (*seg.input_size, 3), dtype=np.uint8))
        return lambda: seg.logits(x)
    image = next(_frames(image_size, video))
    return lambda: seg.predict(image)


def _stream_intervals(
    seg: runtime.Segmenter, image_size: tuple[int, int], count: int, video: Path | None, inferences: int
) -> tuple[float, list[float]]:
    """Stream ``count`` + 1 frames; return the seconds to the first result and the ``count`` intervals after it."""
    clock = time.perf_counter
    start = clock()
    frames = itertools.islice(_frames(image_size, video), count + 1)
    stamps = [clock() for _ in seg.stream(frames, inferences=inferences)]
    return stamps[0] - start, [b - a for a, b in itertools.pairwise(stamps)]


def _call_events(fn: Callable[[], object]) -> Generator[float, None, None]:
    """Call ``fn`` forever; yield the seconds each call took."""
    clock = time.perf_counter
    while True:
        start = clock()
        fn()
        yield clock() - start


def _stream_events(
    seg: runtime.Segmenter, image_size: tuple[int, int], video: Path | None, inferences: int
) -> Generator[float, None, None]:
    """Stream frames forever; yield the interval between consecutive results."""
    clock = time.perf_counter
    last = clock()
    for _ in seg.stream(_frames(image_size, video), inferences=inferences):
        now = clock()
        yield now - last
        last = now


def _special_run(seg: runtime.Segmenter, args: argparse.Namespace, fn: Callable[[], object]) -> dict[str, Any]:
    """The ``--scenario`` or ``--duration`` measurement after the first call: its seconds and its block."""
    if args.scenario is not None:
        settings = ScenarioSettings(
            args.scenario, args.min_duration, args.min_queries, args.server_qps, args.server_latency_ms
        )
        block, seconds = run_scenario(seg, settings, args.warmup)
        return {"seconds": seconds, "scenario": block}
    if args.boundary == "stream":
        events = _stream_events(seg, args.image_size, args.video, args.inferences)
        for _ in range(args.warmup):
            next(events)
    else:
        time_callable(fn, warmup=args.warmup, iters=1)
        events = _call_events(fn)
    block = run_sustained(events, args.duration, args.window, SYSFS)
    events.close()
    return {"seconds": [ms / 1000.0 for ms in block["latency_ms"]], "sustained": block}


def resident_mb() -> dict[str, float | None]:
    """Peak and current resident set size of this process in MiB (None where /proc is unavailable)."""
    fields: dict[str, float | None] = {"VmHWM": None, "VmRSS": None}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key in fields:
            fields[key] = int(value.split()[0]) / 1024  # reported in kB (KiB)
    return {"peak_rss_mb": fields["VmHWM"], "rss_mb": fields["VmRSS"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run one pass and return its JSON-able record."""
    start = time.perf_counter()
    with runtime.load(args.bundle, args.backend, args.threads, any_precision=args.any_precision) as seg:
        load_s = time.perf_counter() - start
        record = _measure(seg, args, load_s)
    record["torch_imported"] = "torch" in sys.modules
    return record


def _measure(seg: runtime.Segmenter, args: argparse.Namespace, load_s: float) -> dict[str, Any]:
    """The requested measurement of the loaded ``seg``."""
    if args.video is not None and args.boundary in IMAGE_BOUNDARIES:  # the frames' size is the video's
        args.image_size = next(_frames(args.image_size, args.video)).shape[:2]
    if args.boundary == "stream" and args.inferences is None:
        args.inferences = runtime.video_inferences(seg)
    record: dict[str, Any] = {
        "mode": args.mode,
        "backend": seg.backend,
        "artifact": seg.artifact,
        "precision": seg.precision,
        "threads": args.threads,
        "boundary": args.boundary,
        "image_size": list(args.image_size) if args.boundary in IMAGE_BOUNDARIES else None,
        "video": str(args.video) if args.video is not None and args.boundary in IMAGE_BOUNDARIES else None,
        "inferences": args.inferences if args.boundary == "stream" else None,
    }
    special = args.mode == "latency" and (args.scenario is not None or args.duration is not None)
    if args.boundary == "stream" and not special:
        count = args.warmup + args.iters if args.mode == "latency" else MEMORY_RUNS
        first_s, intervals = _stream_intervals(seg, args.image_size, count, args.video, args.inferences)
        if args.mode == "latency":
            record.update(load_s=load_s, first_inference_ms=first_s * 1000.0, seconds=intervals[args.warmup :])
        else:
            record.update(resident_mb())
        return record
    fn = _workload(seg, args.boundary, args.image_size, args.video)
    if args.mode == "latency":
        start = time.perf_counter()
        fn()
        first_s = time.perf_counter() - start
        record.update(load_s=load_s, first_inference_ms=first_s * 1000.0)
        if special:
            record.update(_special_run(seg, args, fn))
        else:
            record.update(seconds=time_callable(fn, warmup=args.warmup, iters=args.iters))
    else:
        for _ in range(MEMORY_RUNS):
            fn()
        record.update(resident_mb())
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse arguments, run the pass, print its record as one JSON line."""
    args = _parser().parse_args(argv)
    result = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # keep stdout for the record alone
    record = run(args)
    result.write(json.dumps(record) + "\n")
    result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
