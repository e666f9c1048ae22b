"""The whole frame path in the graph: uint8 frame in, resize + normalisation, then labels/confidence out.

Chosen at export with ``--input float|uint8-rgb|uint8-bgr`` and ``--output logits,labels,labels-full,confidence``.
Implemented as ONNX graph surgery around each finished *core* artifact (the model graph exactly as a plain
bundle holds it: fp32, ORT-optimised, fp16 or int8 Q/DQ), so quantisation, sensitivity analysis and the logit
ladder keep working on the core graph and the pre/post nodes stay float32 and exact at every precision. The
pre- and post-processing are written once, as two small ONNX graphs (:func:`pre_graph`, :func:`post_graph`):

* ONNX targets: their nodes are spliced around the core graph (:func:`wrap_onnx`);
* OpenVINO: both graphs are read by OpenVINO's ONNX frontend and stitched around the core IR's parameter and
  result (:func:`wrap_openvino`), the same graph surgery on ``ov.Model`` (int8 IRs from NNCF included).

Pre-processing (the rule the manifest declares, the same as :mod:`edgeseg.imaging`): Cast to float32, Resize
in NHWC to the model size (``mode=linear``, ``coordinate_transformation_mode=half_pixel``, no antialias: the
rule of ``F.interpolate(bilinear, align_corners=False)`` and :func:`~edgeseg.imaging.resize_bilinear`;
ONNX Runtime gives bit-identical pixels at 720p → 512²), channel flip for BGR frames, ``(x - mean) / std``,
Transpose to NCHW. A static graph stretches a frame of any size to the model size, or the frame size is fixed
with ``--frame-size`` (needed for TensorRT engines). A dynamic graph keeps the frame's aspect ratio: the graph
computes the model size from the frame's shape with int64 nodes, the same exact integer rule as the runtime
(:meth:`~edgeseg.manifest.KeepRatioResize.size_for`).

Post-processing: ``labels`` = ArgMax over classes at the model's stride (first index on ties, as numpy);
``labels-full`` = Resize of the logits to the frame's own size (linear, half_pixel: mmseg's rule, as
:func:`~edgeseg.imaging.labels_from_logits`) then ArgMax; label dtype uint8 up to 256 classes, else int32;
``confidence`` = Softmax over classes (or the ``--confidence-classes`` among them), float16 or uint8
(``round(255 · p)``, by QuantizeLinear); ``logits`` = the model's float32 logits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeseg.manifest import (
    CONFIDENCE_DTYPES,
    INPUT_KINDS,
    OUTPUT_KINDS,
    OUTPUT_NAMES,
    KeepRatioResize,
    StretchResize,
)

FRAME_NAME = "frame"
CORE_LOGITS = "frame_path/core_logits"
FRAME_HW = "frame_path/frame_hw"
_P = "frame_path/"  # prefix of every tensor and node the frame path adds
OPSET = 18


@dataclass(frozen=True)
class FramePlan:
    """What the graph takes and gives: ``input_kind`` (see ``INPUT_KINDS``), ``outputs`` (``OUTPUT_KINDS``)."""

    input_kind: str = "float"
    outputs: tuple[str, ...] = ("logits",)
    frame_size: tuple[int, int] | None = None
    confidence_dtype: str = "float16"  # or "uint8": round(255 · softmax)
    confidence_classes: tuple[int, ...] | None = None  # the classes whose confidence is output (default: all)

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"--input {self.input_kind!r} is not one of {', '.join(INPUT_KINDS)}")
        if self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise ValueError(
                f"--confidence-dtype {self.confidence_dtype!r} is not one of {', '.join(CONFIDENCE_DTYPES)}"
            )
        custom = self.confidence_dtype != "float16" or self.confidence_classes is not None
        if custom and "confidence" not in self.outputs:
            raise ValueError(
                "--confidence-dtype and --confidence-classes shape the confidence output; add it to --output"
            )
        picked = self.confidence_classes
        if picked is not None and (not picked or len(set(picked)) != len(picked) or min(picked) < 0):
            raise ValueError(f"--confidence-classes {list(picked)}: give distinct 0-based class indices, at least one")
        unknown = [o for o in self.outputs if o not in OUTPUT_KINDS]
        if unknown or not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(
                f"--output {','.join(self.outputs)!r} must be a comma-separated subset of {', '.join(OUTPUT_KINDS)}"
            )
        if not {"logits", "labels-full"} & set(self.outputs):
            raise ValueError(
                "--output needs logits or labels-full (Segmenter.predict makes the full-size label map from them); "
                "e.g. --output labels,labels-full"
            )
        if "labels-full" in self.outputs and not self.takes_frames:
            raise ValueError("--output labels-full needs the frame in the graph: add --input uint8-rgb or uint8-bgr")
        if self.frame_size is not None and not self.takes_frames:
            raise ValueError("--frame-size fixes the size of uint8 frames: add --input uint8-rgb or uint8-bgr")

    @property
    def takes_frames(self) -> bool:
        return self.input_kind != "float"

    @property
    def plain(self) -> bool:
        """True for today's graph: float input, logits out (no surgery)."""
        return not self.takes_frames and self.outputs == ("logits",)

    @property
    def color(self) -> str:
        return "BGR" if self.input_kind == "uint8-bgr" else "RGB"


def label_dtype(num_classes: int) -> np.dtype[Any]:
    """dtype of in-graph label maps: uint8 up to 256 classes, else int32."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.int32)


def _tensor_type(dtype: np.dtype[Any]) -> int:
    return int(helper.np_dtype_to_tensor_dtype(dtype))


def frame_shape(plan: FramePlan) -> list[int | str]:
    """The frame input's NHWC shape; symbolic height and width unless ``--frame-size`` fixed them."""
    h, w = plan.frame_size or ("frame_height", "frame_width")
    return [1, h, w, 3]


def _model(nodes: list[onnx.NodeProto], name: str, inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Any:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def _keep_ratio_nodes(resize: KeepRatioResize, size_out: str) -> tuple[list[onnx.NodeProto], list[Any]]:
    """Nodes writing ``size_out`` = [h, w], the model size :meth:`KeepRatioResize.size_for` gives the frame.

    The same integers, in int64: scale = num / den = short_side / short or max_long_side / long (the smaller,
    by cross-multiplying), side = multiple · max(1, round(side · num / (den · multiple))) with ties to even,
    from a floor division and its remainder.
    """
    constants = {"short_side": resize.short_side, "max_long_side": resize.max_long_side, "multiple": resize.multiple}
    constants |= {"one": 1, "two": 2}
    inits = [numpy_helper.from_array(np.array([v], np.int64), f"{_P}{name}") for name, v in constants.items()]

    def c(name: str) -> str:
        return f"{_P}{name}"

    def t(name: str) -> str:
        return f"{_P}keep_ratio/{name}"

    steps: list[tuple[str, list[str], str, dict[str, Any]]] = [
        ("ReduceMin", [FRAME_HW], t("short"), {"keepdims": 1}),
        ("ReduceMax", [FRAME_HW], t("long"), {"keepdims": 1}),
        ("Mul", [c("short_side"), t("long")], t("a"), {}),
        ("Mul", [c("max_long_side"), t("short")], t("b"), {}),
        ("LessOrEqual", [t("a"), t("b")], t("fits"), {}),  # short_side / short <= max_long_side / long
        ("Where", [t("fits"), c("short_side"), c("max_long_side")], t("num"), {}),
        ("Where", [t("fits"), t("short"), t("long")], t("den"), {}),
        ("Mul", [FRAME_HW, t("num")], t("p"), {}),
        ("Mul", [t("den"), c("multiple")], t("q"), {}),
        ("Div", [t("p"), t("q")], t("quotient"), {}),  # positive ints: floor division
        ("Mul", [t("quotient"), t("q")], t("floor"), {}),
        ("Sub", [t("p"), t("floor")], t("rest"), {}),
        ("Mul", [t("rest"), c("two")], t("twice"), {}),
        ("Greater", [t("twice"), t("q")], t("over"), {}),
        ("Equal", [t("twice"), t("q")], t("tie"), {}),
        ("Mod", [t("quotient"), c("two")], t("parity"), {}),
        ("Equal", [t("parity"), c("one")], t("odd"), {}),
        ("And", [t("tie"), t("odd")], t("odd_tie"), {}),
        ("Or", [t("over"), t("odd_tie")], t("up"), {}),
        ("Cast", [t("up")], t("carry"), {"to": TensorProto.INT64}),
        ("Add", [t("quotient"), t("carry")], t("rounded"), {}),
        ("Max", [t("rounded"), c("one")], t("at_least_one"), {}),
        ("Mul", [t("at_least_one"), c("multiple")], size_out, {}),
    ]
    nodes = [helper.make_node(op, inputs, [out], name=out, **attrs) for op, inputs, out, attrs in steps]
    return nodes, inits


def pre_graph(
    plan: FramePlan,
    model_input: str,
    resize: StretchResize | KeepRatioResize,
    mean: Sequence[float],
    std: Sequence[float],
) -> onnx.ModelProto:
    """Frame (uint8 NHWC) → the model's normalised float32 NCHW input ``model_input``, plus the frame's (H, W).

    ``resize`` is the bundle's rule: stretch to the graph's one size, or keep the frame's aspect ratio (a
    dynamic graph; the size is computed in the graph from the frame's shape).
    """
    x = f"{_P}float"
    nodes = [
        helper.make_node("Shape", [FRAME_NAME], [FRAME_HW], name=f"{_P}frame_hw", start=1, end=3),
        helper.make_node("Cast", [FRAME_NAME], [x], name=f"{_P}cast", to=TensorProto.FLOAT),
    ]
    inits = [
        numpy_helper.from_array(np.asarray(mean, np.float32).reshape(3), f"{_P}mean"),
        numpy_helper.from_array(np.asarray(std, np.float32).reshape(3), f"{_P}std"),
    ]
    model_shape: list[int | str]
    resize_axes: dict[str, Any] = {}
    if isinstance(resize, KeepRatioResize):  # sizes of H and W only: shape inference keeps N and C static
        size_nodes, size_inits = _keep_ratio_nodes(resize, f"{_P}model_size")
        nodes += size_nodes
        inits += size_inits
        model_shape, resize_axes = [1, 3, "model_height", "model_width"], {"axes": [1, 2]}
    else:
        h, w = resize.size
        inits.append(numpy_helper.from_array(np.array([1, h, w, 3], np.int64), f"{_P}model_size"))
        model_shape = [1, 3, h, w]
    if isinstance(resize, KeepRatioResize) or plan.frame_size != resize.size:
        nodes.append(
            helper.make_node(
                "Resize",
                [x, "", "", f"{_P}model_size"],
                [f"{_P}resized"],
                name=f"{_P}resize",
                mode="linear",
                coordinate_transformation_mode="half_pixel",
                antialias=0,
                **resize_axes,
            )
        )
        x = f"{_P}resized"
    if plan.color == "BGR":
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), f"{_P}bgr_to_rgb"))
        nodes.append(helper.make_node("Gather", [x, f"{_P}bgr_to_rgb"], [f"{_P}rgb"], name=f"{_P}to_rgb", axis=3))
        x = f"{_P}rgb"
    nodes += [
        helper.make_node("Sub", [x, f"{_P}mean"], [f"{_P}centred"], name=f"{_P}sub_mean"),
        helper.make_node("Div", [f"{_P}centred", f"{_P}std"], [f"{_P}normalised"], name=f"{_P}div_std"),
        helper.make_node("Transpose", [f"{_P}normalised"], [model_input], name=f"{_P}to_nchw", perm=[0, 3, 1, 2]),
    ]
    inputs = [helper.make_tensor_value_info(FRAME_NAME, TensorProto.UINT8, frame_shape(plan))]
    outputs = [
        helper.make_tensor_value_info(model_input, TensorProto.FLOAT, model_shape),
        helper.make_tensor_value_info(FRAME_HW, TensorProto.INT64, [2]),
    ]
    return _model(nodes, "frame_pre", inputs, outputs, inits)


def post_graph(plan: FramePlan, logits_shape: Sequence[int | None]) -> onnx.ModelProto:
    """The model's logits (``CORE_LOGITS``) and the frame's (H, W) → the graph outputs of ``plan``, in its order."""
    num_classes = logits_shape[1]
    if not isinstance(num_classes, int):
        raise ValueError(f"the logits shape {list(logits_shape)} does not state the number of classes")
    labels_type = _tensor_type(label_dtype(num_classes))
    h, w = logits_shape[2], logits_shape[3]
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.array([1, num_classes], np.int64), f"{_P}batch_classes")]
    outputs = []
    for kind in plan.outputs:
        name = OUTPUT_NAMES[kind]
        if kind == "logits":
            nodes.append(helper.make_node("Identity", [CORE_LOGITS], [name], name=f"{_P}logits"))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(logits_shape)))
        elif kind == "confidence":
            nodes.append(helper.make_node("Softmax", [CORE_LOGITS], [f"{_P}softmax"], name=f"{_P}softmax", axis=1))
            source, channels = f"{_P}softmax", num_classes
            if plan.confidence_classes is not None:
                if max(plan.confidence_classes) >= num_classes:
                    raise ValueError(
                        f"--confidence-classes {list(plan.confidence_classes)}: the model has {num_classes} classes"
                    )
                channels = len(plan.confidence_classes)
                picked = np.array(plan.confidence_classes, np.int64)
                inits.append(numpy_helper.from_array(picked, f"{_P}confidence_classes"))
                nodes.append(
                    helper.make_node(
                        "Gather", [source, f"{_P}confidence_classes"], [f"{_P}picked"], name=f"{_P}pick", axis=1
                    )
                )
                source = f"{_P}picked"
            if plan.confidence_dtype == "uint8":  # QuantizeLinear rounds half to even and saturates: round(255·p)
                inits += [
                    numpy_helper.from_array(np.array(1 / 255, np.float32), f"{_P}confidence_scale"),
                    numpy_helper.from_array(np.array(0, np.uint8), f"{_P}confidence_zero"),
                ]
                inputs_of = [source, f"{_P}confidence_scale", f"{_P}confidence_zero"]
                nodes.append(helper.make_node("QuantizeLinear", inputs_of, [name], name=f"{_P}confidence"))
                element = TensorProto.UINT8
            else:
                nodes.append(helper.make_node("Cast", [source], [name], name=f"{_P}confidence", to=TensorProto.FLOAT16))
                element = TensorProto.FLOAT16
            outputs.append(helper.make_tensor_value_info(name, element, [1, channels, h, w]))
        else:
            source, shape = CORE_LOGITS, [1, h, w]
            if kind == "labels-full":
                source, shape = f"{_P}full_logits", [1, *(plan.frame_size or ("frame_height", "frame_width"))]
                nodes += [
                    helper.make_node(
                        "Concat", [f"{_P}batch_classes", FRAME_HW], [f"{_P}full_size"], name=f"{_P}full_size", axis=0
                    ),
                    helper.make_node(
                        "Resize",
                        [CORE_LOGITS, "", "", f"{_P}full_size"],
                        [source],
                        name=f"{_P}upsample",
                        mode="linear",
                        coordinate_transformation_mode="half_pixel",
                        antialias=0,
                    ),
                ]
            stem = f"{_P}{name}"
            nodes += [
                helper.make_node("ArgMax", [source], [f"{stem}_int64"], name=f"{stem}_argmax", axis=1, keepdims=0),
                helper.make_node("Cast", [f"{stem}_int64"], [name], name=f"{stem}_cast", to=labels_type),
            ]
            outputs.append(helper.make_tensor_value_info(name, labels_type, shape))
    inputs = [
        helper.make_tensor_value_info(CORE_LOGITS, TensorProto.FLOAT, list(logits_shape)),
        helper.make_tensor_value_info(FRAME_HW, TensorProto.INT64, [2]),
    ]
    return _model(nodes, "frame_post", inputs, outputs, inits)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever the graph writes or reads it."""
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in graph.value_info:
        if value.name == old:
            value.name = new


def wrap_onnx(core: onnx.ModelProto, pre: onnx.ModelProto | None, post: onnx.ModelProto) -> onnx.ModelProto:
    """The core graph with ``pre``'s nodes in front of its input (when given) and ``post``'s behind its output."""
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(core)
    graph = wrapped.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError("the frame path wraps graphs with one input and one output")
    model_input, logits = graph.input[0], graph.output[0].name
    _rename(graph, logits, CORE_LOGITS)
    del graph.output[:]
    if pre is None:  # float input: the frame's size is never needed, so post's FRAME_HW input must be unused
        post_nodes = [n for n in post.graph.node if FRAME_HW not in n.input]
        if len(post_nodes) != len(post.graph.node):
            raise ValueError("labels-full needs the frame input")
    else:
        post_nodes = list(post.graph.node)
        if pre.graph.output[0].name != model_input.name:
            written = pre.graph.output[0].name
            raise ValueError(f"the pre-processing writes {written}, the model reads {model_input.name}")
        del graph.input[:]
        graph.input.extend(pre.graph.input)
        core_nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend([*pre.graph.node, *core_nodes])
        graph.initializer.extend(pre.graph.initializer)
    graph.node.extend(post_nodes)
    used = {i for n in post_nodes for i in n.input}
    graph.initializer.extend(i for i in post.graph.initializer if i.name in used)
    graph.output.extend(post.graph.output)
    onnx.checker.check_model(wrapped)
    return wrapped


def wrap_onnx_file(source: Path, destination: Path, pre: onnx.ModelProto | None, post: onnx.ModelProto) -> None:
    """:func:`wrap_onnx` from file to file."""
    onnx.save(wrap_onnx(onnx.load(str(source)), pre, post), str(destination))


def _reroute(parameter: Any, source: Any) -> None:
    """Feed every consumer of an OpenVINO ``parameter`` from the output port ``source`` instead."""
    for consumer in list(parameter.output(0).get_target_inputs()):
        consumer.replace_source_output(source)


def wrap_openvino(core_ir: Path, pre: onnx.ModelProto | None, post: onnx.ModelProto) -> Any:
    """The core ``ov.Model`` (fp32, fp16 or NNCF int8 IR) stitched between ``pre`` and ``post`` (read as ONNX)."""
    import openvino as ov

    ov_core = ov.Core()
    model = ov_core.read_model(str(core_ir))
    with tempfile.TemporaryDirectory() as scratch:
        paths = {}
        for name, graph in (("pre", pre), ("post", post)):
            if graph is not None:
                paths[name] = Path(scratch) / f"{name}.onnx"
                onnx.save(graph, str(paths[name]))
        ov_pre = ov_core.read_model(str(paths["pre"])) if "pre" in paths else None
        ov_post = ov_core.read_model(str(paths["post"]))
    (parameter,) = model.get_parameters()
    (result,) = model.get_results()
    logits = result.input_value(0)
    parameters = [parameter]
    post_inputs = {p.get_output_tensor(0).get_any_name(): p for p in ov_post.get_parameters()}
    if ov_pre is not None:
        pre_outputs = {r.input_value(0).get_any_name(): r.input_value(0) for r in ov_pre.get_results()}
        _reroute(parameter, pre_outputs[parameter.get_output_tensor(0).get_any_name()])
        _reroute(post_inputs[FRAME_HW], pre_outputs[FRAME_HW])
        parameters = list(ov_pre.get_parameters())
    _reroute(post_inputs[CORE_LOGITS], logits)
    return ov.Model(list(ov_post.get_results()), parameters, "edgeseg_frame_path")
