"""Segment every frame of a source into an output, pipelined, timing each frame (``edgeseg predict``)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

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
) -> dict[str, Any]:
    """Run ``segmenter.stream`` over ``source`` (at most ``max_frames`` frames) and write each label map.

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
    for labels in segmenter.stream(images()):
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
        "per_frame": timings[:done],
    }
