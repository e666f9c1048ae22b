"""Checks shared by the model-family tests: export of the fused model and what its graph may contain."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeseg.export.onnx_graph import export_onnx
from edgeseg.models.fusion import fuse_model

# Ops that mean a size-dependent or non-portable construct reached the graph.
FORBIDDEN_OPS = frozenset({"Einsum", "GatherND", "ScatterND", "Where", "NonZero", "Loop", "If", "Col2Im"})


def export_fused(model: torch.nn.Module, size: tuple[int, int], dynamic_multiple: int | None = None) -> onnx.ModelProto:
    """The deployment graph edgeseg exports: ``fuse_model`` then torch's dynamo exporter at opset 18."""
    return export_onnx(fuse_model(model), size, dynamic_multiple=dynamic_multiple)


def assert_fuses_exactly(model: torch.nn.Module, size: tuple[int, int], atol: float = 1e-5) -> torch.nn.Module:
    """``fuse_model`` leaves no BatchNorm and gives the eager logits at ``size``; returns the fused model."""
    fused = fuse_model(model)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=atol)
    return fused


def assert_portable_graph(proto: onnx.ModelProto, forbidden: frozenset[str] = FORBIDDEN_OPS) -> collections.Counter:
    """No forbidden op and no tensor of rank above 4; returns the op histogram."""
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert not forbidden & set(ops), sorted(forbidden & set(ops))
    inferred = onnx.shape_inference.infer_shapes(proto)
    values = [*inferred.graph.value_info, *inferred.graph.output]
    assert max(len(v.type.tensor_type.shape.dim) for v in values) <= 4
    return ops


def run_onnxruntime(proto: onnx.ModelProto, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run the graph once in ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = x.numpy() if isinstance(x, torch.Tensor) else x
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


def assert_golden_logits_and_features(model: torch.nn.Module, golden: Path, atol: float = 1e-4) -> None:
    """``model`` reproduces the official ``logits.npy`` and every ``features_<i>.npy`` on ``input.npy``."""
    x = torch.from_numpy(np.load(golden / "input.npy"))
    with torch.no_grad():
        logits = model(x).numpy()
        features = [f.numpy() for f in model.forward_features(x)]
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), rtol=0, atol=atol)
    for i, feature in enumerate(features):
        np.testing.assert_allclose(feature, np.load(golden / f"features_{i}.npy"), rtol=0, atol=atol)
