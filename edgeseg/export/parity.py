"""Parity of exported artifacts against the PyTorch reference (logits at the model's native stride)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.bundle import BACKEND_OF_TARGET
from edgeseg.export.calibration import ImageSet
from edgeseg.ladder import Ladder, check_gates
from edgeseg.metrics import LogitAccumulator
from edgeseg.runtimes import available_backends, create_runner


class ParityError(RuntimeError):
    """An artifact's outputs differ from the reference by more than the tolerance."""


@dataclass(frozen=True)
class ParityInputs:
    """Deterministic test inputs: standard-normal tensors and normalised random uint8 images."""

    arrays: list[np.ndarray]
    description: str


def make_inputs(
    input_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...], count: int = 3, seed: int = 0
) -> ParityInputs:
    """``count`` inputs: the first is a normalised random image, the rest N(0, 1)."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    arrays = []
    for i in range(count):
        if i == 0:
            image = rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)
            x = ((image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)[None]
        else:
            x = rng.standard_normal((1, 3, h, w), dtype=np.float32)
        arrays.append(np.ascontiguousarray(x, dtype=np.float32))
    description = f"{count} inputs (seed {seed}): 1 normalised uniform-random uint8 image, {count - 1} N(0,1)"
    return ParityInputs(arrays, description)


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
    """Max / mean absolute difference (over every element) and mean argmax agreement over all inputs."""
    logits = LogitAccumulator()
    for ref, cand in zip(reference, candidate):
        logits.add(ref, cand)
    agree = [np.mean(r.argmax(axis=1) == c.argmax(axis=1)) for r, c in zip(reference, candidate)]
    return {
        "max_abs": logits.max_abs,
        "mean_abs": logits.sum_abs / logits.count,
        "argmax_agreement": float(np.mean(agree)),
    }


def measure(
    reference: list[np.ndarray], infer: Callable[[np.ndarray], np.ndarray], inputs: ParityInputs
) -> dict[str, float]:
    """Run ``infer`` on every input and compare with the reference outputs."""
    outputs = [infer(x) for x in inputs.arrays]
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            raise ParityError(f"output shape {out.shape} differs from the reference {ref.shape}")
    return compare(reference, outputs)


def random_inputs_at(
    sizes: list[tuple[int, int]], mean: tuple[float, ...], std: tuple[float, ...], count: int, seed: int
) -> dict[tuple[int, int], ParityInputs]:
    """:func:`make_inputs` at each size."""
    return {size: make_inputs(size, mean, std, count, seed) for size in sizes}


# Artifacts TensorRT would run are checked in ONNX Runtime where TensorRT is not installed.
PROXY_BACKENDS = {"tensorrt": "onnxruntime"}


@dataclass
class ArtifactCheck:
    """The parity ladder and the gates for every artifact of a bundle, against fixed reference outputs.

    Reference outputs are computed once (``prepare``); calling the check on a target's artifacts runs each
    on its backend and returns the manifest's ``parity`` entry, with ``passed`` and the failing rungs.
    """

    folder: Path
    images: ImageSet
    image_reference: list[np.ndarray]
    random_inputs: dict[tuple[int, int], ParityInputs]
    random_reference: dict[tuple[int, int], list[np.ndarray]]
    num_classes: int
    precision: str
    gates: dict[str, float]
    fp32_gates: dict[str, float]
    gated: bool

    @classmethod
    def prepare(
        cls,
        reference: Callable[[np.ndarray], np.ndarray],
        folder: Path,
        images: ImageSet,
        random_inputs: dict[tuple[int, int], ParityInputs],
        **settings: Any,
    ) -> ArtifactCheck:
        """Run ``reference`` (the PyTorch model) on every input once."""
        return cls(
            folder,
            images,
            [reference(x) for x in images.inputs],
            random_inputs,
            {size: [reference(x) for x in inputs.arrays] for size, inputs in random_inputs.items()},
            **settings,
        )

    def run_artifact(self, backend: str, filename: str, settings: dict[str, Any], precision: str) -> dict[str, Any]:
        """Ladder on the images and max-abs on the random inputs for one artifact, with its gate verdict."""
        run_with = backend
        if backend in PROXY_BACKENDS and backend not in available_backends():
            run_with = PROXY_BACKENDS[backend]
        ladder = Ladder(self.num_classes)
        with create_runner(run_with, self.folder / filename, config=settings if run_with == backend else {}) as runner:
            for x, ref, size, labels in zip(
                self.images.inputs, self.image_reference, self.images.image_sizes, self.images.labels
            ):
                ladder.add(ref, runner.infer(x), size, labels if self.images.labelled else None)
            by_size = {
                f"{h}x{w}": measure(self.random_reference[(h, w)], runner.infer, inputs)
                for (h, w), inputs in self.random_inputs.items()
            }
        rungs = ladder.result()
        random_max = max(m["max_abs"] for m in by_size.values())
        gates = self.fp32_gates if precision == "fp32" else self.gates
        checked = {**rungs, "max_abs": max(rungs["max_abs"], random_max)}
        if not self.gated:
            gates = {k: v for k, v in gates.items() if k == "max_abs" and precision == "fp32"}
        if not self.images.labelled:
            gates = {k: v for k, v in gates.items() if k != "miou_drop"}
        failures = check_gates(checked, gates)
        return {
            "backend": backend,
            "run_with": run_with,
            "file": filename,
            "precision": precision,
            "settings": settings,
            "max_abs": checked["max_abs"],
            "mean_abs": float(np.mean([m["mean_abs"] for m in by_size.values()])),
            "argmax_agreement": min(m["argmax_agreement"] for m in by_size.values()),
            "by_size": by_size,
            "ladder": rungs,
            "gates": gates,
            "passed": not failures,
            "failures": failures,
        }

    def __call__(self, artifacts: Any) -> dict[str, Any]:
        """Check every artifact of ``artifacts`` (a :class:`~edgeseg.export.targets.TargetArtifacts`)."""
        results = {}
        for artifact, filename in artifacts.artifacts.items():
            backend = BACKEND_OF_TARGET[artifact]
            precision = "fp32" if artifact == "onnx" else self.precision
            results[artifact] = self.run_artifact(
                backend, filename, artifacts.runtime_config.get(backend, {}), precision
            )
        failures = [f"{name}: {f}" for name, r in results.items() for f in r["failures"]]
        proxies = {name: r["run_with"] for name, r in results.items() if r["run_with"] != r["backend"]}
        return {
            "reference": "PyTorch eager fp32 (un-fused model), logits at the native stride",
            "images": self.images.description + ", through the bundle's pre-processing",
            "inputs": next(iter(self.random_inputs.values())).description
            + f", at {', '.join(f'{h}x{w}' for h, w in self.random_inputs)}",
            "gates": {"fp32": self.fp32_gates, self.precision: self.gates},
            "gated": self.gated,
            "note": None
            if self.gated
            else "random weights (no checkpoint): the ladder is reported but only fp32's max_abs is gated",
            "proxies": {
                name: f"checked in {backend} (CPU): TensorRT is not installed here, so the engine build is unverified"
                for name, backend in proxies.items()
            },
            "results": results,
            "passed": not failures,
            "failures": failures,
        }
