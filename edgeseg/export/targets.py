"""Target artifacts built from the portable ``model.onnx``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ONNX_FILE = "model.onnx"
ORT_FILE = "model.ort.onnx"
OPENVINO_FILE = "model.xml"
# OpenVINO on AVX512-BF16/AMX CPUs infers in bf16 unless told otherwise; fp32 bundles pin f32.
OPENVINO_FP32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class TargetArtifacts:
    """What a target adds to a bundle: files, the backend → file map and validated runtime settings."""

    files: list[str]
    artifacts: dict[str, str]
    runtime_config: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_onnxruntime(folder: Path) -> TargetArtifacts:
    """ONNX Runtime's optimised graph, saved at the extended level (portable across CPUs, no NCHWc)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / ORT_FILE)
    ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    return TargetArtifacts([ONNX_FILE, ORT_FILE], {"onnx": ONNX_FILE, "onnxruntime": ORT_FILE})


def build_openvino(folder: Path) -> TargetArtifacts:
    """OpenVINO IR with fp32 weights (``save_model`` would compress them to fp16 by default)."""
    import openvino as ov

    # read_model, not convert_model: the latter parses its argument like a command line and splits on commas.
    model = ov.Core().read_model(str(folder / ONNX_FILE))
    ov.save_model(model, str(folder / OPENVINO_FILE), compress_to_fp16=False)
    return TargetArtifacts(
        [ONNX_FILE, OPENVINO_FILE, "model.bin"],
        {"onnx": ONNX_FILE, "openvino": OPENVINO_FILE},
        {"openvino": dict(OPENVINO_FP32_CONFIG)},
    )


def build_onnx(folder: Path) -> TargetArtifacts:
    """The portable graph alone."""
    del folder
    return TargetArtifacts([ONNX_FILE], {"onnx": ONNX_FILE})


BUILDERS = {"onnx": build_onnx, "onnxruntime": build_onnxruntime, "openvino": build_openvino}
