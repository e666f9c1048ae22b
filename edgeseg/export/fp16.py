"""fp16 ONNX graphs: weights and activations in float16, float32 at the graph's input and output.

The same graph serves ONNX Runtime (CUDA/ARM fp16 kernels; the x86 CPU provider runs it through inserted
casts) and TensorRT 11, whose strongly typed networks take their precision from the graph itself.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

# Ops whose arithmetic stays float32: statistics and long reductions overflow or lose precision in fp16
# (LayerNorm after attention is the classic TensorRT fp16 failure), Resize keeps float scales, and Softmax
# over thousands of tokens sums in float32.
FP32_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Softmax",
    "Resize",
)


def to_fp16(model: onnx.ModelProto, keep_fp32_ops: tuple[str, ...] = FP32_OPS) -> onnx.ModelProto:
    """``model`` with float16 weights and activations except in ``keep_fp32_ops``; I/O stays float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops}),
    )
    _drop_repeated_nodes(converted.graph)
    graph = ir.from_proto(converted)
    TopologicalSortPass()(graph)  # the converter appends its casts at the end
    converted = ir.to_proto(graph)
    onnx.checker.check_model(converted)
    return converted


def _drop_repeated_nodes(graph: onnx.GraphProto) -> None:
    """Remove repeats of one node: converters before ONNX Runtime 1.32 write one Cast per blocked reader.

    onnx_ir refuses a graph that writes a tensor twice, so this runs on the proto; nodes that write one tensor
    but differ are an error.
    """
    first: dict[str, bytes] = {}
    repeats = []
    for index, node in enumerate(graph.node):
        serialized = node.SerializeToString()
        earlier = {first[o] for o in node.output if o in first}
        if not earlier:
            first.update(dict.fromkeys(node.output, serialized))
        elif earlier == {serialized}:
            repeats.append(index)
        else:
            raise ValueError(f"the fp16 graph writes {node.output[0]!r} from two different nodes ({node.name})")
    for index in reversed(repeats):
        del graph.node[index]


def float16_nodes(model: onnx.ModelProto) -> tuple[int, int]:
    """(nodes computing in float16, all compute nodes), counting Cast nodes as neither."""
    from onnx.shape_inference import infer_shapes

    inferred = infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    compute = [n for n in inferred.graph.node if n.op_type not in ("Cast", "Constant")]
    half = sum(1 for n in compute if any(types.get(o) == onnx.TensorProto.FLOAT16 for o in n.output))
    return half, len(compute)
