"""Segment every frame of a source into an output, pipelined, timing each frame (``edgeseg predict``)."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from edgeseg.video import Frame, Source
from edgeseg.video_out import LabelWriter

# The progress line is redrawn at most this often (seconds).
PROGRESS_INTERVAL = 0.25


class Progress:
    """A one-line progress report with frames per second on ``stream``, redrawn in place; silent when disabled."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.total, self.stream = total, stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._start = time.perf_counter()
        self._shown = 0.0
        self._count = 0

    def update(self, count: int) -> None:
        """Report ``count`` frames done (drawn only when the interval has passed)."""
        self._count = count
        now = time.perf_counter()
        if self.enabled and now - self._shown >= PROGRESS_INTERVAL:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        fps = self._count / max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        bar = ""
        if self.total:
            filled = int(30 * min(self._count / self.total, 1.0))
            bar = "[" + "#" * filled + "." * (30 - filled) + "] "
        self.stream.write(f"\r{bar}{self._count}{of} frames  {fps:.1f} FPS")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final count and end the line."""
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


def segment_source(
    segmenter: Any,
    source: Source,
    writer: LabelWriter,
    *,
    max_frames: int | None = None,
    progress: Progress | None = None,
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
            progress.update(done)
    seconds = time.perf_counter() - began
    if progress is not None:
        progress.finish()
    return {
        "frames": done,
        "seconds": seconds,
        "fps": done / seconds if seconds > 0 else None,
        "per_frame": timings[:done],
    }
