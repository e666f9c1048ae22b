"""Why an int8 artifact misses its gate: per-node SQNR against fp32, and the fewest nodes to keep in float.

Every node output of the float graph is compared with the same tensor of the quantized graph on a few
calibration inputs. A node's *local* damage is how much SQNR it loses relative to its worst input
(``drop_db``): accumulated error from upstream is not held against it. ``auto_exclude`` keeps the most
damaging nodes in float (ONNX Runtime ``nodes_to_exclude``, NNCF ``IgnoredScope``), doubling their number
until the gates pass and then bisecting to the fewest that pass.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeseg.export.onnx_graph import INPUT_NAME
from edgeseg.export.targets import INT8_FILE, ONNX_FILE, OPENVINO_FILE, BuildOptions

SQNR_CAP_DB = 120.0  # an exact tensor's SQNR is infinite; cap it so drops stay finite
ANALYSIS_INPUTS = 2
MAX_CANDIDATES = 64
# Operations that move or reshape data without arithmetic: keeping them in float changes nothing.
_PASSIVE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Concat", "Identity"}
_SKIPPED_OV_TYPES = {"Constant", "Parameter", "Result", "ShapeOf", "FakeQuantize", "Convert"}


@dataclass(frozen=True)
class NodeSensitivity:
    """One node's quantization damage: SQNR of its output, of its worst input, and the difference."""

    name: str
    op: str
    sqnr_db: float
    input_sqnr_db: float
    drop_db: float


class _SqnrAccumulator:
    """Running Σref² and Σ(ref−q)² per tensor name."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, name: str, reference: np.ndarray, quantized: np.ndarray) -> None:
        ref = reference.astype(np.float64)
        self.signal[name] = self.signal.get(name, 0.0) + float(np.sum(ref * ref))
        self.noise[name] = self.noise.get(name, 0.0) + float(np.sum((ref - quantized.astype(np.float64)) ** 2))

    def sqnr(self, name: str) -> float:
        noise = self.noise.get(name)
        if noise is None:
            return SQNR_CAP_DB
        if noise == 0.0:
            return SQNR_CAP_DB
        return min(SQNR_CAP_DB, 10.0 * np.log10(max(self.signal[name], 1e-30) / noise))


def _rank(
    nodes: dict[str, tuple[str, list[str], list[str]]], sqnr: Callable[[str], float], quantized: set[str]
) -> list[NodeSensitivity]:
    """Quantized nodes (name → (op, input tensors, output tensors)) by local SQNR drop, worst first.

    Inputs that were not measured (weights, constants) carry no activation error and are skipped.
    """
    ranked = []
    for name, (op, inputs, outputs) in nodes.items():
        if name not in quantized or op in _PASSIVE_OPS or not outputs:
            continue
        worst_input = min((sqnr(i) for i in inputs), default=SQNR_CAP_DB)
        out = min(sqnr(o) for o in outputs)
        ranked.append(
            NodeSensitivity(name, op, round(float(out), 2), round(float(worst_input), 2), round(worst_input - out, 2))
        )
    return sorted(ranked, key=lambda n: n.drop_db, reverse=True)


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """``model`` serialised with ``names`` (float tensors) added as graph outputs."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {o.name for o in extended.graph.output}
    for name in names:
        if name not in present:
            extended.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return extended.SerializeToString()


def _onnx_outputs(model: bytes, names: list[str], inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [dict(zip(names, session.run(names, {INPUT_NAME: x}))) for x in inputs]


def rank_onnx(
    float_model: Path, quantized_model: Path, inputs: Sequence[np.ndarray], scheme: str
) -> list[NodeSensitivity]:
    """Per-node sensitivity of a Q/DQ graph made by :func:`~edgeseg.export.quantize.quantize_onnx`."""
    from edgeseg.export.quantize import prepare_for_quantization, quantized_op_types, recipe_float_nodes

    with tempfile.TemporaryDirectory() as scratch:
        prepared = onnx.shape_inference.infer_shapes(
            onnx.load(str(prepare_for_quantization(float_model, Path(scratch) / "prepared.onnx", scheme)))
        )
    quantized = onnx.load(str(quantized_model))
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    op_types = quantized_op_types(scheme)
    kept = set(recipe_float_nodes(prepared, scheme))
    quantized_nodes = {
        n.name
        for n in quantized.graph.node
        if n.op_type in op_types and n.name not in kept and any(i in dequantized for i in n.input)
    }
    in_both = {o for n in quantized.graph.node for o in n.output}
    tensors = [
        v.name
        for v in (*prepared.graph.value_info, *prepared.graph.output)
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name in in_both
    ]
    measured = set(tensors)
    nodes = {
        n.name: (n.op_type, [i for i in n.input if i in measured], [o for o in n.output if o in measured])
        for n in prepared.graph.node
    }
    accumulator = _SqnrAccumulator()
    reference = _onnx_outputs(_with_outputs(prepared, tensors), tensors, inputs)
    candidate = _onnx_outputs(_with_outputs(quantized, tensors), tensors, inputs)
    for ref, cand in zip(reference, candidate):
        for tensor in tensors:
            accumulator.add(tensor, ref[tensor], cand[tensor])
    return _rank(nodes, accumulator.sqnr, quantized_nodes)


def _port(output: Any) -> str:
    return f"{output.get_node().get_friendly_name()}:{output.get_index()}"


def _openvino_outputs(model: Any, ports: list[str], inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Values of the named output ports (``op name:index``) of ``model`` for each input, in f32."""
    import openvino as ov

    model = model.clone()
    by_port = {_port(out): out for op in model.get_ops() for out in op.outputs()}
    model.add_outputs([by_port[p] for p in ports])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    first = len(compiled.outputs) - len(ports)
    request = compiled.create_infer_request()
    results = []
    for x in inputs:
        request.infer({0: x})
        results.append({p: request.get_output_tensor(first + i).data.copy() for i, p in enumerate(ports)})
    return results


def rank_openvino(float_model: Path, quantized_model: Path, inputs: Sequence[np.ndarray]) -> list[NodeSensitivity]:
    """Per-operation sensitivity of an NNCF int8 OpenVINO model, by operation name."""
    import openvino as ov

    core = ov.Core()
    reference_model, quantized = core.read_model(str(float_model)), core.read_model(str(quantized_model))
    quantized_ports = {_port(out) for op in quantized.get_ops() for out in op.outputs()}
    fake_quantized = {
        op.get_friendly_name()
        for op in quantized.get_ops()
        if any(op.input_value(i).get_node().get_type_name() == "FakeQuantize" for i in range(op.get_input_size()))
    }
    ports = [
        _port(out)
        for op in reference_model.get_ordered_ops()
        if op.get_type_name() not in _SKIPPED_OV_TYPES
        for out in op.outputs()
        if out.get_element_type() == ov.Type.f32 and _port(out) in quantized_ports
    ]
    measured = set(ports)
    nodes = {
        op.get_friendly_name(): (
            op.get_type_name(),
            [p for p in (_port(op.input_value(i)) for i in range(op.get_input_size())) if p in measured],
            [p for p in (_port(out) for out in op.outputs()) if p in measured],
        )
        for op in reference_model.get_ordered_ops()
    }
    accumulator = _SqnrAccumulator()
    for ref, cand in zip(
        _openvino_outputs(reference_model, ports, inputs), _openvino_outputs(quantized, ports, inputs)
    ):
        for port in ports:
            accumulator.add(port, ref[port], cand[port])
    return _rank(nodes, accumulator.sqnr, fake_quantized)


def rank_nodes(target: str, folder: Path, inputs: Sequence[np.ndarray]) -> list[NodeSensitivity]:
    """Sensitivity of the int8 artifact just built in ``folder`` for ``target``."""
    if target == "openvino":
        return rank_openvino(folder / ONNX_FILE, folder / OPENVINO_FILE, inputs)
    return rank_onnx(folder / ONNX_FILE, folder / INT8_FILE, inputs, target)


def auto_exclude(
    target: str,
    folder: Path,
    options: BuildOptions,
    failed: dict[str, Any],
    rebuild: Callable[[BuildOptions], tuple[Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Keep the fewest most-damaging nodes in float until the gates pass.

    Returns the report, plus ``artifacts`` and ``parity`` of the final build (the caller pops them).
    """
    ranking = rank_nodes(target, folder, options.calibration[:ANALYSIS_INPUTS])
    candidates = [n.name for n in ranking[:MAX_CANDIDATES]]
    tries: list[dict[str, Any]] = [{"kept_float": 0, "passed": False, "failures": failed["failures"]}]
    builds: dict[int, tuple[Any, dict[str, Any]]] = {}

    def attempt(count: int) -> bool:
        builds[count] = rebuild(replace(options, keep_float=tuple(candidates[:count])))
        parity = builds[count][1]
        tries.append({"kept_float": count, "passed": parity["passed"], "failures": parity["failures"]})
        return parity["passed"]

    failing, passing, count = 0, None, 1
    while passing is None and candidates:
        if attempt(count):
            passing = count
        elif count >= len(candidates):
            break
        else:
            failing, count = count, min(2 * count, len(candidates))
    if passing is not None:
        while passing - failing > 1:
            middle = (failing + passing) // 2
            if attempt(middle):
                passing = middle
            else:
                failing = middle
    final = passing if passing is not None else failing
    if final not in builds or tries[-1]["kept_float"] != final:
        attempt(final)
    artifacts, parity = builds[final]
    return {
        "analysis": f"per-node SQNR vs fp32 on {min(len(options.calibration), ANALYSIS_INPUTS)} calibration inputs",
        "worst_nodes": [asdict(n) for n in ranking[:10]],
        "kept_float": candidates[:final],
        "passed": passing is not None,
        "tries": tries,
        "artifacts": artifacts,
        "parity": parity,
    }
