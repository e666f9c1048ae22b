"""Graph surgery as onnx_ir passes and onnxscript rewrite rules: GELU fusion, HardSigmoid folding, node names.

The exact-GELU rules are onnxscript's ``ort_fusions.erfgelu`` patterns written again with the matched Mul's
output bound, so that the fused ``com.microsoft.Gelu`` keeps that Mul's node name (``nodes_to_exclude`` and the
sensitivity ranking name nodes). No library rule folds a quantized HardSigmoid, so that one is edgeseg's own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass
from onnxscript.rewriter import pattern

_SQRT_TWO = math.sqrt(2.0)


# ---- exact GELU → com.microsoft.Gelu -------------------------------------------------------------------


def _gelu_half_inside(op: Any, x: ir.Value) -> ir.Value:  # x · (½ · (1 + erf(x / √2)))
    return op.Mul(x, op.Mul(0.5, op.Add(op.Erf(op.Div(x, _SQRT_TWO)), 1.0)), _outputs=["gelu"])


def _gelu_half_outside(op: Any, x: ir.Value) -> ir.Value:  # ½ · (x · (1 + erf(x / √2)))
    return op.Mul(0.5, op.Mul(x, op.Add(op.Erf(op.Div(x, _SQRT_TWO)), 1.0)), _outputs=["gelu"])


def _producer(value: ir.Value) -> ir.Node:
    """The node computing ``value`` (patterns bind computed values only)."""
    node = value.producer()
    if node is None:
        raise ValueError(f"{value.name} is a graph input or initializer, not a node's output")
    return node


def _fused_gelu(op: Any, x: ir.Value, gelu: ir.Value) -> ir.Value:
    return op.Gelu(x, _domain="com.microsoft", _name=_producer(gelu).name)


GELU_RULES = pattern.RewriteRuleSet(
    [pattern.RewriteRule(p, _fused_gelu, name="ExactGelu") for p in (_gelu_half_inside, _gelu_half_outside)],
    commute=True,
)


def fuse_gelu(model: ir.Model) -> int:
    """Replace each ``x · ½ · (1 + erf(x / √2))`` (any operand order) by ``com.microsoft.Gelu``; returns how many.

    Constants match to a relative 1e-5; an intermediate read outside the pattern blocks the fusion.
    """
    return GELU_RULES.apply_to_model(model)


# ---- quantized HardSigmoid → one QLinearAdd --------------------------------------------------------------


class _HardSigmoidAsAdd(pattern.RewriteRuleClassBase):
    """``DQ(x; s, z) → HardSigmoid(α, β) → Q`` as ``DQ(x; α·s, z) + DQ(1; β, 0) → Q`` (see :func:`fold_hardsigmoid`).

    The DequantizeLinear stays out of the pattern because other nodes may read it; the Q that must follow is
    checked, not replaced.
    """

    def pattern(self, op: Any, x: ir.Value) -> ir.Value:
        return op.HardSigmoid(x, _outputs=["gate"])

    # The rewriter calls check/rewrite with the pattern's bindings as keywords; the base class types them loosely.
    def check(self, context: Any, x: ir.Value, gate: ir.Value, **_: Any) -> bool:  # type: ignore[override]
        dequantize = x.producer()
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or dequantize.domain not in ("", "ai.onnx"):
            return False
        if dequantize.inputs[1] is None or dequantize.inputs[1].const_value is None:
            return False
        readers = list(gate.uses())
        return len(readers) == 1 and not gate.is_graph_output() and _saturates_within_unit_interval(readers[0].node)

    def rewrite(self, op: Any, x: ir.Value, gate: ir.Value, **_: Any) -> ir.Value:
        node = _producer(gate)
        alpha = node.attributes.get_float("alpha", 0.2)
        beta = node.attributes.get_float("beta", 0.5)
        dequantize = _producer(x)
        scale_tensor = ir.convenience.get_const_tensor(dequantize.inputs[1]) if dequantize.inputs[1] else None
        if scale_tensor is None:  # check() admitted only constant scales
            raise ValueError(f"{dequantize.name}: the DequantizeLinear scale is not a constant")
        scale = scale_tensor.numpy().astype(np.float32)

        def constant(part: str, value: np.ndarray) -> ir.Value:
            return op.initializer(ir.tensor(value, name=f"{node.name}/{part}"))

        scaled_scale = constant("scale", (scale * np.float32(alpha)).astype(np.float32))
        beta_u8 = constant("beta_u8", np.array(1, np.uint8))  # β = 1 × β: a quantized constant
        beta_scale = constant("beta_scale", np.array(beta, np.float32))
        beta_zero = constant("beta_zero", np.array(0, np.uint8))
        scaled = op.DequantizeLinear(
            dequantize.inputs[0], scaled_scale, *dequantize.inputs[2:], _name=f"{node.name}/scaled", **_axis(dequantize)
        )
        scaled.name = f"{node.name}/scaled"
        beta_value = op.DequantizeLinear(beta_u8, beta_scale, beta_zero, _name=f"{node.name}/beta")
        beta_value.name = f"{node.name}/beta"
        return op.Add(scaled, beta_value, _name=node.name)


def _axis(node: ir.Node) -> dict[str, int]:
    """The ``axis`` attribute of a (per-channel) DequantizeLinear, as keyword arguments."""
    return {"axis": node.attributes.get_int("axis")} if "axis" in node.attributes else {}


def _saturates_within_unit_interval(quantize: ir.Node) -> bool:
    """Whether ``quantize`` is a per-tensor uint8 QuantizeLinear whose representable range lies in [0, 1]."""
    if quantize.op_type != "QuantizeLinear" or len(quantize.inputs) < 3:
        return False
    scale, zero = (ir.convenience.get_const_tensor(v) if v is not None else None for v in quantize.inputs[1:3])
    if scale is None or zero is None or scale.size != 1 or zero.dtype != ir.DataType.UINT8:
        return False
    scale_value, zero_value = float(scale.numpy().reshape(-1)[0]), float(zero.numpy().reshape(-1)[0])
    low, high = -zero_value * scale_value, (255 - zero_value) * scale_value
    return low >= 0.0 and high <= 1.0 + 1e-6


HARDSIGMOID_RULES = pattern.RewriteRuleSet([_HardSigmoidAsAdd.rule()])


def fold_hardsigmoid(model: ir.Model) -> int:
    """Rewrite each quantized ``DQ(x) → HardSigmoid(α, β) → Q`` as ``DQ(x; α·scale) + β → Q``; returns how many.

    ONNX Runtime runs the result as one QLinearAdd on uint8 data instead of dequantizing ``x``. It is exact:
    HardSigmoid is ``clip(α·x + β, 0, 1)``, ``α·x`` is ``x`` dequantized at α times its scale, and the clip is
    the Q's own saturation. That holds only where the Q saturates within [0, 1]; other Qs are left alone.
    DequantizeLinear nodes nothing reads any more are removed.
    """
    count = HARDSIGMOID_RULES.apply_to_model(model)
    unread = [
        n
        for n in model.graph
        if n.op_type == "DequantizeLinear" and not n.outputs[0].uses() and not n.outputs[0].is_graph_output()
    ]
    model.graph.remove(unread, safe=True)
    return count


# ---- node names ----------------------------------------------------------------------------------------


class _OpAndOutputNames:
    """NameFixPass naming: a nameless node is called ``<op>_<first output>``; values keep their names."""

    def generate_node_name(self, node: ir.Node) -> str:
        return node.name or f"{node.op_type}_{node.outputs[0].name}"

    def generate_value_name(self, value: ir.Value) -> str:
        return value.name or "value"


def name_nodes(model: ir.Model) -> None:
    """Give every node a unique name (``<op>_<first output>`` where it had none)."""
    NameFixPass(_OpAndOutputNames())(model)
