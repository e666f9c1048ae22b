"""Live mode: latest frame wins, drops counted, timestamps and latencies, errors surfaced (real ONNX Runtime)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import edgeseg.runtime
from edgeseg.imaging import FrameError
from edgeseg.live import LiveClosedError, LiveResult, LiveSegmenter
from edgeseg.video import Frame

CAMERA_FPS = 30.0


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (36, 60, 3), dtype=np.uint8) for _ in range(count)]


def camera(images: list[np.ndarray], fps: float = CAMERA_FPS) -> Iterator[Frame]:
    """A synthetic camera: each frame delivered at its capture time, ``1 / fps`` apart, timestamped."""
    start = time.monotonic()
    for index, image in enumerate(images):
        due = start + index / fps
        time.sleep(max(0.0, due - time.monotonic()))
        yield Frame(index, image, f"cam_{index}", time.monotonic())


@pytest.fixture(scope="module")
def segmenter(tiny_bundle) -> edgeseg.runtime.Segmenter:
    with edgeseg.runtime.load(tiny_bundle("onnx")) as seg:
        yield seg


def test_frames_that_arrive_while_busy_are_dropped_and_the_latest_wins(segmenter) -> None:
    images = frames(6)
    results: list[LiveResult] = []
    started, release = threading.Event(), threading.Event()

    def slow_callback(result: LiveResult) -> None:
        results.append(result)
        started.set()
        release.wait(10)

    live = LiveSegmenter(segmenter, slow_callback)
    live.submit(images[0], timestamp=100.0)
    assert started.wait(10)  # frame 0 is in the callback: the worker is busy
    for i in range(1, 6):
        live.submit(images[i], timestamp=100.0 + i)
    release.set()
    stats = live.close()
    assert [r.index for r in results] == [0, 5]  # 1..4 were replaced by newer frames
    assert [r.timestamp for r in results] == [100.0, 105.0]
    assert [r.dropped for r in results] == [0, 4]
    assert (stats.submitted, stats.processed, stats.dropped) == (6, 2, 4)
    for result in results:
        np.testing.assert_array_equal(result.labels, segmenter.predict(images[result.index]))


def test_a_30_fps_camera_runs_live_with_latencies(segmenter) -> None:
    images = frames(30)
    results: list[LiveResult] = []
    stats = segmenter.live(camera(images), results.append)
    assert stats.submitted == 30 and stats.processed + stats.dropped == 30
    assert stats.processed == len(results) >= 1
    indices = [r.index for r in results]
    assert indices == sorted(set(indices)) and indices[-1] == 29  # in order, the last frame never dropped
    for result in results:
        assert 0 <= result.latency < 5
        np.testing.assert_array_equal(result.labels, segmenter.predict(images[result.index]))
    assert [r.dropped for r in results] == sorted(r.dropped for r in results)
    assert stats.latency_p50 is not None and 0 <= stats.latency_p50 <= stats.latency_p90 <= stats.latency_max


def test_a_bad_frame_is_refused_at_submit(segmenter) -> None:
    with LiveSegmenter(segmenter, lambda result: None) as live:
        live.submit(frames(1)[0])
        with pytest.raises(FrameError, match="frame 1: got a float32 image"):
            live.submit(np.zeros((8, 8, 3), np.float32))
    assert live.stats.submitted == 2 and live.stats.processed == 1


def test_a_callback_error_comes_back_and_a_closed_live_refuses_frames(segmenter) -> None:
    def broken(result: LiveResult) -> None:
        raise RuntimeError("display went away")

    live = LiveSegmenter(segmenter, broken)
    live.submit(frames(1)[0])
    with pytest.raises(RuntimeError, match="display went away"):
        live.close()
    ok = LiveSegmenter(segmenter, lambda result: None)
    ok.close()
    with pytest.raises(LiveClosedError):
        ok.submit(frames(1)[0])
