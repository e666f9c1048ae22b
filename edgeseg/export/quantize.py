"""int8 post-training quantization, calibrated on real images.

Two Q/DQ recipes for ONNX and NNCF for OpenVINO:

- ``onnxruntime``: uint8 activations (asymmetric) × int8 per-channel weights, the fast u8s8 path of ONNX
  Runtime's x86 kernels (VNNI). Two things stay float (:func:`recipe_float_nodes`), measured on
  AFFormer-tiny at 512² (agreement with fp32 on 16 val images; 1-thread latency):

  - Softmax and the MatMuls reading it, so that no Q follows the Softmax. Otherwise ONNX Runtime fuses
    DQ → Softmax → Q into QLinearSoftmax, which is slower than the float Softmax (2.9 vs 0.3 ms) and
    loses the most accuracy (agreement 0.986 with it, 0.998 without).
  - Convs reading the network input: at 3 input channels the int8 conv is slower than fp32 (1.9 vs 1.3 ms).

  Before quantizing, each exact (Erf) GELU is fused into one ``com.microsoft.Gelu``, as ONNX Runtime does
  for float graphs: quantized, its five ops became DQ → Div → Erf → Q → QLinearAdd → QLinearMul → QLinearMul;
  fused, they are DQ → Gelu → Q (2 threads: 19.3 → 18.2 ms; agreement unchanged). Three more changes keep
  ONNX Runtime from dequantizing tensors or weights it then runs in float:

  - each HardSigmoid (half of every HardSwish) becomes one QLinearAdd (:func:`fold_hardsigmoid`; exact);
  - constant left operands of MatMul (AFFormer's low-pass pooling matrices) are quantized per tensor as
    uint8, because QLinearMatMul takes only a per-tensor left operand: per channel, each became
    DQ → float MatMul → Q;
  - LayerNorm and InstanceNorm are not quantized (:data:`ONNXRUNTIME_FLOAT_ONLY_OPS`).

  On AFFormer-tiny the three took 2 threads from 18.6 to 16.8 ms, with the same agreement (0.9976).
- ``tensorrt``: int8 activations and weights, both symmetric (every zero-point 0), biases left in float,
  Q/DQ only on the inputs of Conv/MatMul/Gemm: what TensorRT's parser accepts, strongly typed (11.x) or not.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeseg.export.graph_index import GraphIndex
from edgeseg.export.onnx_graph import INPUT_NAME

SCHEMES = ("onnxruntime", "tensorrt")
TENSORRT_QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


ONNXRUNTIME_FLOAT_OPS = {"Softmax"}
# No int8 kernel on ONNX Runtime's CPU provider: quantized, they still run in float, and only add a
# DequantizeLinear of their weights to every inference (34 on AFFormer-tiny).
ONNXRUNTIME_FLOAT_ONLY_OPS = {"InstanceNormalization", "LayerNormalization"}


def quantized_op_types(scheme: str) -> set[str]:
    """Op types a scheme quantizes (ONNX Runtime: every op with a QLinear or Q/DQ rule and a CPU int8 kernel)."""
    if scheme == "tensorrt":
        return set(TENSORRT_QUANTIZED_OPS)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return (set(QDQRegistry) | set(QLinearOpsRegistry)) - ONNXRUNTIME_FLOAT_OPS - ONNXRUNTIME_FLOAT_ONLY_OPS


def recipe_float_nodes(model: onnx.ModelProto, scheme: str) -> list[str]:
    """Nodes ``scheme`` keeps in float whatever the gates say (see the module docstring); none for TensorRT."""
    if scheme != "onnxruntime":
        return []
    index = GraphIndex(model.graph)
    kept = []
    for node in index.nodes:
        if node.op_type in ONNXRUNTIME_FLOAT_OPS:
            kept += [node.name] + [r.name for r in index.readers(node.output[0]) if r.op_type == "MatMul"]
    kept += [r.name for i in model.graph.input for r in index.readers(i.name) if r.op_type == "Conv"]
    return list(dict.fromkeys(kept))


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of model inputs."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self._items = iter([{INPUT_NAME: x} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_onnx(
    source: Path, destination: Path, calibration: Sequence[np.ndarray], scheme: str, exclude: Sequence[str] = ()
) -> list[str]:
    """Write the Q/DQ int8 graph of ``source`` to ``destination``; returns the nodes kept in float.

    Those are the recipe's own (:func:`recipe_float_nodes`) followed by ``exclude``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if scheme not in SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not calibration:
        raise ValueError("int8 quantization needs calibration images; pass --calib DIR")
    options: dict[str, Any] = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "weight_type": QuantType.QInt8,
        "calibrate_method": CalibrationMethod.MinMax,
    }
    if scheme == "onnxruntime":
        options["activation_type"] = QuantType.QUInt8
    else:
        options["activation_type"] = QuantType.QInt8
        options["extra_options"] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    options["op_types_to_quantize"] = sorted(quantized_op_types(scheme))
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare_for_quantization(source, Path(scratch) / "prepared.onnx", scheme)
        model = onnx.load(str(prepared))
        options["nodes_to_exclude"] = list(dict.fromkeys([*recipe_float_nodes(model, scheme), *exclude]))
        if scheme == "onnxruntime":
            per_tensor = [{"quant_type": QuantType.QUInt8}]
            options["extra_options"] = {
                "TensorQuantOverrides": dict.fromkeys(constant_left_operands(model), per_tensor)
            }
        quantize_static(str(prepared), str(destination), _Reader(calibration), **options)
    if scheme == "onnxruntime":
        quantized = onnx.load(str(destination))
        if fold_hardsigmoid(quantized):
            onnx.save(quantized, str(destination))
    return options["nodes_to_exclude"]


def constant_left_operands(model: onnx.ModelProto) -> list[str]:
    """Initializers read as the left operand of a MatMul."""
    initializers = {t.name for t in model.graph.initializer}
    return list(
        dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in initializers)
    )


def fold_hardsigmoid(model: onnx.ModelProto) -> int:
    """Rewrite each quantized ``DQ(x) → HardSigmoid(α, β) → Q`` as ``DQ(x; α·scale) + β → Q``; returns how many.

    ONNX Runtime runs the result as one QLinearAdd on uint8 data instead of dequantizing ``x``. It is exact:
    HardSigmoid is ``clip(α·x + β, 0, 1)``, ``α·x`` is ``x`` dequantized at α times its scale, and the clip is
    the Q's own saturation. That holds only where the Q saturates within [0, 1]; other Qs are left alone.
    """
    index = GraphIndex(model.graph)
    outputs = {o.name for o in model.graph.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in (n for n in index.nodes if n.op_type == "HardSigmoid"):
        dequantize = index.producer(node.input[0])
        readers = index.readers(node.output[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(readers) != 1:
            continue
        if not _saturates_within_unit_interval(readers[0], index):
            continue
        attributes = {a.name: a.f for a in node.attribute}
        alpha, beta = attributes.get("alpha", 0.2), attributes.get("beta", 0.5)
        scale = np.asarray(index.constant(dequantize.input[1]), np.float32)
        scaled_scale, scaled, beta_u8, beta_scale, beta_zero, beta_value = (
            f"{node.name}/{part}" for part in ("scale", "scaled", "beta_u8", "beta_scale", "beta_zero", "beta")
        )
        model.graph.initializer.extend(
            [
                numpy_helper.from_array((scale * np.float32(alpha)).astype(np.float32), scaled_scale),
                numpy_helper.from_array(np.array(1, np.uint8), beta_u8),  # β = 1 × β: a quantized constant
                numpy_helper.from_array(np.array(beta, np.float32), beta_scale),
                numpy_helper.from_array(np.array(0, np.uint8), beta_zero),
            ]
        )
        scaled_inputs = [dequantize.input[0], scaled_scale, *dequantize.input[2:]]
        replaced[id(node)] = [
            helper.make_node("DequantizeLinear", scaled_inputs, [scaled], name=scaled),
            helper.make_node("DequantizeLinear", [beta_u8, beta_scale, beta_zero], [beta_value], name=beta_value),
            helper.make_node("Add", [scaled, beta_value], [node.output[0]], name=node.name),
        ]
    if not replaced:
        return 0
    nodes = [new for n in index.nodes for new in replaced.get(id(n), [n])]
    read = {name for n in nodes for name in n.input} | outputs
    nodes = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(replaced)


def _saturates_within_unit_interval(quantize: onnx.NodeProto, index: GraphIndex) -> bool:
    """Whether ``quantize`` is a per-tensor uint8 QuantizeLinear whose representable range lies in [0, 1]."""
    if quantize.op_type != "QuantizeLinear" or len(quantize.input) < 3:
        return False
    scale, zero = index.constant(quantize.input[1]), index.constant(quantize.input[2])
    if scale is None or zero is None or scale.size != 1 or zero.dtype != np.uint8:
        return False
    low, high = -float(zero) * float(scale), (255 - float(zero)) * float(scale)
    return low >= 0.0 and high <= 1.0 + 1e-6


def prepare_for_quantization(source: Path, destination: Path, scheme: str) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, constant folding, fusions), every node named.

    Pre-processing inlines function ops (HardSwish becomes HardSigmoid and Mul) into nameless nodes; they get
    ``<op>_<first output>`` so that ``nodes_to_exclude`` and the sensitivity ranking can name them. The
    ``onnxruntime`` scheme also fuses GELUs (:func:`fuse_gelu`). The result is cached by the source's content:
    ``--auto-exclude`` prepares the same graph for every rebuild.
    """
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    destination.write_bytes(_prepared(digest, str(source), scheme == "onnxruntime"))
    return destination


@functools.lru_cache(maxsize=4)
def _prepared(digest: str, source: str, gelu: bool) -> bytes:
    """The prepared graph of ``source`` (whose content hashes to ``digest``, the cache key)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    del digest
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(source, str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
    if gelu:
        fuse_gelu(model)
    names = {node.name for node in model.graph.node}
    for node in model.graph.node:
        if not node.name:
            node.name = f"{node.op_type}_{node.output[0]}"
            while node.name in names:
                node.name += "_"
            names.add(node.name)
    return model.SerializeToString()


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace each ``x · ½ · (1 + erf(x / √2))`` (any order of the two Muls) by ``com.microsoft.Gelu``.

    Returns how many were fused. The replaced nodes' constants are left for ONNX Runtime to drop.
    """
    index = GraphIndex(model.graph)

    def scalar(name: str) -> float | None:
        value = index.constant(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def only_reader(tensor: str, op: str) -> onnx.NodeProto | None:
        found = index.readers(tensor)
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for erf in (n for n in index.nodes if n.op_type == "Erf"):
        div = index.producer(erf.input[0])
        if div is None or div.op_type != "Div" or not np.isclose(scalar(div.input[1]) or 0.0, np.sqrt(2.0)):
            continue
        x = div.input[0]
        add = only_reader(erf.output[0], "Add")
        first = add and only_reader(add.output[0], "Mul")
        second = first and only_reader(first.output[0], "Mul")
        if not (add and first and second) or scalar(next(i for i in add.input if i != erf.output[0])) != 1.0:
            continue
        halves = [scalar(i) for m in (first, second) for i in m.input if i not in (x, add.output[0], first.output[0])]
        if halves != [0.5] or x not in (*first.input, *second.input):
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [second.output[0]], name=second.name, domain="com.microsoft")
        replaced[id(second)] = gelu
        removed |= {id(div), id(erf), id(add), id(first)}
    if replaced:
        nodes = [replaced.get(id(n), n) for n in index.nodes if id(n) not in removed]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def quantize_openvino(
    source: Path, calibration: Sequence[np.ndarray], ignored: Sequence[str] = (), transformer: bool = False
) -> Any:
    """NNCF post-training quantization of the ONNX graph at ``source``; returns the int8 ``openvino.Model``.

    ``ignored`` names OpenVINO operations kept in float; ``transformer`` selects NNCF's transformer recipe
    (MatMul-aware, for attention models).
    """
    import openvino as ov

    try:
        import nncf
    except ImportError:
        raise ImportError("OpenVINO int8 export needs NNCF: pip install 'edgeseg[quantize]'") from None
    if not calibration:
        raise ValueError("int8 quantization needs calibration images; pass --calib DIR")
    model = ov.Core().read_model(str(source))
    options: dict[str, Any] = {"subset_size": len(calibration)}
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=list(ignored), validate=False)
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    return nncf.quantize(model, nncf.Dataset(list(calibration)), **options)
