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

  - each HardSigmoid (half of every HardSwish) becomes one QLinearAdd
    (:func:`~edgeseg.export.rewrites.fold_hardsigmoid`; exact);
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
import onnx_ir as ir

from edgeseg.export.graph_index import GraphIndex
from edgeseg.export.onnx_graph import INPUT_NAME
from edgeseg.export.rewrites import fold_hardsigmoid, fuse_gelu, name_nodes
from edgeseg.progress import quiet_third_party

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
        with quiet_third_party():
            quantize_static(str(prepared), str(destination), _Reader(calibration), **options)
    if scheme == "onnxruntime":
        quantized = ir.load(str(destination))
        if fold_hardsigmoid(quantized):
            ir.save(quantized, str(destination))
    return options["nodes_to_exclude"]


def constant_left_operands(model: onnx.ModelProto) -> list[str]:
    """Initializers read as the left operand of a MatMul."""
    initializers = {t.name for t in model.graph.initializer}
    return list(
        dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in initializers)
    )


def prepare_for_quantization(source: Path, destination: Path, scheme: str) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, constant folding, fusions), every node named.

    Pre-processing inlines function ops (HardSwish becomes HardSigmoid and Mul) into nameless nodes; they get
    ``<op>_<first output>`` so that ``nodes_to_exclude`` and the sensitivity ranking can name them. The
    ``onnxruntime`` scheme also fuses GELUs (:func:`~edgeseg.export.rewrites.fuse_gelu`). The result is cached
    by the source's content: ``--auto-exclude`` prepares the same graph for every rebuild.
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
        model = ir.load(str(prepared))
    name_nodes(model)  # first: a rewrite names the nodes it finds nameless "node", "node_1", …
    if gelu:
        fuse_gelu(model)
    return ir.to_proto(model).SerializeToString()


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
    with quiet_third_party():
        return nncf.quantize(model, nncf.Dataset(list(calibration)), **options)
