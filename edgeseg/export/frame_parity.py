"""Parity of frame-path graphs: every output against the PyTorch reference of the same output.

The reference is :class:`FrameReference`, an ``nn.Module`` written independently of the ONNX surgery: uint8
NHWC frame → ``F.interpolate(bilinear, align_corners=False, antialias=False)`` to the model size (the bundle's
resize rule: stretch, or keep the aspect ratio for a dynamic graph) →
``(x - mean) / std`` → the un-fused model in eager fp32 → logits, ``argmax`` labels, logits upsampled to the
frame size then ``argmax`` (``labels-full``), ``softmax`` (confidence). Frames: the parity images (stretched to
``--frame-size`` when fixed, else at their own size and enlarged to a camera-like size) and one uniform-noise
frame. Rungs per output: label agreement (labels, labels-full; the argmax of logits and confidence) and max
absolute difference (logits, confidence). Gates: at fp32 every label agreement ≥ ``FP32_AGREEMENT`` (only
exact ties may differ) and confidence within ``FP16_CONFIDENCE`` (its float16 rounding); at other precisions
the precision's ``agreement`` gate, when the export is gated (a checkpoint was given). The core graph inside
is checked by the full logit ladder as before (see :mod:`edgeseg.export.parity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.export.frame_path import FramePlan
from edgeseg.export.parity import PROXY_BACKENDS
from edgeseg.imaging import resize_bilinear
from edgeseg.manifest import BACKEND_OF_TARGET, OUTPUT_NAMES, KeepRatioResize, StretchResize
from edgeseg.runtimes import available_backends, create_runner

FP32_AGREEMENT = 0.9999
FP16_CONFIDENCE = 1e-3
UINT8_CONFIDENCE = 1.5 / 255  # one rounding step (a probability on a .5 boundary), and float error
# Parity frames are enlarged to about this size when the graph takes any frame size.
CAMERA_SIZE = (720, 1280)


class FrameReference(nn.Module):
    """The PyTorch reference of every frame-path output (see the module docstring)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        plan: FramePlan,
        resize: StretchResize | KeepRatioResize,
        mean: Any,
        std: Any,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.model, self.plan, self.resize = model, plan, resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.label_dtype = torch.uint8 if num_classes <= 256 else torch.int32

    def forward(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs by kind for a uint8 1×H×W×3 frame (a float 1×3×h×w model input when the plan takes floats)."""
        if not self.plan.takes_frames:
            logits = self.model(frame)
        else:
            x = frame.permute(0, 3, 1, 2).float()
            if self.plan.color == "BGR":
                x = x.flip(1)
            size = self.resize.size_for((x.shape[2], x.shape[3]))
            if tuple(x.shape[2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
            logits = self.model((x - self.mean) / self.std)
        outputs = {"logits": logits}
        if "labels" in self.plan.outputs:
            outputs["labels"] = logits.argmax(1).to(self.label_dtype)
        if "labels-full" in self.plan.outputs:
            full = F.interpolate(logits, size=tuple(frame.shape[1:3]), mode="bilinear", align_corners=False)
            outputs["labels-full"] = full.argmax(1).to(self.label_dtype)
        if "confidence" in self.plan.outputs:
            probabilities = logits.softmax(1)
            if self.plan.confidence_classes is not None:
                probabilities = probabilities[:, list(self.plan.confidence_classes)]
            uint8 = self.plan.confidence_dtype == "uint8"
            outputs["confidence"] = (probabilities * 255).round().to(torch.uint8) if uint8 else probabilities.half()
        return {kind: outputs[kind] for kind in self.plan.outputs}


def parity_frames(rgbs: list[np.ndarray], plan: FramePlan, seed: int) -> list[np.ndarray]:
    """1×H×W×3 uint8 frames in the graph's colour order: the images, resized as the plan allows, and noise."""
    rng = np.random.default_rng(seed)
    sizes = [plan.frame_size] if plan.frame_size else [None, CAMERA_SIZE]
    frames = []
    for rgb in rgbs:
        for size in sizes:
            image = rgb if size is None else np.rint(resize_bilinear(rgb, size)).clip(0, 255).astype(np.uint8)
            frames.append(image)
    frames.append(rng.integers(0, 256, (*(plan.frame_size or CAMERA_SIZE), 3), dtype=np.uint8))
    if plan.color == "BGR":
        frames = [f[..., ::-1] for f in frames]
    return [np.ascontiguousarray(f[None]) for f in frames]


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.mean(reference == candidate))


@dataclass
class FrameCheck:
    """Reference outputs for the parity frames, computed once; calling it checks a target's wrapped artifacts."""

    folder: Path
    plan: FramePlan
    frames: list[np.ndarray]
    reference: list[dict[str, np.ndarray]]
    precision: str
    agreement_gate: float
    gated: bool

    @classmethod
    def prepare(cls, reference: FrameReference, folder: Path, frames: list[np.ndarray], **settings: Any) -> FrameCheck:
        with torch.no_grad():
            outputs = [{k: v.numpy() for k, v in reference(torch.from_numpy(f.copy())).items()} for f in frames]
        return cls(folder, reference.plan, frames, outputs, **settings)

    def run_artifact(self, backend: str, filename: str, settings: dict[str, Any], precision: str) -> dict[str, Any]:
        """Every output of one artifact on every frame against the reference, with its gate verdict."""
        run_with = backend
        if backend in PROXY_BACKENDS and backend not in available_backends():
            run_with = PROXY_BACKENDS[backend]
        stats: dict[str, dict[str, float]] = {}
        with create_runner(run_with, self.folder / filename, config=settings if run_with == backend else {}) as runner:
            for frame, expected in zip(self.frames, self.reference):
                got = runner.infer_all(frame)
                for kind, ref in expected.items():
                    out = got[OUTPUT_NAMES[kind]]
                    if out.shape != ref.shape or out.dtype != ref.dtype:
                        wanted = f"{ref.dtype} {ref.shape}"
                        raise ValueError(f"{filename}: {kind} is {out.dtype} {out.shape}, expected {wanted}")
                    entry = stats.setdefault(kind, {"agreement": 1.0})
                    if kind == "confidence":  # float16, or uint8 in 1/255 steps
                        scale = 255.0 if ref.dtype == np.uint8 else 1.0
                        diff = float(np.max(np.abs(out.astype(np.float32) - ref.astype(np.float32)))) / scale
                        entry["max_abs"] = max(entry.get("max_abs", 0.0), diff)
                        entry["agreement"] = min(entry["agreement"], _agreement(ref.argmax(1), out.argmax(1)))
                    elif ref.dtype.kind == "f":
                        diff = float(np.max(np.abs(out.astype(np.float32) - ref.astype(np.float32))))
                        entry["max_abs"] = max(entry.get("max_abs", 0.0), diff)
                        entry["agreement"] = min(entry["agreement"], _agreement(ref.argmax(1), out.argmax(1)))
                    else:
                        entry["agreement"] = min(entry["agreement"], _agreement(ref, out))
        failures = self._failures(stats, precision)
        return {
            "backend": backend,
            "run_with": run_with,
            "file": filename,
            "precision": precision,
            "outputs": stats,
            "passed": not failures,
            "failures": failures,
        }

    def _failures(self, stats: dict[str, dict[str, float]], precision: str) -> list[str]:
        fp32 = precision == "fp32"
        if not fp32 and not self.gated:
            return []
        gate = FP32_AGREEMENT if fp32 else self.agreement_gate
        failures = [
            f"{kind} label agreement {entry['agreement']:.6f} < {gate:g}"
            for kind, entry in stats.items()
            if entry["agreement"] < gate
        ]
        confidence = stats.get("confidence", {}).get("max_abs", 0.0)
        confidence_gate = UINT8_CONFIDENCE if self.plan.confidence_dtype == "uint8" else FP16_CONFIDENCE
        if fp32 and confidence > confidence_gate:
            failures.append(f"confidence max_abs {confidence:.3g} > {confidence_gate:.3g}")
        return failures

    def _description(self) -> str:
        if not self.plan.takes_frames:
            return f"{len(self.frames)} parity images through the bundle's pre-processing (float input)"
        sizes = f" at {self.plan.frame_size}" if self.plan.frame_size else f", also enlarged to {CAMERA_SIZE}"
        return f"{len(self.frames)} uint8 {self.plan.color} frames (the parity images{sizes}, and one noise frame)"

    def __call__(self, artifacts: dict[str, str], runtime_config: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Check every artifact (target → file) of a bundle; the manifest's ``parity.frame`` entry."""
        results = {}
        for artifact, filename in artifacts.items():
            backend = BACKEND_OF_TARGET[artifact]
            precision = "fp32" if artifact == "onnx" else self.precision
            results[artifact] = self.run_artifact(backend, filename, runtime_config.get(backend, {}), precision)
        failures = [f"{name} (frame path): {f}" for name, r in results.items() for f in r["failures"]]
        return {
            "reference": "PyTorch eager fp32 (un-fused model) inside FrameReference: F.interpolate to the model size, "
            "(x - mean) / std, then argmax / upsample + argmax / softmax as each output says",
            "frames": self._description(),
            "gates": {
                "fp32": {
                    "agreement": FP32_AGREEMENT,
                    "confidence_max_abs": UINT8_CONFIDENCE
                    if self.plan.confidence_dtype == "uint8"
                    else FP16_CONFIDENCE,
                }
            }
            | ({self.precision: {"agreement": self.agreement_gate}} if self.gated and self.precision != "fp32" else {}),
            "results": results,
            "passed": not failures,
            "failures": failures,
        }
