"""Live mode: segment a camera's frames as they come, latest frame wins, each result with its latency.

>>> with LiveSegmenter(seg, on_result) as live:        # on_result(LiveResult) runs in live's worker thread
...     for frame in camera:
...         live.submit(frame.image, frame.timestamp)  # returns at once
>>> live.stats                                         # submitted, processed, dropped, latency percentiles

One worker thread segments one frame at a time. A frame submitted while it is busy waits in a single slot;
a newer frame takes the slot and the older one is dropped (counted in ``dropped``), so the result is never
further behind the camera than one frame plus one inference. Closing processes the frame left in the slot.
Timestamps are capture times in seconds on the ``time.monotonic()`` clock (``edgeseg.video.Frame.timestamp``
is one); latency is the time from capture to the moment the result is handed to the callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from edgeseg.imaging import FrameError, ImageError, as_rgb_uint8


class LiveClosedError(RuntimeError):
    """A frame was submitted to a closed :class:`LiveSegmenter`."""


@dataclass(frozen=True)
class LiveResult:
    """The label map of one frame; ``index`` counts every submitted frame, dropped ones included."""

    labels: np.ndarray
    index: int
    timestamp: float
    latency: float
    dropped: int  # frames dropped so far


@dataclass(frozen=True)
class LiveStats:
    """Counts of a live session and the percentiles of its capture→result latencies (seconds; None if none)."""

    submitted: int
    processed: int
    dropped: int
    latency_p50: float | None
    latency_p90: float | None
    latency_max: float | None


class LiveSegmenter:
    """Segment submitted frames in a worker thread, dropping the ones that arrive while it is busy.

    ``callback(result)`` is called in the worker thread, one result at a time, in frame order. An exception
    in the model or the callback stops the worker; the next :meth:`submit` or :meth:`close` raises it.
    """

    def __init__(self, segmenter: Any, callback: Callable[[LiveResult], object]) -> None:
        self.segmenter = segmenter
        self.callback = callback
        self._lock = threading.Condition()
        self._slot: tuple[int, np.ndarray, float] | None = None
        self._submitted = self._processed = self._dropped = 0
        self._latencies: list[float] = []
        self._closing = False
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name="edgeseg-live", daemon=True)
        self._worker.start()

    def submit(self, image: Any, timestamp: float | None = None) -> None:
        """Hand over a frame captured at ``timestamp`` (``time.monotonic()`` seconds; default: now); returns at once.

        Raises :class:`~edgeseg.imaging.FrameError` for a frame that is not a usable image, and the worker's
        error when it stopped on one.
        """
        captured = time.monotonic() if timestamp is None else float(timestamp)
        with self._lock:
            self._raise_if_failed()
            if self._closing:
                raise LiveClosedError("this LiveSegmenter is closed; create a new one to go on")
            index = self._submitted
            self._submitted += 1
        try:
            rgb = as_rgb_uint8(image)
        except ImageError as error:
            raise FrameError(index, error) from error
        with self._lock:
            if self._slot is not None:
                self._dropped += 1
            self._slot = (index, rgb, captured)
            self._lock.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        """The worker: take the newest frame, segment it, hand the result over; until closed and empty."""
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._slot is not None or self._closing)
                if self._slot is None:
                    return
                (index, rgb, captured), self._slot = self._slot, None
                dropped = self._dropped
            try:
                labels = self.segmenter.predict(rgb)
                latency = time.monotonic() - captured
                self.callback(LiveResult(labels, index, captured, latency, dropped))
            except BaseException as error:
                with self._lock:
                    self._error = error
                    self._closing = True
                return
            with self._lock:
                self._processed += 1
                self._latencies.append(latency)

    @property
    def stats(self) -> LiveStats:
        """What happened so far."""
        with self._lock:
            latencies = sorted(self._latencies)
            submitted, processed, dropped = self._submitted, self._processed, self._dropped
        if not latencies:
            return LiveStats(submitted, processed, dropped, None, None, None)
        p50, p90 = (float(v) for v in np.percentile(latencies, [50, 90]))
        return LiveStats(submitted, processed, dropped, p50, p90, latencies[-1])

    def close(self) -> LiveStats:
        """Process the frame still waiting, stop the worker and return the stats; raises the worker's error."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._worker.join()
        with self._lock:
            self._raise_if_failed()
        return self.stats

    def __enter__(self) -> LiveSegmenter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is None:
            self.close()
            return
        with self._lock:  # already failing: stop without processing the waiting frame, keep the first error
            self._slot = None
            self._closing = True
            self._lock.notify_all()
        self._worker.join()


def run_live(segmenter: Any, source: Iterable[Any], callback: Callable[[LiveResult], object]) -> LiveStats:
    """Feed every frame of ``source`` to a :class:`LiveSegmenter` as it arrives; returns the stats at its end.

    ``source`` yields images (captured when yielded) or objects with ``.image`` and ``.timestamp`` (such as
    :class:`edgeseg.video.Frame`). The source sets the pace (a camera delivers at its frame rate).
    """
    with LiveSegmenter(segmenter, callback) as live:
        for item in source:
            if hasattr(item, "image") and hasattr(item, "timestamp"):
                live.submit(item.image, item.timestamp)
            else:
                live.submit(item)
    return live.stats
