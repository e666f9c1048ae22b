"""torch → ONNX: one static graph per input size, opset ≥ 18, single file, simplified."""

from __future__ import annotations

import collections
import logging
import warnings

import onnx
import torch
from torch import nn
from torch.export import Dim

DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(RuntimeError):
    """The model could not be turned into a valid graph."""


# Largest side a dynamic graph accepts.
MAX_DYNAMIC_SIDE = 4096


def export_onnx(
    model: nn.Module,
    input_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    dynamic_multiple: int | None = None,
) -> onnx.ModelProto:
    """Trace ``model`` at 1×3×H×W with torch's dynamo exporter and return the in-memory graph.

    By default the graph is static: ops whose export depends on the size (pooling matrices, resize
    sizes) are baked for ``input_size``. With ``dynamic_multiple`` = m, height and width are symbolic
    multiples of m (up to ``MAX_DYNAMIC_SIDE``) and ``input_size`` is only the tracing example.
    """
    if opset < 18:
        raise ExportError(f"opset {opset} requested; edgeseg exports opset 18 or newer (torch's exporter builds 18)")
    example = torch.zeros(1, 3, *input_size)
    dynamic_shapes = None
    if dynamic_multiple is not None:
        blocks = {side: Dim(f"{side}_blocks", min=1, max=MAX_DYNAMIC_SIDE // dynamic_multiple) for side in ("h", "w")}
        dynamic_shapes = ({2: dynamic_multiple * blocks["h"], 3: dynamic_multiple * blocks["w"]},)
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
            dynamic_shapes=dynamic_shapes,
        )
    if program is None:  # torch returns None only for the legacy exporter, which dynamo=True never runs
        raise ExportError("torch.onnx.export returned no program; export with torch>=2.6 (dynamo exporter)")
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:
        raise ExportError(f"torch wrote opset {written} instead of the requested {opset}; request opset 18")
    return proto


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold, fuse and clean the graph with onnxslim (keeps symbolic dimensions), then check it."""
    import onnxslim

    simplified = onnxslim.slim(proto)
    onnx.checker.check_model(simplified, full_check=True)
    return simplified


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def graph_shape(value: onnx.ValueInfoProto) -> list[int | None]:
    """The shape of a graph input or output; None for a symbolic dimension."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
