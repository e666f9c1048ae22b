"""The bundle: a folder holding the exported graphs and a self-describing ``manifest.json``.

Torch-free: read by the runtime, written by the exporter. The manifest's schema is :mod:`edgeseg.manifest`.
What loading guarantees: the manifest is validated (bounds, allow-listed runtime settings); every file a backend
loads is a plain, listed file name inside the bundle folder, a regular file (not a symbolic link); with
``verify`` its size and sha256 match the manifest before it is loaded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.manifest import (
    BACKEND_OF_TARGET,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    TARGETS,
    FrameSpec,
    InputSpec,
    Manifest,
    ManifestError,
    OutputSpec,
    artifact_files,
    decode_manifest,
    parse_manifest,
)

__all__ = [
    "BACKEND_OF_TARGET",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TARGETS",
    "Bundle",
    "BundleError",
    "describe_files",
    "read_bundle",
    "sha256_of",
    "write_manifest",
]


class BundleError(ValueError):
    """A bundle folder is missing, incomplete, tampered with or of an unknown format."""


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
    """A bundle folder and its validated manifest."""

    path: Path
    manifest: Manifest

    @property
    def model_name(self) -> str:
        return self.manifest.model.name

    @property
    def num_classes(self) -> int:
        return self.manifest.model.num_classes

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input

    @property
    def input(self) -> TensorSpec:
        spec = self.manifest.input
        return TensorSpec(spec.name, tuple(spec.shape), spec.dtype)

    @property
    def graph_input(self) -> TensorSpec:
        """The graph's input: the uint8 NHWC frame for ``--input uint8-*`` bundles, else the model input."""
        return TensorSpec(*self.manifest.graph_input)

    @property
    def frame(self) -> FrameSpec | None:
        """The frame input of a bundle that pre-processes in the graph, else None."""
        return self.manifest.frame

    @property
    def outputs(self) -> list[OutputSpec]:
        """Every graph output, in the graph's order."""
        return list(self.manifest.outputs)

    def output_of(self, kind: str) -> OutputSpec | None:
        """The output of ``kind`` (logits, labels, labels-full, confidence), or None."""
        return self.manifest.output(kind)

    @property
    def output(self) -> TensorSpec:
        """The first graph output (the logits of a version-1 bundle)."""
        spec: OutputSpec = self.manifest.outputs[0]
        return TensorSpec(spec.name, tuple(spec.shape), spec.dtype)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the graph was exported for (the tracing example of a dynamic graph)."""
        return self.manifest.input.example_size

    @property
    def dynamic(self) -> bool:
        """True when one graph accepts every height and width that is a multiple of ``size_multiple``."""
        return self.manifest.input.dynamic

    @property
    def size_multiple(self) -> int:
        return self.manifest.input.size_multiple

    def model_input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) an image of ``image_size`` is resized to (see :meth:`InputSpec.model_input_size`)."""
        return self.manifest.input.model_input_size(image_size)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.manifest.input.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.manifest.input.std

    @property
    def output_stride(self) -> int:
        """Stride of the model's class maps (1 when the graph only outputs full-size labels)."""
        return next((o.stride for o in self.manifest.outputs if o.kind != "labels-full"), 1)

    @property
    def default_backend(self) -> str:
        return BACKEND_OF_TARGET[self.target]

    def artifact_name(self, backend: str) -> str:
        """The listed file ``backend`` loads: its own artifact, else the portable ONNX graph.

        ONNX Runtime runs a ``tensorrt`` bundle's own graph (fp16 or Q/DQ int8 ONNX), as the exporter's
        parity check did where TensorRT is not installed.
        """
        artifacts = self.manifest.artifacts
        if backend == "onnxruntime" and backend not in artifacts and "tensorrt" in artifacts:
            return artifacts["tensorrt"]
        return artifacts.get(backend, artifacts["onnx"])  # type: ignore[call-overload]

    def artifact_precision(self, backend: str) -> str:
        """The precision of what ``backend`` runs: the bundle's for its target's artifact, fp32 for the portable graph.

        Export writes ``model.onnx`` in fp32 whatever the target's precision; a bundle run on another backend
        (e.g. an int8 OpenVINO bundle on ONNX Runtime) runs that graph unless the backend has its own artifact.
        """
        return "fp32" if self.artifact_name(backend) == self.manifest.artifacts["onnx"] else self.precision

    def loaded_files(self, backend: str) -> list[str]:
        """Every file ``backend`` reads: the artifact, and an OpenVINO IR's weights beside it."""
        return artifact_files(self.artifact_name(backend))

    def artifact(self, backend: str) -> Path:
        """Path of the file ``backend`` loads, after checking that it and its companions are plain files here."""
        for name in self.loaded_files(backend):
            self._regular_file(name)
        return self.path / self.artifact_name(backend)

    def runtime_config(self, backend: str) -> dict[str, Any]:
        """The allow-listed settings the exporter validated parity with (e.g. OpenVINO's precision hint)."""
        return self.manifest.backend_config(backend)

    def _regular_file(self, name: str) -> Path:
        """``name`` inside the bundle, refused unless it is a regular file (a symbolic link could point anywhere)."""
        path = self.path / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            raise BundleError(f"{self.path}: {name} is listed in the manifest but missing; re-export") from None
        if not stat.S_ISREG(mode):
            raise BundleError(f"{self.path}: {name} is not a regular file (a link or a folder); re-export the bundle")
        return path

    def verify(self, names: list[str] | None = None) -> None:
        """Check files (default: every listed one) against the size and sha256 in the manifest."""
        for name in self.manifest.files if names is None else names:
            meta = self.manifest.files.get(name)
            if meta is None:
                raise BundleError(f"{self.path}: {name} is not listed in the manifest's files; re-export")
            path = self._regular_file(name)
            if path.stat().st_size != meta.bytes or sha256_of(path) != meta.sha256:
                raise BundleError(f"{self.path}: {name} does not match its size and sha256 in the manifest; re-export")


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` entry: size and sha256 of each file."""
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_of(folder / n)} for n in sorted(names)}


def write_manifest(folder: Path, manifest: Manifest | dict[str, Any]) -> Path:
    """Validate ``manifest`` and write it as ``manifest.json`` into ``folder``."""
    typed = manifest if isinstance(manifest, Manifest) else _validated(manifest, folder / MANIFEST)
    path = folder / MANIFEST
    path.write_text(typed.to_json())
    return path


def _validated(data: dict[str, Any], where: Path) -> Manifest:
    try:
        return parse_manifest(data, str(where))
    except ManifestError as error:
        raise BundleError(str(error)) from None


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and validate its manifest (see :mod:`edgeseg.manifest`)."""
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not folder.is_dir() or not manifest_path.is_file():
        raise BundleError(f"{folder} is not an edgeseg bundle (no {MANIFEST}); create one with `edgeseg export`")
    if os.path.getsize(manifest_path) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is over the {MAX_MANIFEST_BYTES} byte limit; it is not an edgeseg manifest")
    try:
        return Bundle(folder, decode_manifest(manifest_path.read_bytes(), str(manifest_path)))
    except ManifestError as error:
        raise BundleError(str(error)) from None
