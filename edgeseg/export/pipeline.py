"""``edgeseg export``: model → fused model → ONNX → target artifact → parity → bundle, written atomically."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import edgeseg
from edgeseg import bundle as bundle_format
from edgeseg.export.calibration import calibration_set, image_files, parity_set, synthetic_source
from edgeseg.export.frame_parity import FrameCheck, FrameReference, parity_frames
from edgeseg.export.frame_path import (
    FRAME_NAME,
    FramePlan,
    frame_shape,
    post_graph,
    pre_graph,
    wrap_onnx_file,
    wrap_openvino,
)
from edgeseg.export.graph import build_export_graph
from edgeseg.export.onnx_graph import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, ExportError, graph_shape, op_histogram
from edgeseg.export.parity import ArtifactCheck, ParityError, random_inputs_at
from edgeseg.export.sensitivity import auto_exclude, rank_nodes
from edgeseg.export.targets import BUILDERS, ONNX_FILE, BuildOptions, TargetArtifacts
from edgeseg.files import FolderKind, output_path, staged_folder
from edgeseg.image_io import read_image
from edgeseg.ladder import gates_for
from edgeseg.manifest import (
    MAX_SIDE,
    OUTPUT_NAMES,
    POSTPROCESS,
    ClassesInfo,
    InputSpec,
    KeepRatioResize,
    Manifest,
    StretchResize,
    check_precision,
)
from edgeseg.models import checkpoint_report, count_macs, count_params, create, get_spec, list_models, model_spec
from edgeseg.progress import quiet_third_party, stage

BUNDLE_FOLDER = FolderKind("edgeseg bundle", bundle_format.MANIFEST, bundle_format.FORMAT)
# Parity images (each also enlarged to a camera size when the frame size is free) in the frame-path check.
FRAME_PARITY_IMAGES = 3
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
    calib: Path | None = None
    calib_count: int = 32
    parity_data: Path | None = None
    parity_count: int = 8
    gates: dict[str, float] = field(default_factory=dict)
    auto_exclude: bool = False
    input_kind: str = "float"
    outputs: tuple[str, ...] = ("logits",)
    frame_size: tuple[int, int] | None = None
    confidence_dtype: str = "float16"  # --confidence-dtype: float16 or uint8
    confidence_classes: tuple[int, ...] | None = None  # --confidence-classes (default: every class)
    head_attention: str | None = None  # "se", "cbam" or "ca": a block in the all-MLP head (models.create)
    model_options: dict[str, Any] = field(default_factory=dict)  # the family's build options (ModelSpec.options)
    classes: dict[str, Any] | None = None  # the manifest's classes block (edgeseg.weights.choice)
    weights_source: str | None = None  # where the checkpoint came from: a catalog entry and URL, hf:REPO

    @property
    def plan(self) -> FramePlan:
        """The graph's input and outputs (``--input``, ``--output``, ``--frame-size``); validated."""
        return FramePlan(
            self.input_kind, tuple(self.outputs), self.frame_size, self.confidence_dtype, self.confidence_classes
        )


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
    check_precision(request.target, request.precision)
    for what, folder in (("--calib", request.calib), ("--parity-data", request.parity_data)):
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"{what} {folder} is not a folder; pass a folder of images or a segmentation set")
    if request.classes is not None:
        ClassesInfo.model_validate(request.classes)
        if len(request.classes["names"]) != request.num_classes:
            raise ValueError(
                f"the classes block names {len(request.classes['names'])} classes for num_classes "
                f"{request.num_classes}; they must agree"
            )
    if request.auto_exclude and request.precision != "int8":
        raise ValueError("--auto-exclude keeps int8-sensitive nodes in float; it needs --precision int8")
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
    plan = request.plan
    if "confidence" in plan.outputs and spec.output_kind != "logits":
        raise ValueError(
            f"--output confidence is a softmax of logits, but {request.model} outputs {spec.output_kind} (already per "
            "class); export logits or labels instead"
        )
    if plan.frame_size is not None and request.dynamic:
        raise ValueError(
            "--frame-size fixes the frame, so the model size too: export a static bundle at that model size (drop "
            "--dynamic), or drop --frame-size (a dynamic graph takes frames of any size, keeping their aspect ratio)"
        )
    if plan.takes_frames and request.target == "tensorrt" and plan.frame_size is None:
        raise ValueError("--target tensorrt with uint8 frames needs --frame-size HxW (the engine's frame shape)")
    if plan.frame_size is not None and not all(0 < s <= MAX_SIDE for s in plan.frame_size):
        raise ValueError(f"--frame-size {plan.frame_size} must have sides 1..{MAX_SIDE}")
    if request.dynamic and not spec.dynamic_resolution:
        raise ValueError(
            f"{request.model} cannot export one graph for every size (its graph bakes size-dependent constants); "
            "export one static bundle per input size instead (drop --dynamic)"
        )


def _inputs(request: ExportRequest) -> dict[str, Path | None]:
    """The files and folders the export reads, by option: ``--out`` must never hold one of them."""
    return {"--checkpoint": request.checkpoint, "--calib": request.calib, "--parity-data": request.parity_data}


def _build_model(request: ExportRequest) -> torch.nn.Module:
    torch.manual_seed(request.seed)
    return create(
        request.model,
        num_classes=request.num_classes,
        checkpoint=request.checkpoint,
        head_attention=request.head_attention,
        **request.model_options,
    )


def _weights_entry(request: ExportRequest, model: torch.nn.Module) -> dict[str, Any]:
    if request.checkpoint is None:
        return {"weights": "random", "weights_note": f"no checkpoint: PyTorch default init, seed {request.seed}"}
    report = checkpoint_report(model)
    return {
        "weights": "checkpoint",
        "checkpoint": {
            "file": request.checkpoint.name,
            "sha256": bundle_format.sha256_of(request.checkpoint),
            "source": request.weights_source,
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


def _resize_policy(request: ExportRequest) -> StretchResize | KeepRatioResize:
    """How an image is sized for the graph: stretch to the static size, or keep the aspect ratio."""
    h, w = request.input_size
    if not request.dynamic:
        return StretchResize(mode="stretch", size=(h, w))
    short = min(h, w)
    multiple = get_spec(request.model).input_multiple
    return KeepRatioResize(mode="keep_ratio", short_side=short, max_long_side=4 * short, multiple=multiple)


def _input_spec(request: ExportRequest, proto: onnx.ModelProto) -> InputSpec:
    spec = get_spec(request.model)
    return InputSpec.model_validate(
        {
            "name": INPUT_NAME,
            "shape": graph_shape(proto.graph.input[0]),
            "example_size": list(request.input_size),
            "size_multiple": spec.input_multiple,
            "resize": _resize_policy(request),
            "mean": list(spec.mean),
            "std": list(spec.std),
        }
    )


def _image_sources(request: ExportRequest, scratch: Path) -> tuple[Path | None, Path]:
    """(calibration source, for int8 only; parity source): the user's folders, else a generated synthetic set."""
    wants_calibration = request.precision == "int8"
    calib, parity = request.calib, request.parity_data or request.calib
    if parity is None or (wants_calibration and calib is None):
        count = 2 * max(request.parity_count, request.calib_count if wants_calibration else 1)
        synthetic = synthetic_source(scratch / "synthetic", request.input_size, count, request.seed)
        calib, parity = calib or synthetic, parity or synthetic
    return (calib if wants_calibration else None), parity


def _tensorrt_entry(
    graph: Path, request: ExportRequest, input_name: str, input_shape: tuple[int | None, ...]
) -> dict[str, Any]:
    """The manifest's ``tensorrt`` entry: lint verdict and the trtexec command lines for TensorRT 10 and 11."""
    from edgeseg.export.lint import lint_onnx
    from edgeseg.export.tensorrt import trtexec_commands

    findings = lint_onnx(onnx.load(str(graph)), "tensorrt")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        listed = "; ".join(f.message for f in errors[:5])
        raise ExportError(f"{graph.name} would not parse in TensorRT: {listed}. Run `edgeseg lint` for all findings")
    spec = get_spec(request.model)
    h, w = request.input_size
    dynamic_range = None
    if request.dynamic:
        m = spec.input_multiple
        dynamic_range = ((m * 2, m * 2), (h, w), (2 * h, 2 * w))
    engine = f"{graph.stem}.engine"
    return {
        "graph": graph.name,
        "engine_build": "UNVERIFIED: TensorRT cannot be installed on the machine that made this bundle, so no "
        "engine was built; parity was measured on the same graph in ONNX Runtime (CPU). Build the engine on the "
        "target GPU with a command below or edgeseg.export.tensorrt.build_engine.",
        "trtexec": trtexec_commands(
            graph.name, engine, request.precision, input_name, tuple(input_shape), (h, w), dynamic_range
        ),
        "lint": {
            "errors": 0,
            "warnings": [f"[{f.rule}] {f.message}" for f in findings if f.severity != "error"],
        },
    }


def _reference(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The PyTorch model as a numpy function: the reference every artifact is compared with."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def _build(request: ExportRequest, folder: Path, options: BuildOptions, check: ArtifactCheck) -> tuple[Any, Any]:
    """Build the target's artifacts and check them; returns (artifacts, report)."""
    artifacts = BUILDERS[request.target](folder, options)
    return artifacts, check(artifacts)


def _failure_message(request: ExportRequest, folder: Path, options: BuildOptions, parity: dict[str, Any]) -> str:
    """Which rungs failed, and for int8 the nodes that lose the most SQNR (or what --auto-exclude tried)."""
    failures = list(parity["failures"])
    tried = parity.get("auto_exclude")
    if tried:
        counts = ", ".join(
            f"{t['kept_float']} float: agreement {t['agreement']:.4f}, {'pass' if t['passed'] else t['failures'][0]}"
            for t in tried["tries"]
        )
        failures.append(f"--auto-exclude tried {len(tried['tries'])} builds ({counts}); above: {tried['reported']}")
        hint = "relax a rung with --gate RUNG=VALUE, or calibrate on images closer to the deployment (--calib)."
    elif request.precision == "int8":
        worst = rank_nodes(request.target, folder, options.calibration[:2])[:5]
        listed = ", ".join(f"{n.name} ({n.op}, -{n.drop_db:.1f} dB)" for n in worst)
        failures.append(f"the quantized nodes that lose the most SQNR against fp32: {listed}")
        hint = "Try --auto-exclude to keep the most sensitive nodes in float, or relax a rung with --gate RUNG=VALUE."
    else:
        hint = "Report this with the command line; --gate RUNG=VALUE (or --tolerance for fp32) changes the gate."
    return (
        f"parity gate failed for {request.model} ({request.target}, {request.precision}): "
        f"{'; '.join(failures)}. Nothing was written. {hint}"
    )


def _add_frame_path(
    request: ExportRequest,
    model: torch.nn.Module,
    core_folder: Path,
    folder: Path,
    artifacts: TargetArtifacts,
    proto: onnx.ModelProto,
) -> list[dict[str, Any]]:
    """Write each core artifact of ``core_folder`` into ``folder`` with the frame path; returns the outputs' specs."""
    spec, plan = get_spec(request.model), request.plan
    pre = pre_graph(plan, INPUT_NAME, _resize_policy(request), spec.mean, spec.std) if plan.takes_frames else None
    post = post_graph(plan, graph_shape(proto.graph.output[0]))
    for name in sorted(set(artifacts.artifacts.values())):
        if name.endswith(".xml"):
            import openvino as ov

            wrapped = wrap_openvino(core_folder / name, pre, post)
            ov.save_model(wrapped, str(folder / name), compress_to_fp16=request.precision == "fp16")
        else:
            wrap_onnx_file(core_folder / name, folder / name, pre, post)
    shapes = {o.name: graph_shape(o) for o in post.graph.output}
    return [
        {
            "name": OUTPUT_NAMES[kind],
            "kind": kind,
            "shape": shapes[OUTPUT_NAMES[kind]],
            "layout": "NCHW" if kind in ("logits", "confidence") else "NHW",
            "dtype": {"logits": "float32", "confidence": plan.confidence_dtype}.get(
                kind, "uint8" if request.num_classes <= 256 else "int32"
            ),
            "stride": 1 if kind == "labels-full" else model_spec(model).output_stride,
            "postprocess": POSTPROCESS[kind],
            "classes": plan.confidence_classes if kind == "confidence" else None,
        }
        for kind in plan.outputs
    ]


def _frame_check(
    request: ExportRequest, model: torch.nn.Module, folder: Path, images: Any, parity_source: Path
) -> FrameCheck:
    """The frame-path parity check: reference outputs of :class:`FrameReference` on the parity frames."""
    spec, plan = get_spec(request.model), request.plan
    count = min(request.parity_count, FRAME_PARITY_IMAGES)
    if plan.takes_frames:
        rgbs = [read_image(f) for f in image_files(parity_source, "val")[:count]]
        frames = parity_frames(rgbs, plan, request.seed)
    else:
        frames = list(images.inputs[:count])
    reference = FrameReference(model, plan, _resize_policy(request), spec.mean, spec.std, request.num_classes)
    return FrameCheck.prepare(
        reference,
        folder,
        frames,
        precision=request.precision,
        agreement_gate=gates_for(request.precision, request.gates).get("agreement", 0.99),
        gated=request.checkpoint is not None,
    )


def _write_bundle(request: ExportRequest, folder: Path, scratch: Path) -> Manifest:
    """Fill ``folder`` with the bundle's files and return the manifest."""
    spec = get_spec(request.model)
    with stage(f"building {request.model}" + (f" from {request.checkpoint}" if request.checkpoint else "")):
        model = _build_model(request)
    multiple = spec.input_multiple if request.dynamic else None
    with stage("exporting the ONNX graph (torch.onnx, onnxslim)"), quiet_third_party():
        graph = build_export_graph(
            model, request.target, request.precision, request.input_size, opset=request.opset, dynamic_multiple=multiple
        )
    proto = graph.proto
    plan = request.plan
    core_folder = folder if plan.plain else scratch / "core"  # the model graph's artifacts, before the frame path
    core_folder.mkdir(exist_ok=True)
    onnx.save(proto, str(core_folder / ONNX_FILE))

    input_spec = _input_spec(request, proto)
    preprocess = input_spec.preprocess
    calib_source, parity_source = _image_sources(request, scratch)

    def name(source: Path) -> str:
        synthetic = source.is_relative_to(scratch)
        return f"a synthetic set (edgeseg data synthetic, seed {request.seed})" if synthetic else str(source)

    calibration = None
    with stage("reading the calibration and parity images"):
        if calib_source is not None:
            calibration = calibration_set(calib_source, preprocess, request.calib_count, name(calib_source))
        images = parity_set(parity_source, preprocess, request.parity_count, request.num_classes, name(parity_source))
    sizes = [request.input_size]
    if request.dynamic:
        sizes.append(second_size(request.input_size, spec.input_multiple))
    check = ArtifactCheck.prepare(
        _reference(model),
        core_folder,
        images,
        random_inputs_at(sizes, spec.mean, spec.std, request.parity_inputs, request.seed),
        num_classes=request.num_classes,
        precision=request.precision,
        gates=gates_for(request.precision, request.gates),
        fp32_gates=gates_for("fp32", {"max_abs": request.tolerance, **request.gates}),
        gated=request.checkpoint is not None,
    )
    options = BuildOptions(request.precision, tuple(calibration.inputs) if calibration else ())
    with stage(f"building the {request.target} {request.precision} artifacts and their parity ladder"):
        artifacts, parity = _build(request, core_folder, options, check)
    if not parity["passed"] and request.auto_exclude and request.precision == "int8":
        with stage(f"--auto-exclude: {'; '.join(parity['failures'])}; searching for nodes to keep in float"):
            report = auto_exclude(
                request.target, core_folder, options, parity, lambda o: _build(request, core_folder, o, check)
            )
        artifacts, parity = report.pop("artifacts"), report.pop("parity")
        parity["auto_exclude"] = report
    if not parity["passed"]:
        raise ParityError(_failure_message(request, core_folder, options, parity))
    outputs = [
        {"name": OUTPUT_NAME, "shape": graph_shape(proto.graph.output[0]), "stride": model_spec(model).output_stride}
    ]
    frame: dict[str, Any] | None = None
    if not plan.plain:
        with stage(f"adding the frame path ({plan.input_kind} in, {', '.join(plan.outputs)} out) and checking it"):
            outputs = _add_frame_path(request, model, core_folder, folder, artifacts, proto)
            frame_check = _frame_check(request, model, folder, images, parity_source)
            parity["frame"] = frame_check(artifacts.artifacts, artifacts.runtime_config)
        if not parity["frame"]["passed"]:
            raise ParityError(
                f"parity gate of the frame path failed for {request.model} ({request.target}, {request.precision}): "
                f"{'; '.join(parity['frame']['failures'])}. Nothing was written. Report this with the command line."
            )
        if plan.takes_frames:
            frame = {"name": FRAME_NAME, "shape": [None if isinstance(d, str) else d for d in frame_shape(plan)]}
            frame["color"] = plan.color

    manifest: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": request.model,
            "family": spec.family,
            "description": spec.description,
            "head_attention": request.head_attention,
            "num_classes": request.num_classes,
            **_weights_entry(request, model),
            "params": count_params(model),
            "macs": count_macs(model, request.input_size),
            "macs_input_size": list(request.input_size),
        },
        "classes": request.classes,
        "input": input_spec,
        "frame": frame,
        "outputs": outputs,
        "target": request.target,
        "precision": request.precision,
        "artifacts": artifacts.artifacts,
        "runtime_config": artifacts.runtime_config,
        "files": bundle_format.describe_files(folder, artifacts.files),
        "tools": tool_versions(),
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "model_options": request.model_options,
            "dynamic": request.dynamic,
            "opset": request.opset,
            "simplifier": "onnxslim",
            "fused": "reparameterize(): BatchNorm folded into convs, exact branch merges (see the model's docs)",
            "encoder_layout": graph.encoder_layout,
            "input_size": list(request.input_size),
            "seconds": round(graph.seconds, 2),
            "nodes": len(proto.graph.node),
            "ops": op_histogram(proto),
            "precision": {"precision": request.precision, **artifacts.details},
            "calibration": calibration.description if calibration else None,
            "frame_path": None
            if plan.plain
            else {
                "input": plan.input_kind,
                "outputs": list(plan.outputs),
                "frame_size": list(plan.frame_size) if plan.frame_size else None,
                "confidence_dtype": plan.confidence_dtype if "confidence" in plan.outputs else None,
                "method": "ONNX graph surgery around the core artifacts (edgeseg.export.frame_path); OpenVINO: "
                "the same pre/post graphs stitched around the core IR",
            },
        },
        "parity": parity,
    }
    if request.target == "tensorrt":
        graph_input: tuple[str, tuple[int | None, ...]] = (INPUT_NAME, tuple(input_spec.shape))
        if plan.takes_frames:
            graph_input = (FRAME_NAME, (1, *(plan.frame_size or (None, None)), 3))
        manifest["tensorrt"] = _tensorrt_entry(folder / artifacts.artifacts["tensorrt"], request, *graph_input)
    return Manifest.model_validate(manifest)


def export_bundle(request: ExportRequest) -> Path:
    """Export ``request.model`` into the bundle folder ``request.out``; returns it.

    The bundle is assembled in a hidden sibling folder, under a lock that makes a concurrent export to the
    same folder fail, and swapped into place in one atomic step after the parity gate passed: a failure,
    SIGTERM or SIGINT leaves the previous bundle (or nothing) and no leftovers; see ``edgeseg.files``.
    """
    _validate(request)  # then staged_folder checks --out, before and again under the lock
    with staged_folder(request.out, BUNDLE_FOLDER, request.force, _inputs(request)) as stage:
        manifest = _write_bundle(request, stage.folder, stage.scratch)
        bundle_format.write_manifest(stage.folder, manifest)
    return output_path(request.out)


__all__ = ["ExportError", "ExportRequest", "ParityError", "export_bundle", "tool_versions"]
