"""The bundle: a folder holding the exported graphs and a self-describing ``manifest.json``.

Torch-free: read by the runtime, written by the exporter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "edgeseg-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Backends a bundle can name; "onnx" is the portable graph every bundle carries, run by ONNX Runtime.
TARGETS = ("onnx", "onnxruntime", "openvino", "tensorrt")
BACKEND_OF_TARGET = {
    "onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
}


class BundleError(ValueError):
    """A bundle folder is missing, incomplete or of an unknown format."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dimension the graph leaves symbolic) and dtype of a graph input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle; ``manifest`` is the raw JSON for fields not surfaced here."""

    path: Path
    manifest: dict[str, Any]

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["model"]["num_classes"])

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def input(self) -> TensorSpec:
        spec = self.manifest["input"]
        return TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"])

    @property
    def output(self) -> TensorSpec:
        spec = self.manifest["output"]
        return TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the graph was exported for (the tracing example of a dynamic graph)."""
        spec = self.manifest["input"]
        h, w = spec.get("example_size") or spec["shape"][2:4]
        return int(h), int(w)

    @property
    def dynamic(self) -> bool:
        """True when one graph accepts every height and width that is a multiple of ``size_multiple``."""
        return None in self.input.shape

    @property
    def size_multiple(self) -> int:
        return int(self.manifest["input"].get("size_multiple", 1))

    def model_input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) an image of ``image_size`` is resized to before inference.

        Static graphs take their one size. Dynamic graphs keep the image's aspect ratio (mmseg's test-time
        rule): scale so the short side is ``short_side`` without the long side passing ``max_long_side``,
        then round each side to the nearest multiple.
        """
        policy = self.manifest["input"].get("resize", {"mode": "stretch"})
        if policy["mode"] == "stretch":
            return self.input_size
        h, w = image_size
        scale = min(policy["short_side"] / min(h, w), policy["max_long_side"] / max(h, w))
        m = policy["multiple"]
        return max(m, round(h * scale / m) * m), max(m, round(w * scale / m) * m)

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.manifest["input"]["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.manifest["input"]["std"])

    @property
    def output_stride(self) -> int:
        return int(self.manifest["output"]["stride"])

    @property
    def default_backend(self) -> str:
        return BACKEND_OF_TARGET[self.target]

    def artifact(self, backend: str) -> Path:
        """The file ``backend`` should load: its own artifact, else the portable ONNX graph.

        ONNX Runtime runs a ``tensorrt`` bundle's own graph (fp16 or Q/DQ int8 ONNX), as the exporter's
        parity check did where TensorRT is not installed.
        """
        artifacts = self.manifest["artifacts"]
        if backend == "onnxruntime" and backend not in artifacts and "tensorrt" in artifacts:
            return self.path / artifacts["tensorrt"]
        return self.path / artifacts.get(backend, artifacts["onnx"])

    def runtime_config(self, backend: str) -> dict[str, Any]:
        """Settings the exporter validated parity with (e.g. OpenVINO's precision hint)."""
        return dict(self.manifest.get("runtime_config", {}).get(backend, {}))

    def verify(self) -> None:
        """Check every listed file exists with its recorded sha256."""
        for name, meta in self.manifest["files"].items():
            path = self.path / name
            if not path.is_file():
                raise BundleError(f"{self.path}: {name} is listed in the manifest but missing; re-export")
            if sha256_of(path) != meta["sha256"]:
                raise BundleError(f"{self.path}: {name} does not match its sha256 in the manifest; re-export")


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` entry: size and sha256 of each file."""
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_of(folder / n)} for n in sorted(names)}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` into ``folder``."""
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and check its format version."""
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not an edgeseg bundle (no {MANIFEST}); create one with `edgeseg export`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version {manifest.get('format_version')} is not supported by this edgeseg "
            f"(supports {FORMAT_VERSION}); re-export with this version"
        )
    return Bundle(folder, manifest)
