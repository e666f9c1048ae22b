"""Hazard check of an ONNX graph for one runtime: what would fail to load or build, and what is known to go wrong.

``lint_onnx(model, target)`` runs the rules of ``target`` ("onnxruntime", "openvino" or "tensorrt") and returns
:class:`Finding` s. An error means the runtime rejects the graph (TensorRT's ONNX parser or builder would stop);
a warning is a known accuracy, memory or portability risk. The TensorRT rules follow the parser's operator table
(onnx-tensorrt docs/operators.md, TensorRT 10.1 revision, plus Attention and RMSNormalization from 10.15) and
need neither a GPU nor the tensorrt package.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeseg.export.graph_index import GraphIndex

TARGETS = ("onnxruntime", "openvino", "tensorrt")
GRAPH = "(graph)"  # the node name of findings about the whole graph


def _ops(names: str) -> frozenset[str]:
    """A set of op names from a whitespace-separated list."""
    return frozenset(names.split())


# ONNX ops TensorRT's parser imports (default domain). Anything else fails to parse without a plugin.
TRT_SUPPORTED_OPS = _ops(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization Cast
    CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather
    GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN
    LSTM LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool
    Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad
    ParametricSoftplus Pow QuantizeLinear RMSNormalization RNN RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample
    Where Xor"""
)
# Ops the parser table lists as unsupported (a sharper message than "not in the supported list").
TRT_UNSUPPORTED_OPS = _ops(
    """AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow CenterCropPad Col2Im
    Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder
    MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
    OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct
    SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
    StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique"""
)
# Integer-arithmetic ops that ONNX Runtime's quantize_dynamic and QOperator format write.
ORT_INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"})
TRT_OPSETS = (9, 25)  # TensorRT 10.15 parses opset 9-24, 11.x 9-25
TRT_OPSET_ALL_10X = 20  # the highest opset TensorRT 10.0 and 10.1 parse
TRT_RESIZE_COORDINATES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
TRT_QUANTIZED_TYPES = frozenset({"INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"})
TRT_TOPK_MAX = 3840
_REDUCE_OPS = _ops(
    "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare"
)
# (input index, what it is) of op inputs the TensorRT parser needs as build-time constants.
TRT_CONSTANT_INPUTS = {
    **{op: (1, "axes") for op in ("Squeeze", "Unsqueeze")},
    **{op: (1, "axes") for op in _REDUCE_OPS},
    "Slice": (3, "axes"),
    "Pad": (3, "axes"),
    "CumSum": (1, "axis"),
    "OneHot": (1, "depth"),
}
# Ops whose float inputs must share one type (ONNX type constraint T; TensorRT ElementWise inputs are both T1).
SAME_TYPE_OPS = _ops(
    "Add Sub Mul Div Max Min Sum Mean Equal Less LessOrEqual Greater GreaterOrEqual PRelu Concat MatMul Gemm"
)
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
EXPORT_UNFRIENDLY_OPS = frozenset({"Einsum", "DFT"})


@dataclass(frozen=True)
class Finding:
    """One hazard: severity, node, op, rule id, and a message that names the node, says why and what to do."""

    severity: str  # "error" or "warning"
    node: str
    op: str
    rule: str
    message: str


class _Graph(GraphIndex):
    """Lookups over one shape-inferred graph: constants, element types, ranks, consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            graph = onnx.shape_inference.infer_shapes(model).graph
        except (onnx.shape_inference.InferenceError, ValueError) as error:
            raise ValueError(
                f"ONNX shape inference failed on the graph ({error}); run onnx.checker.check_model(model, "
                "full_check=True) to find the broken node"
            ) from error
        super().__init__(graph)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.inputs = [v for v in graph.input if v.name not in self._initializers]
        self.outputs = {v.name for v in graph.output}
        self._values = {v.name: v for v in chain(graph.input, graph.value_info, graph.output)}

    def dtype(self, name: str) -> int:
        """The element type of a tensor (TensorProto enum), 0 when unknown."""
        if name in self._initializers:
            return self._initializers[name].data_type
        if name in self._constant_nodes and self._constant_nodes[name].attribute[0].type == onnx.AttributeProto.TENSOR:
            return self._constant_nodes[name].attribute[0].t.data_type
        value = self._values.get(name)
        return value.type.tensor_type.elem_type if value is not None else 0

    def rank(self, name: str) -> int | None:
        """The rank of a tensor, None when shape inference could not tell."""
        value = self._values.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return None
        return len(value.type.tensor_type.shape.dim)

    def consumers(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Nodes reading any output of ``node``."""
        return [c for name in node.output if name for c in self.readers(name)]

    def is_used(self, name: str) -> bool:
        """Whether a tensor is read by a node or is a graph output."""
        return bool(name) and (name in self.outputs or bool(self.readers(name)))

    def has_low_precision(self) -> bool:
        """Whether the graph computes in fp16/bf16 anywhere or is quantized (has Q/DQ nodes)."""
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in self.nodes):
            return True
        names = chain(self._initializers, self._constant_nodes, self._values)
        return any(self.dtype(name) in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for name in names)

    def has_dynamic_hw(self) -> bool:
        """Whether an image-like (rank-4) graph input leaves its height or width symbolic."""
        for value in self.inputs:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and any(not d.HasField("dim_value") for d in dims[2:]):
                return True
        return False


Rule = Callable[[_Graph], Iterator[Finding]]


def _label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Attribute values of a node, strings decoded (int, float, str, tensor or a list of them, by attribute type)."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _type_name(dtype: int) -> str:
    return TensorProto.DataType.Name(dtype) if dtype else "unknown"


def _error(node: onnx.NodeProto, rule: str, message: str) -> Finding:
    return Finding("error", _label(node), node.op_type, rule, f"{_label(node)}: {message}")


def _warning(node: onnx.NodeProto, rule: str, message: str) -> Finding:
    return Finding("warning", _label(node), node.op_type, rule, f"{_label(node)}: {message}")


# ---- TensorRT rules -------------------------------------------------------------------------------------------


def _trt_opset(g: _Graph) -> Iterator[Finding]:
    low, high = TRT_OPSETS
    if not low <= g.opset <= high:
        yield Finding(
            "error",
            GRAPH,
            "",
            "trt-opset",
            f"opset {g.opset} is outside what TensorRT parses ({low}-{high - 1} on 10.15, {low}-{high} on 11.x); "
            "export with opset 18",
        )
    elif g.opset > TRT_OPSET_ALL_10X:
        yield Finding(
            "warning",
            GRAPH,
            "",
            "trt-opset",
            f"opset {g.opset}: TensorRT 10.0/10.1 parse opset <= {TRT_OPSET_ALL_10X} (JetPack 6 ships 10.3); "
            "export with opset 18-20 to cover every TensorRT 10.x",
        )


def _trt_op_support(g: _Graph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            yield _error(
                node,
                "trt-custom-domain",
                f"op {node.domain}::{node.op_type} is not an ONNX op; TensorRT needs a plugin for it. Lint and build "
                "the plain ONNX graph (ONNX Runtime's optimized .ort.onnx file contains com.microsoft fusions)",
            )
        elif node.op_type in ORT_INTEGER_OPS:
            yield _error(
                node,
                "trt-unsupported-op",
                f"TensorRT does not support {node.op_type} (written by ONNX Runtime's quantize_dynamic or QOperator "
                "format); quantize with quant_format=QDQ, QInt8 activations and weights, symmetric",
            )
        elif node.op_type in TRT_UNSUPPORTED_OPS:
            yield _error(
                node,
                "trt-unsupported-op",
                f"TensorRT's ONNX parser does not support {node.op_type}; rewrite the model part that emits it",
            )
        elif node.op_type not in TRT_SUPPORTED_OPS:
            yield _error(
                node,
                "trt-unsupported-op",
                f"{node.op_type} is not in TensorRT's supported-operator list; rewrite the model part that emits it "
                "or check a newer TensorRT release",
            )


def _trt_resize(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "Resize"):
        attrs = _attrs(node)
        mode = attrs.get("mode", "nearest")
        coordinates = attrs.get("coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            yield _error(
                node,
                "trt-resize",
                f"Resize mode {mode!r}: TensorRT supports nearest and linear only; use bilinear interpolation",
            )
        if coordinates not in TRT_RESIZE_COORDINATES:
            yield _error(
                node,
                "trt-resize",
                f"Resize coordinate_transformation_mode {coordinates!r} is not "
                "supported by TensorRT; interpolate with align_corners=False or True",
            )
        if attrs.get("antialias", 0):
            yield _error(
                node,
                "trt-resize",
                "Resize with antialias=1 is not supported by TensorRT; interpolate with antialias=False",
            )
        if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            yield _error(
                node,
                "trt-resize",
                "Resize keep_aspect_ratio_policy must be 'stretch' for TensorRT; pass explicit output sizes",
            )
        if "axes" in attrs and not _is_identity_axes(list(attrs["axes"]), g.rank(node.input[0])):
            yield _error(
                node,
                "trt-resize",
                f"Resize axes {list(attrs['axes'])} are not all axes in order, which "
                "TensorRT needs; resize with sizes or scales for every axis",
            )


def _is_identity_axes(axes: list[int], rank: int | None) -> bool:
    return axes == list(range(rank if rank is not None else len(axes)))


def _trt_pool(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type in ("AveragePool", "MaxPool", "LpPool")):
        attrs = _attrs(node)
        spatial = len(attrs.get("kernel_shape", []))
        if spatial not in (2, 3):
            yield _error(
                node,
                "trt-pool",
                f"{spatial}-D {node.op_type}: TensorRT pools in 2-D or 3-D only; reshape to a 2-D pool",
            )
        if any(d != 1 for d in attrs.get("dilations", [])):
            yield _error(
                node,
                "trt-pool",
                f"{node.op_type} with dilations {list(attrs['dilations'])}: TensorRT needs dilations of 1",
            )
        if node.op_type == "MaxPool" and len(node.output) > 1 and g.is_used(node.output[1]):
            yield _error(
                node, "trt-pool", "MaxPool's Indices output is not supported by TensorRT; do not use return_indices"
            )


def _trt_constant_inputs(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type in TRT_CONSTANT_INPUTS):
        index, what = TRT_CONSTANT_INPUTS[node.op_type]
        if len(node.input) > index and node.input[index] and g.constant(node.input[index]) is None:
            yield _error(
                node,
                "trt-input-not-constant",
                f"{node.op_type} {what} {node.input[index]!r} is computed at run time; TensorRT needs it as an "
                "initializer. Fold constants (onnxslim) or make the value static in the model",
            )


def _trt_topk(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "TopK"):
        if not _attrs(node).get("sorted", 1):
            yield _error(node, "trt-topk", "TopK with sorted=0 is not supported by TensorRT; use sorted=True")
        k = g.constant(node.input[1]) if len(node.input) > 1 else None
        if k is not None and int(np.max(k)) >= TRT_TOPK_MAX:
            yield _error(
                node, "trt-topk", f"TopK k={int(np.max(k))}: TensorRT needs k < {TRT_TOPK_MAX}; take fewer elements"
            )


def _trt_quantize(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "QuantizeLinear"):
        yield from _qdq_zero_point(g, node)
        quantized = _type_name(g.dtype(node.output[0]))
        if quantized not in TRT_QUANTIZED_TYPES:
            yield _error(
                node,
                "trt-qdq-type",
                f"QuantizeLinear to {quantized}: TensorRT quantizes to INT8, FP8, "
                "INT4 or FP4 only; quantize with activation_type=QInt8 and weight_type=QInt8",
            )


def _trt_dequantize(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "DequantizeLinear"):
        yield from _qdq_zero_point(g, node)
        quantized = _type_name(g.dtype(node.input[0]))
        if quantized == "INT32":
            yield _error(
                node,
                "trt-dq-int32-bias",
                f"DequantizeLinear of INT32 {node.input[0]!r} (a quantized bias): TensorRT dequantizes INT8/FP8/"
                "INT4/FP4 only; keep biases in float (ONNX Runtime: extra_options={'QuantizeBias': False})",
            )
        elif quantized not in TRT_QUANTIZED_TYPES:
            yield _error(
                node,
                "trt-qdq-type",
                f"DequantizeLinear of {quantized} {node.input[0]!r}: TensorRT "
                "dequantizes INT8, FP8, INT4 or FP4 only; quantize with QInt8 activations and weights",
            )


def _qdq_zero_point(g: _Graph, node: onnx.NodeProto) -> Iterator[Finding]:
    if len(node.input) < 3 or not node.input[2]:
        return
    zero_point = g.constant(node.input[2])
    if zero_point is None or np.any(zero_point.astype(np.float64) != 0):
        yield _error(
            node,
            "trt-qdq-zero-point",
            f"{node.op_type} zero point {node.input[2]!r} is not 0: TensorRT supports symmetric quantization only; "
            "quantize symmetrically (ONNX Runtime: extra_options={'ActivationSymmetric': True, "
            "'WeightSymmetric': True})",
        )


def _trt_layernorm_outputs(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "LayerNormalization"):
        if any(g.is_used(name) for name in node.output[1:]):
            yield _error(
                node,
                "trt-layernorm-outputs",
                "LayerNormalization's Mean/InvStdDev outputs are used, but "
                "TensorRT supports only the first output Y; compute statistics separately",
            )


def _trt_double(g: _Graph) -> Iterator[Finding]:
    names = {name for node in g.nodes for name in chain(node.input, node.output) if name}
    doubles = sorted(name for name in names if g.dtype(name) == TensorProto.DOUBLE)
    if doubles:
        yield Finding(
            "warning",
            GRAPH,
            "",
            "trt-double",
            f"{len(doubles)} DOUBLE tensor(s) (e.g. {doubles[0]!r}): TensorRT casts DOUBLE to FLOAT and clamps to "
            "+-FLT_MAX; cast to float32 in the model",
        )


# ---- rules for every target ---------------------------------------------------------------------------------------


def _mixed_float_types(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type in SAME_TYPE_OPS):
        types = {g.dtype(name) for name in node.input if name} & FLOAT_TYPES
        if len(types) > 1:
            names = " and ".join(sorted(_type_name(t) for t in types))
            yield _error(
                node,
                "mixed-float-types",
                f"{node.op_type} mixes {names} inputs without a Cast: invalid ONNX, and a type error in "
                "TensorRT's strongly typed network; insert a Cast so both inputs have one type",
            )


def _resize_scales_type(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "Resize" and len(n.input) > 2 and n.input[2]):
        dtype = g.dtype(node.input[2])
        if dtype not in (0, TensorProto.FLOAT):
            yield _error(
                node,
                "resize-scales-type",
                f"Resize scales {node.input[2]!r} are {_type_name(dtype)}, but ONNX requires float32 scales (a "
                "known fp16-conversion bug); keep Resize out of the fp16 conversion (op_block_list)",
            )


def _argmax(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type in ("ArgMax", "ArgMin")):
        yield _warning(
            node,
            "argmax-int64",
            f"{node.op_type} outputs INT64: 8 bytes a pixel, and a known TensorRT trouble spot (NVIDIA/TensorRT#1766 "
            f"'Could not find any implementation for node {node.op_type}'); keep logits as the graph output and "
            "take the argmax after upsampling, or Cast the indices to INT32",
        )


def _decomposed_layernorm(g: _Graph) -> Iterator[Finding]:
    low_precision = g.has_low_precision()
    for node in (n for n in g.nodes if n.op_type == "Sqrt" and _is_unfused_layernorm(g, n)):
        dtype = g.dtype(node.input[0])
        if dtype in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            yield _warning(
                node,
                "decomposed-layernorm",
                "Sqrt of a LayerNorm decomposed into ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt that runs "
                f"in {_type_name(dtype)}: the squared deviations overflow (garbage masks, e.g. on TensorRT); keep "
                "these nodes in fp32 when converting (add them to the converter's block list)",
            )
        elif not low_precision:
            fix = (
                "export with opset >= 17 so LayerNorm stays one LayerNormalization op"
                if g.opset < 17
                else "use an op that exports as one LayerNormalization/GroupNormalization node (torch layer_norm "
                "or group_norm)"
            )
            yield _warning(
                node,
                "decomposed-layernorm",
                "Sqrt of a LayerNorm decomposed into ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt: converted "
                f"to fp16 its squared deviations overflow (garbage masks on TensorRT fp16); {fix}, or keep these "
                "nodes in fp32 when converting",
            )


def _is_unfused_layernorm(g: _Graph, sqrt: onnx.NodeProto) -> bool:
    """Whether ``sqrt`` computes sqrt(mean((x - mean(x))^2) + eps) and feeds a division."""
    add = g.producer(sqrt.input[0])
    if add is None or add.op_type != "Add":
        return False
    squares = [n for n in (_before_means(g, name) for name in add.input) if n is not None]
    if not squares or squares[0].op_type not in ("Pow", "Mul"):
        return False
    centred = g.producer(squares[0].input[0])
    if centred is None or centred.op_type != "Sub" or len(centred.input) < 2:
        return False
    mean = g.producer(centred.input[1])
    divides = any(c.op_type in ("Div", "Reciprocal") for c in g.consumers(sqrt))
    return mean is not None and mean.op_type == "ReduceMean" and divides


def _before_means(g: _Graph, name: str) -> onnx.NodeProto | None:
    """The node feeding the run of ReduceMean nodes that produces ``name``; None unless ``name`` is a mean."""
    node = g.producer(name)
    if node is None or node.op_type != "ReduceMean":
        return None
    while node is not None and node.op_type == "ReduceMean":
        node = g.producer(node.input[0])
    return node


def _baked_adaptive_pool(g: _Graph) -> Iterator[Finding]:
    if not g.has_dynamic_hw():
        return
    for node in (n for n in g.nodes if n.op_type == "AveragePool"):
        attrs = _attrs(node)
        kernel = list(attrs.get("kernel_shape", []))
        if (
            kernel == list(attrs.get("strides", []))
            and not attrs.get("ceil_mode", 0)
            and not any(attrs.get("pads", []))
            and max(kernel, default=0) >= 4
        ):
            yield _warning(
                node,
                "baked-adaptive-pool",
                f"AveragePool kernel = stride = {kernel} in a graph with dynamic height/width looks like a traced "
                "AdaptiveAvgPool: torch's exporter bakes the window for the example size, so other sizes give "
                "wrong output shapes silently; export one static graph per size (or ignore if this is a fixed-"
                "window pool)",
            )


def _resize_antialias(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type == "Resize" and _attrs(n).get("antialias", 0)):
        yield _warning(
            node,
            "resize-antialias",
            "Resize with antialias=1: runtimes implement it differently (and "
            "TensorRT not at all); interpolate with antialias=False",
        )


def _export_unfriendly(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.op_type in EXPORT_UNFRIENDLY_OPS):
        yield _warning(
            node,
            "export-unfriendly-op",
            f"{node.op_type} has patchy runtime support and slow "
            "kernels on edge targets; rewrite it with MatMul/Transpose/Reshape",
        )


def _openvino_custom_domain(g: _Graph) -> Iterator[Finding]:
    for node in (n for n in g.nodes if n.domain not in ("", "ai.onnx")):
        yield _warning(
            node,
            "ov-custom-domain",
            f"op {node.domain}::{node.op_type} is not a standard ONNX op; "
            "OpenVINO supports only some of them. Convert the plain ONNX graph, not ORT's optimized one",
        )


_COMMON: tuple[Rule, ...] = (
    _mixed_float_types,
    _resize_scales_type,
    _argmax,
    _decomposed_layernorm,
    _baked_adaptive_pool,
)
_RULES: dict[str, tuple[Rule, ...]] = {
    "tensorrt": (
        _trt_opset,
        _trt_op_support,
        _trt_resize,
        _trt_pool,
        _trt_constant_inputs,
        _trt_topk,
        _trt_quantize,
        _trt_dequantize,
        _trt_layernorm_outputs,
        _trt_double,
        *_COMMON,
    ),
    "onnxruntime": (*_COMMON, _resize_antialias, _export_unfriendly),
    "openvino": (*_COMMON, _resize_antialias, _export_unfriendly, _openvino_custom_domain),
}


def lint_onnx(model: onnx.ModelProto, target: str) -> list[Finding]:
    """Hazards of ``model`` on ``target``: errors first, each in graph order."""
    if target not in _RULES:
        raise ValueError(f"unknown lint target {target!r}; choose one of {', '.join(TARGETS)}")
    graph = _Graph(model)
    findings = [finding for rule in _RULES[target] for finding in rule(graph)]
    return sorted(findings, key=lambda f: f.severity != "error")


def format_findings(findings: list[Finding]) -> str:
    """Findings grouped by severity, one line each, then a one-line summary."""
    lines = []
    for severity in ("error", "warning"):
        group = [f for f in findings if f.severity == severity]
        if group:
            lines.append(f"{severity}s:")
            lines.extend(f"  [{f.rule}] {f.message}" for f in group)
    lines.append(summary(findings))
    return "\n".join(lines)


def summary(findings: list[Finding]) -> str:
    """``N errors, M warnings`` with the count of each rule."""
    errors = sum(f.severity == "error" for f in findings)
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.rule] += 1
    rules = ", ".join(f"{rule} x{n}" for rule, n in counts.items())
    return f"{errors} error(s), {len(findings) - errors} warning(s)" + (f" ({rules})" if rules else "")


def load_graph(
    source: str, target: str, input_size: tuple[int, int] = (512, 512), num_classes: int = 150
) -> onnx.ModelProto:
    """The graph to lint: an ONNX file, a bundle folder (its ``target`` artifact), or a registered model name
    exported in memory exactly as ``edgeseg export --target TARGET`` (fp32) writes it."""
    path = Path(source)
    if path.is_dir():
        from edgeseg.bundle import read_bundle

        bundle = read_bundle(path)  # the target's own graph where it is ONNX, else the portable graph (IR → ONNX)
        artifact = bundle.artifact(target if target in bundle.manifest.artifacts else "onnx")
        return _read_onnx(artifact if artifact.suffix == ".onnx" else bundle.artifact("onnx"))
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"{source} does not exist; pass an .onnx file or a name from `edgeseg models`")
        return _read_onnx(path)
    return _export_registered(source, target, input_size, num_classes)


def _read_onnx(path: Path) -> onnx.ModelProto:
    """An ONNX file, or a clear error when it is not one."""
    if path.suffix != ".onnx":
        raise ValueError(f"{path} is not an ONNX model (.onnx); lint takes an .onnx file, a bundle or a model name")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError and others for a file that is not a graph
        raise ValueError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node or not model.opset_import:
        raise ValueError(f"{path} is not an ONNX model (no graph nodes or no opset); pass an .onnx file")
    return model


def _export_registered(name: str, target: str, input_size: tuple[int, int], num_classes: int) -> onnx.ModelProto:
    """The graph ``edgeseg export --target TARGET`` would write for model ``name`` at fp32, in memory."""
    from edgeseg.export.graph import build_export_graph
    from edgeseg.models import create

    return build_export_graph(create(name, num_classes=num_classes), target, "fp32", input_size).proto
