"""torch → ONNX: one static graph per input size, opset ≥ 18, single file, simplified."""

from __future__ import annotations

import collections
import logging
import warnings

import onnx
import torch
from torch import nn

DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(RuntimeError):
    """The model could not be turned into a valid graph."""


def export_onnx(model: nn.Module, input_size: tuple[int, int], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``model`` at 1×3×H×W with torch's dynamo exporter and return the in-memory graph.

    The graph is static: ops whose export depends on the size (pooling matrices, resize sizes) are
    baked for ``input_size``.
    """
    if opset < 18:
        raise ExportError(f"opset {opset} requested; edgeseg exports opset 18 or newer (torch's exporter builds 18)")
    example = torch.zeros(1, 3, *input_size)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:
        raise ExportError(f"torch wrote opset {written} instead of the requested {opset}; request opset 18")
    return proto


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold and clean the graph with onnxsim, keeping its own numerical self-check."""
    import onnxsim

    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph")
    onnx.checker.check_model(simplified, full_check=True)
    return simplified


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def static_shape(value: onnx.ValueInfoProto) -> list[int]:
    """The static shape of a graph input or output."""
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        raise ExportError(f"graph tensor {value.name} has a dynamic shape; edgeseg exports static graphs")
    return [d.dim_value for d in dims]
