"""``edgeseg export``: model → fused model → ONNX → target artifact → parity → bundle, written atomically."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import edgeseg
from edgeseg import bundle as bundle_format
from edgeseg.export.onnx_graph import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    export_onnx,
    graph_shape,
    op_histogram,
    simplify,
)
from edgeseg.export.parity import ParityError, make_inputs, measure
from edgeseg.export.targets import BUILDERS, ONNX_FILE, TargetArtifacts
from edgeseg.models import count_macs, count_params, create, get_spec, list_models
from edgeseg.models.fusion import fuse_model
from edgeseg.runtimes import create_runner

TOOLS = ("torch", "onnx", "onnxscript", "onnxslim", "onnxruntime", "openvino", "numpy")


@dataclass(frozen=True)
class ExportRequest:
    """Everything ``edgeseg export`` needs to know."""

    model: str
    out: Path
    target: str = "onnxruntime"
    input_size: tuple[int, int] = (512, 512)
    num_classes: int = 150
    checkpoint: Path | None = None
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    tolerance: float = 1e-4
    parity_inputs: int = 3
    seed: int = 0
    force: bool = False
    dynamic: bool = False


def tool_versions() -> dict[str, str]:
    """Versions of the tools that made the bundle."""
    versions = {"edgeseg": edgeseg.__version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _validate(request: ExportRequest) -> None:
    spec = get_spec(request.model)
    if request.target not in BUILDERS:
        raise ValueError(f"unknown target {request.target!r}; choose one of {', '.join(BUILDERS)}")
    if request.precision != "fp32":
        raise ValueError(f"precision {request.precision!r} is not supported yet; use fp32")
    h, w = request.input_size
    if h % spec.input_multiple or w % spec.input_multiple:
        raise ValueError(
            f"{request.model} needs input sides that are multiples of {spec.input_multiple}, got {h}x{w}; "
            f"resize to e.g. {h - h % spec.input_multiple or spec.input_multiple}x"
            f"{w - w % spec.input_multiple or spec.input_multiple}"
        )
    if spec.task != "segmentation":
        raise ValueError(
            f"{request.model} is an ImageNet {spec.task} model, not a segmenter; export its segmentation "
            f"variant instead ({', '.join(n for n in list_models() if n.startswith(request.model + '-'))})"
        )
    if request.dynamic and not spec.dynamic_resolution:
        raise ValueError(
            f"{request.model} cannot export one graph for every size (its graph bakes size-dependent constants); "
            "export one static bundle per input size instead (drop --dynamic)"
        )
    if request.out.exists() and any(request.out.iterdir()) and not request.force:
        raise FileExistsError(f"{request.out} exists and is not empty; pass --force to replace it")


def _build_model(request: ExportRequest) -> torch.nn.Module:
    torch.manual_seed(request.seed)
    return create(request.model, num_classes=request.num_classes, checkpoint=request.checkpoint)


def _weights_entry(request: ExportRequest, model: torch.nn.Module) -> dict[str, Any]:
    if request.checkpoint is None:
        return {"weights": "random", "weights_note": f"no checkpoint: PyTorch default init, seed {request.seed}"}
    report = model.checkpoint_report
    return {
        "weights": "checkpoint",
        "checkpoint": {
            "file": request.checkpoint.name,
            "sha256": bundle_format.sha256_of(request.checkpoint),
            "ignored_keys": report.ignored,
            "initialised_keys": report.initialised,
            "shared_module_copies": sum(len(v) - 1 for v in report.deduplicated.values()),
        },
    }


def second_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Another size of a different aspect ratio, to check that a dynamic graph is not tied to the example."""
    h, w = size
    other = (max(multiple, round(h * 0.75 / multiple) * multiple), max(multiple, round(w * 1.25 / multiple) * multiple))
    return other if other != size else (h + multiple, w)


def _parity_report(
    request: ExportRequest,
    model: torch.nn.Module,
    folder: Path,
    artifacts: TargetArtifacts,
    sizes: list[tuple[int, int]],
) -> dict[str, Any]:
    """Run every artifact against the PyTorch model at each size; raise ParityError past the tolerance."""
    spec = get_spec(request.model)
    inputs = {size: make_inputs(size, spec.mean, spec.std, request.parity_inputs, request.seed) for size in sizes}
    with torch.no_grad():
        reference = {size: [model(torch.from_numpy(x)).numpy() for x in inputs[size].arrays] for size in sizes}
    results = {}
    for artifact, filename in artifacts.artifacts.items():
        backend = bundle_format.BACKEND_OF_TARGET[artifact]
        settings = artifacts.runtime_config.get(backend, {})
        runner = create_runner(backend, folder / filename, config=settings)
        by_size = {f"{h}x{w}": measure(reference[(h, w)], runner.infer, inputs[(h, w)]) for h, w in sizes}
        results[artifact] = {
            "backend": backend,
            "file": filename,
            "settings": settings,
            "max_abs": max(m["max_abs"] for m in by_size.values()),
            "mean_abs": float(np.mean([m["mean_abs"] for m in by_size.values()])),
            "argmax_agreement": min(m["argmax_agreement"] for m in by_size.values()),
            "by_size": by_size,
        }
    failed = {k: v["max_abs"] for k, v in results.items() if not v["max_abs"] <= request.tolerance}
    if failed:
        worst = ", ".join(f"{k} max abs diff {v:.3g}" for k, v in failed.items())
        raise ParityError(
            f"parity check failed for {request.model} at {', '.join(by_size)}: {worst} > tolerance "
            f"{request.tolerance:g}. Nothing was written. Report this with the command line; --tolerance changes "
            "the gate."
        )
    return {
        "reference": "PyTorch eager fp32 (un-fused model), logits at the native stride",
        "inputs": next(iter(inputs.values())).description + f", at {', '.join(by_size)}",
        "tolerance": {"max_abs": request.tolerance},
        "passed": True,
        "results": results,
    }


def _resize_policy(request: ExportRequest, multiple: int) -> dict[str, Any]:
    """How the runtime sizes an image for the graph: stretch to the static size, or keep the aspect ratio."""
    h, w = request.input_size
    if not request.dynamic:
        return {"mode": "stretch", "size": [h, w]}
    short = min(h, w)
    return {"mode": "keep_ratio", "short_side": short, "max_long_side": 4 * short, "multiple": multiple}


def _write_bundle(request: ExportRequest, folder: Path) -> dict[str, Any]:
    """Fill ``folder`` with the bundle's files and return the manifest."""
    spec = get_spec(request.model)
    model = _build_model(request)
    fused = fuse_model(model)

    started = time.perf_counter()
    multiple = spec.input_multiple if request.dynamic else None
    proto = simplify(export_onnx(fused, request.input_size, request.opset, dynamic_multiple=multiple))
    export_seconds = time.perf_counter() - started
    onnx.save(proto, str(folder / ONNX_FILE))
    artifacts = BUILDERS[request.target](folder)
    sizes = [request.input_size]
    if request.dynamic:
        sizes.append(second_size(request.input_size, spec.input_multiple))
    parity = _parity_report(request, model, folder, artifacts, sizes)

    return {
        "format": bundle_format.FORMAT,
        "format_version": bundle_format.FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": request.model,
            "family": spec.family,
            "description": spec.description,
            "num_classes": request.num_classes,
            **_weights_entry(request, model),
            "params": count_params(model),
            "macs": count_macs(model, request.input_size),
            "macs_input_size": list(request.input_size),
        },
        "input": {
            "name": INPUT_NAME,
            "shape": graph_shape(proto.graph.input[0]),
            "example_size": list(request.input_size),
            "size_multiple": spec.input_multiple,
            "resize": _resize_policy(request, spec.input_multiple),
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "pixel_range": [0, 255],
            "normalization": "(pixel - mean) / std",
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": graph_shape(proto.graph.output[0]),
            "layout": "NCHW",
            "dtype": "float32",
            "kind": "logits",
            "stride": spec.output_stride,
            "postprocess": "bilinear upsample (align_corners=False) to the image size, then argmax over classes",
        },
        "target": request.target,
        "precision": request.precision,
        "artifacts": artifacts.artifacts,
        "runtime_config": artifacts.runtime_config,
        "files": bundle_format.describe_files(folder, artifacts.files),
        "tools": tool_versions(),
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "dynamic": request.dynamic,
            "opset": request.opset,
            "simplifier": "onnxslim",
            "fused": "reparameterize(): BatchNorm folded into convs, exact branch merges (see the model's docs)",
            "input_size": list(request.input_size),
            "seconds": round(export_seconds, 2),
            "nodes": len(proto.graph.node),
            "ops": op_histogram(proto),
        },
        "parity": parity,
    }


def export_bundle(request: ExportRequest) -> Path:
    """Export ``request.model`` into the bundle folder ``request.out``; returns it.

    The bundle is assembled in a temporary sibling folder and moved into place only after the parity
    gate passed, so a failure or crash never leaves a half-written bundle.
    """
    _validate(request)
    out = request.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _write_bundle(request, staging)
        bundle_format.write_manifest(staging, manifest)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(retired / out.name)
            staging.rename(out)
            shutil.rmtree(retired)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


__all__ = ["ExportError", "ExportRequest", "ParityError", "export_bundle", "tool_versions"]
