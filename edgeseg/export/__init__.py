"""Export: PyTorch model → fused → ONNX (opset ≥ 18, simplified) → target artifact, with a parity report."""

from edgeseg.export.onnx_graph import ExportError
from edgeseg.export.parity import ParityError
from edgeseg.export.pipeline import ExportRequest, export_bundle

__all__ = ["ExportError", "ExportRequest", "ParityError", "export_bundle"]
