"""fp16 ONNX graphs: weights and activations in float16, float32 at the graph's input and output.

The same graph serves ONNX Runtime (CUDA/ARM fp16 kernels; the x86 CPU provider runs it through inserted
casts) and TensorRT 11, whose strongly typed networks take their precision from the graph itself.
"""

from __future__ import annotations

import onnx

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
    _drop_duplicate_nodes(converted.graph)
    _sort_topologically(converted.graph)
    onnx.checker.check_model(converted)
    return converted


def _drop_duplicate_nodes(graph: onnx.GraphProto) -> None:
    """Remove repeated identical nodes (the converter inserts one Cast per blocked consumer of a tensor)."""
    seen: dict[str, onnx.NodeProto] = {}
    keep = []
    for node in graph.node:
        first = next((seen[o] for o in node.output if o in seen), None)
        if first is None:
            seen.update(dict.fromkeys(node.output, node))
            keep.append(node)
        elif first.SerializeToString() != node.SerializeToString():
            raise ValueError(f"the fp16 graph writes {node.output[0]!r} from two different nodes ({node.name})")
    copies = [onnx.NodeProto() for _ in keep]
    for copy, node in zip(copies, keep):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (the converter appends casts)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"the fp16 graph has a cycle or a dangling input at {pending[0].name}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        ordered.extend(ready)
        available.update(o for n in ready for o in n.output)
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def float16_nodes(model: onnx.ModelProto) -> tuple[int, int]:
    """(nodes computing in float16, all compute nodes), counting Cast nodes as neither."""
    from onnx.shape_inference import infer_shapes

    inferred = infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    compute = [n for n in inferred.graph.node if n.op_type not in ("Cast", "Constant")]
    half = sum(1 for n in compute if any(types.get(o) == onnx.TensorProto.FLOAT16 for o in n.output))
    return half, len(compute)
