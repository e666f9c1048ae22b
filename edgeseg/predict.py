"""Segment the frames of a source into an output, timing each frame (``edgeseg predict``).

Video mode (``segment_source``) segments every frame, pipelined; live mode (``segment_live``) segments the newest
frame whenever the model is free and drops the frames that arrived while it was busy, as a camera app does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from edgeseg.live import LiveResult, LiveSegmenter
from edgeseg.progress import Bar
from edgeseg.video import Frame, Source
from edgeseg.video_out import LabelWriter


def segment_source(
    segmenter: Any,
    source: Source,
    writer: LabelWriter,
    *,
    max_frames: int | None = None,
    progress: Bar | None = None,
    inferences: int = 1,
) -> dict[str, Any]:
    """Run ``segmenter.stream`` over ``source`` (at most ``max_frames`` frames, ``inferences`` in the model at
    once) and write each label map.

    Returns a report: frame count, wall seconds, FPS and per-frame timings (``decode_ms``: reading the frame;
    ``latency_ms``: from the frame being read to its labels being written). Errors propagate; the caller
    aborts the writer.
    """
    held: deque[tuple[Frame, float]] = deque()
    timings: list[dict[str, Any]] = []

    def images() -> Iterator[np.ndarray]:
        frames = iter(source)
        while max_frames is None or len(timings) < max_frames:
            start = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            read = time.perf_counter()
            held.append((frame, read))
            timings.append({"index": frame.index, "name": frame.name, "decode_ms": (read - start) * 1e3})
            yield frame.image

    began = time.perf_counter()
    done = 0
    for labels in segmenter.stream(images(), inferences=inferences):
        frame, read = held.popleft()
        writer.write(frame, labels)
        timings[done]["latency_ms"] = (time.perf_counter() - read) * 1e3
        if frame.position is not None:
            timings[done]["position_s"] = frame.position
        done += 1
        if progress is not None:
            progress.update(1)
    seconds = time.perf_counter() - began
    if progress is not None:
        progress.close()
    return {
        "frames": done,
        "seconds": seconds,
        "fps": done / seconds if seconds > 0 else None,
        "inferences": inferences,
        "per_frame": timings[:done],
    }


def _paced(source: Source, realtime: bool, max_frames: int | None) -> Iterator[Frame]:
    """The source's frames (at most ``max_frames``); with ``realtime``, released at the source's frame rate.

    A paced frame's capture time is its release time, as if a camera had delivered it then.
    """
    frames = iter(source)
    interval = 1.0 / source.fps if realtime and source.fps else None
    start = time.monotonic()
    for count, frame in enumerate(frames):
        if max_frames is not None and count >= max_frames:
            return
        if interval is not None:
            time.sleep(max(0.0, start + count * interval - time.monotonic()))
            frame = replace(frame, timestamp=time.monotonic())
        yield frame


def segment_live(
    segmenter: Any,
    source: Source,
    writer: LabelWriter,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    progress: Bar | None = None,
) -> dict[str, Any]:
    """Live mode: the newest frame wins; frames that arrive while the model is busy are dropped and counted.

    ``realtime`` plays a video file at its frame rate (a camera or a stream sets its own pace). Only the frames
    that were segmented are written. Returns a report: frames read, segmented and dropped, wall seconds,
    segmented frames per second, capture → result latency percentiles (ms) and per-frame timings.
    """
    waiting: dict[int, Frame] = {}  # submitted and not yet segmented (or dropped), by submission order
    lock = threading.Lock()
    timings: list[dict[str, Any]] = []

    def written(result: LiveResult) -> None:
        with lock:
            frame = waiting.pop(result.index)
            for older in [i for i in waiting if i < result.index]:
                del waiting[older]  # dropped
        writer.write(frame, result.labels)
        timing = {"index": frame.index, "name": frame.name, "latency_ms": result.latency * 1e3}
        timings.append({**timing, "dropped_before": result.dropped})
        if progress is not None:
            progress.update(1)

    began = time.perf_counter()
    with LiveSegmenter(segmenter, written) as live:
        for submitted, frame in enumerate(_paced(source, realtime, max_frames)):
            with lock:
                waiting[submitted] = frame
            live.submit(frame.image, frame.timestamp)
    stats = live.stats
    seconds = time.perf_counter() - began
    if progress is not None:
        progress.close()
    return {
        "frames": stats.processed,
        "read": stats.submitted,
        "dropped": stats.dropped,
        "seconds": seconds,
        "fps": stats.processed / seconds if seconds > 0 else None,
        "latency_ms": {
            name: None if value is None else value * 1e3
            for name, value in (("p50", stats.latency_p50), ("p90", stats.latency_p90), ("max", stats.latency_max))
        },
        "per_frame": timings,
    }
