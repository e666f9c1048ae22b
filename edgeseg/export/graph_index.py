"""Lookups over one ONNX graph: which node makes a tensor, which nodes read it, constant values."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphIndex:
    """Producers, readers and constants of ``graph``'s nodes (the node protos themselves, not copies)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self._initializers = {t.name: t for t in graph.initializer}
        self._constant_nodes = {n.output[0]: n for n in self.nodes if n.op_type == "Constant"}
        self._producers = {name: node for node in self.nodes for name in node.output if name}
        self._readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self._readers[name].append(node)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output; None for a computed tensor."""
        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        if name in self._constant_nodes:
            attribute = self._constant_nodes[name].attribute[0]
            if attribute.type == onnx.AttributeProto.TENSOR:
                return numpy_helper.to_array(attribute.t)
            return np.asarray(helper.get_attribute_value(attribute))
        return None

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node computing a tensor; None for graph inputs and initializers."""
        return self._producers.get(name)

    def readers(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading a tensor."""
        return self._readers.get(name, [])
