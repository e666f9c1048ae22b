"""The one graph export writes for a (model, target, precision): fused, exported, simplified.

``edgeseg export`` and ``edgeseg lint MODEL`` both call :func:`build_export_graph`, so lint checks exactly
the graph a bundle holds (the target's encoder layout included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import onnx
from torch import nn

from edgeseg.export.onnx_graph import DEFAULT_OPSET, export_onnx, simplify
from edgeseg.export.targets import encoder_layout
from edgeseg.models.fusion import fuse_model


@runtime_checkable
class HasEncoderLayouts(Protocol):
    """A model whose encoder has equivalent formulations (e.g. AFFormer), one picked per target."""

    def set_encoder_layout(self, layout: str) -> None: ...


@dataclass(frozen=True)
class ExportGraph:
    """The fused model, its simplified ONNX graph, the encoder layout it was exported in and the export time."""

    fused: nn.Module
    proto: onnx.ModelProto
    encoder_layout: str | None
    seconds: float


def build_export_graph(
    model: nn.Module,
    target: str,
    precision: str,
    input_size: tuple[int, int],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_multiple: int | None = None,
) -> ExportGraph:
    """Fuse ``model``, pick the encoder layout ``target`` runs fastest at ``precision``, export and simplify."""
    fused = fuse_model(model)
    layout = None
    if isinstance(fused, HasEncoderLayouts):
        layout = encoder_layout(target, precision)
        fused.set_encoder_layout(layout)
    started = time.perf_counter()
    proto = simplify(export_onnx(fused, input_size, opset, dynamic_multiple=dynamic_multiple))
    return ExportGraph(fused, proto, layout, time.perf_counter() - started)
