"""Why an int8 artifact misses its gate: per-node SQNR against fp32, and the fewest nodes to keep in float.

Every node output of the float graph is compared with the same tensor of the quantized graph on a few
calibration inputs. A node's *local* damage is how much SQNR it loses relative to its worst input
(``drop_db``): accumulated error from upstream is not held against it. ``auto_exclude`` keeps the most
damaging nodes in float (ONNX Runtime ``nodes_to_exclude``, NNCF ``IgnoredScope``), doubling their number
until the gates pass and then bisecting to the fewest that pass. SQNR is :func:`edgeseg.metrics.sqnr_db`, the
parity ladder's, capped at the same ±300 dB: an exact tensor (or an unmeasured input: a weight, the network input)
counts as +300 dB.

Why not the libraries: ONNX Runtime's ``quantization.qdq_loss_debug`` measures tensors, not nodes (each activation
before and after its own Q/DQ pair, and float against dequantized across models), so it cannot tell a node's own
damage from the error it inherits; it runs with graph optimizations off, not as the artifact runs, and covers
ONNX only. NNCF's ``quantize_with_accuracy_control`` covers OpenVINO only and decides by its own metric which
quantizers to revert, where ``--auto-exclude`` needs one ranking for every target, node names that
``nodes_to_exclude`` and ``IgnoredScope`` accept, and the parity ladder's gates as the criterion.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeseg.export.onnx_graph import INPUT_NAME
from edgeseg.export.targets import INT8_FILE, ONNX_FILE, OPENVINO_FILE, BuildOptions
from edgeseg.metrics import SQNR_CAP_DB, LogitAccumulator

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


class _TensorErrors:
    """One :class:`~edgeseg.metrics.LogitAccumulator` per tensor name: SQNR of the quantized against the float value."""

    def __init__(self) -> None:
        self._tensors: dict[str, LogitAccumulator] = defaultdict(LogitAccumulator)

    def add(self, name: str, reference: np.ndarray, quantized: np.ndarray) -> None:
        self._tensors[name].add(reference, quantized)

    def sqnr(self, name: str) -> float:
        """The tensor's SQNR in dB; +cap when it was not measured, −cap when it holds NaN (the worst damage)."""
        if name not in self._tensors:
            return SQNR_CAP_DB
        sqnr = self._tensors[name].sqnr_db()
        return sqnr if math.isfinite(sqnr) else -SQNR_CAP_DB


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
    accumulator = _TensorErrors()
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
    accumulator = _TensorErrors()
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


def build_score(parity: dict[str, Any]) -> tuple[bool, int, float]:
    """How good a build's parity is (higher is better): passed, then fewer failed rungs, then the lowest
    argmax agreement of its lower-precision artifacts."""
    agreements = [r["ladder"]["agreement"] for r in parity["results"].values() if r["precision"] != "fp32"]
    return parity["passed"], -len(parity["failures"]), min(agreements, default=0.0)


def search_kept_float(
    candidates: Sequence[str],
    failed: dict[str, Any],
    rebuild: Callable[[tuple[str, ...]], tuple[Any, dict[str, Any]]],
) -> tuple[int, list[dict[str, Any]], tuple[Any, dict[str, Any]]]:
    """The fewest leading ``candidates`` to keep in float for the gates to pass, else the best build seen.

    Doubles the count until a build passes, then bisects down to the fewest that pass. When none passes, the
    build with the best :func:`build_score` wins (the full-int8 build ``failed`` included): keeping more nodes
    in float can lose agreement (the quantizer re-calibrates around them), so the last build tried is not
    necessarily the best. Returns (count, the tries, (artifacts, parity) of that count, rebuilt if needed).
    """
    tries: list[dict[str, Any]] = []
    builds: dict[int, tuple[Any, dict[str, Any]]] = {}
    scores = {0: build_score(failed)}

    def record(count: int, parity: dict[str, Any]) -> None:
        agreement = build_score(parity)[2]
        tries.append(
            {"kept_float": count, "passed": parity["passed"], "agreement": agreement, "failures": parity["failures"]}
        )

    def attempt(count: int) -> bool:
        builds.clear()  # the artifacts on disk are those of the latest build only
        builds[count] = rebuild(tuple(candidates[:count]))
        scores[count] = build_score(builds[count][1])
        record(count, builds[count][1])
        return builds[count][1]["passed"]

    record(0, failed)
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
    final = passing if passing is not None else max(scores, key=lambda c: (scores[c], -c))
    if final not in builds:  # rebuild it so that the files on disk are the reported build's
        builds[final] = rebuild(tuple(candidates[:final]))
    return final, tries, builds[final]


def auto_exclude(
    target: str,
    folder: Path,
    options: BuildOptions,
    failed: dict[str, Any],
    rebuild: Callable[[BuildOptions], tuple[Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Keep the fewest most-damaging quantized nodes in float until the gates pass (see :func:`search_kept_float`).

    Returns the report, plus ``artifacts`` and ``parity`` of the reported build (the caller pops them).
    """
    ranking = rank_nodes(target, folder, options.calibration[:ANALYSIS_INPUTS])
    candidates = [n.name for n in ranking[:MAX_CANDIDATES]]
    final, tries, (artifacts, parity) = search_kept_float(
        candidates, failed, lambda kept: rebuild(replace(options, keep_float=kept))
    )
    return {
        "analysis": f"per-node SQNR vs fp32 on {min(len(options.calibration), ANALYSIS_INPUTS)} calibration inputs; "
        "ranked: only nodes the quantizer really quantized",
        "worst_nodes": [asdict(n) for n in ranking[:10]],
        "kept_float": candidates[:final],
        "passed": parity["passed"],
        "reported": "the fewest kept in float that pass"
        if parity["passed"]
        else f"the best build tried ({final} kept in float), none passed",
        "tries": tries,
        "artifacts": artifacts,
        "parity": parity,
    }
