"""One ``Segmenter`` shared by threads gives exactly the serial results (real ONNX Runtime and OpenVINO sessions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgeseg.runtime

CALLERS, FRAMES_PER_CALLER = 4, 50
MakeBundle = Callable[..., Path]


def frames(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``count`` different random RGB frames."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def predict_concurrently(seg: edgeseg.runtime.Segmenter, images: list[np.ndarray]) -> list[np.ndarray]:
    """Label maps of ``images``, split over ``CALLERS`` threads that start together and share ``seg``."""
    start = threading.Barrier(CALLERS)

    def caller(share: list[np.ndarray]) -> list[np.ndarray]:
        start.wait()
        return [seg.predict(image) for image in share]

    shares = [images[i::CALLERS] for i in range(CALLERS)]
    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(caller, shares))
    labels: list[np.ndarray] = [np.empty(0)] * len(images)
    for i, share in enumerate(results):
        labels[i::CALLERS] = share
    return labels


def assert_shared_equals_serial(seg: edgeseg.runtime.Segmenter, images: list[np.ndarray]) -> None:
    serial = [seg.predict(image) for image in images]
    shared = predict_concurrently(seg, images)
    wrong = [i for i, (a, b) in enumerate(zip(serial, shared, strict=True)) if not np.array_equal(a, b)]
    assert not wrong, f"{len(wrong)} of {len(images)} concurrent label maps differ from the serial ones"


@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_shared_segmenter_gives_the_serial_results(tiny_bundle: MakeBundle, target: str, threads: int | None) -> None:
    with edgeseg.runtime.load(tiny_bundle(target), threads=threads) as seg:
        assert_shared_equals_serial(seg, frames(CALLERS * FRAMES_PER_CALLER, (64, 96), seed=7))


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_shared_afformer_gives_the_serial_results(afformer_bundle, backend: str, threads: int | None) -> None:
    bundle = afformer_bundle("openvino", (64, 64))  # one export: its model.onnx runs on ONNX Runtime
    with edgeseg.runtime.load(bundle, backend, threads=threads) as seg:
        assert seg.backend == backend
        assert_shared_equals_serial(seg, frames(CALLERS * FRAMES_PER_CALLER, (64, 64), seed=11))
