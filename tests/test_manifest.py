"""The manifest schema: shipped JSON Schema, field-level errors, bounds, confinement and the runtime allow-list."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import edgeseg.runtime
from edgeseg.bundle import BundleError, read_bundle
from edgeseg.manifest import SCHEMA_FILE, Manifest, ManifestError, json_schema, parse_manifest

MakeBundle = Callable[..., Path]


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def bundle_copy(tiny_bundle: MakeBundle, tmp_path: Path) -> Path:
    """A writable copy of the openvino-target tiny bundle (model.onnx, model.xml, model.bin)."""
    return Path(shutil.copytree(tiny_bundle("openvino"), tmp_path / "bundle"))


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = _manifest(folder)
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_shipped_schema_is_the_generated_one() -> None:
    shipped = json.loads(resources.files("edgeseg").joinpath(SCHEMA_FILE).read_text())
    regenerate = f"regenerate it: python -m edgeseg.manifest > edgeseg/{SCHEMA_FILE}"
    assert shipped == json.loads(json.dumps(json_schema())), regenerate


def test_written_manifests_validate_against_the_shipped_schema(tiny_bundle: MakeBundle) -> None:
    schema = json.loads(resources.files("edgeseg").joinpath(SCHEMA_FILE).read_text())
    for target, dynamic in (("onnx", False), ("onnx", True), ("openvino", False)):
        jsonschema.validate(_manifest(tiny_bundle(target, dynamic=dynamic)), schema)


def test_round_trip_is_lossless(tiny_bundle: MakeBundle) -> None:
    manifest = read_bundle(tiny_bundle("openvino")).manifest
    assert parse_manifest(json.loads(manifest.to_json())) == manifest
    assert manifest.backend_config("openvino") == {"INFERENCE_PRECISION_HINT": "f32"}
    assert manifest.backend_config("onnxruntime") == {}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted ``path`` (list indices as numbers) to ``value``."""

    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return change


def _rename_artifact(name: str) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        manifest["artifacts"]["onnx"] = name
        manifest["files"][name] = manifest["files"].pop("model.onnx")

    return change


BAD_MANIFESTS = [
    ("absolute artifact path", _rename_artifact("/etc/passwd"), "artifacts.onnx"),
    ("parent artifact path", _rename_artifact("../model.onnx"), "artifacts.onnx"),
    ("artifact in a sub-folder", _rename_artifact("sub/model.onnx"), "artifacts.onnx"),
    ("hidden artifact", _rename_artifact(".model.onnx"), "artifacts.onnx"),
    ("unlisted artifact", _set("files", {}), "not listed under files"),
    ("unlisted IR weights", lambda m: m["files"].pop("model.bin"), "model.bin is not listed"),
    ("files entry outside", lambda m: m["files"].update({"/etc/passwd": m["files"]["model.onnx"]}), "/etc/passwd"),
    ("bad sha256", lambda m: m["files"]["model.onnx"].update(sha256="xyz"), "files.model.onnx.sha256"),
    ("OpenVINO CACHE_DIR", _set("runtime_config.openvino.CACHE_DIR", "/tmp/x"), "CACHE_DIR"),
    ("unknown backend config", _set("runtime_config.tflite", {}), "runtime_config.tflite"),
    ("precision hint not the bundle's", _set("runtime_config.openvino.INFERENCE_PRECISION_HINT", "bf16"), "'f32'"),
    ("zero std", _set("input.std.0", 0), "input.std.0"),
    ("tiny std", _set("input.std.1", 1e-30), "input.std.1"),
    ("huge mean", _set("input.mean.2", 1e308), "input.mean.2"),
    ("huge example size", _set("input.example_size", [100000, 100000]), "input.example_size"),
    ("huge static shape", _set("input.shape", [1, 3, 100000, 100000]), "input.shape"),
    ("unknown input field", _set("input.scale", 2), "input.scale"),
    ("unknown top-level field", _set("plugins", ["x.so"]), "plugins"),
    ("negative stride", _set("outputs.0.stride", -8), "outputs.0.stride"),
    ("zero classes", _set("model.num_classes", 0), "model.num_classes"),
    ("classes disagree with output", _set("model.num_classes", 7), "num_classes"),
    ("precision of another target", lambda m: m.update(target="onnxruntime", precision="bf16"), "does not take"),
    ("unknown target", _set("target", "tflite"), "target"),
    ("unknown format version", _set("format_version", 3), "format_version 3 is not supported"),
    ("not our format", _set("format", "other"), "format is 'other'"),
    ("missing input", lambda m: m.pop("input"), "input: Field required"),
    ("mean as text", _set("input.mean", "123"), "input.mean"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
def test_malformed_manifests_are_refused_naming_the_field(
    bundle_copy: Path, case: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    _edit(bundle_copy, change)
    for verify in (True, False):
        with pytest.raises(BundleError) as error:
            edgeseg.runtime.load(bundle_copy, verify=verify)
        assert message in str(error.value), f"{case}: {error.value}"
        assert "manifest.json" in str(error.value)


@pytest.mark.parametrize("text", ['{"format": NaN}', "[1, 2]", "{", '{"format": "edgeseg-bundle", "x": Infinity}'])
def test_non_json_manifests_are_refused(bundle_copy: Path, text: str) -> None:
    (bundle_copy / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=r"manifest\.json"):
        read_bundle(bundle_copy)


def test_a_linked_artifact_is_refused_even_unverified(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle_copy / "model.onnx", outside)
    (bundle_copy / "model.onnx").unlink()
    (bundle_copy / "model.onnx").symlink_to(outside)
    for verify in (True, False):
        with pytest.raises(BundleError, match=r"model\.onnx is not a regular file"):
            edgeseg.runtime.load(bundle_copy, "onnxruntime", verify=verify)


def test_only_the_loaded_files_are_hashed_and_each_is_checked(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").write_bytes(b"not the graph")  # not loaded by the openvino backend
    assert edgeseg.runtime.load(bundle_copy, "openvino").backend == "openvino"
    with pytest.raises(BundleError, match=r"model\.onnx does not match its size and sha256"):
        edgeseg.runtime.load(bundle_copy, "onnxruntime")
    with pytest.raises(BundleError, match=r"model\.onnx does not match"):
        read_bundle(bundle_copy).verify()


def test_same_size_tampering_is_caught(bundle_copy: Path) -> None:
    weights = bundle_copy / "model.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.bin does not match its size and sha256"):
        edgeseg.runtime.load(bundle_copy)


def test_an_oversized_manifest_is_refused_before_parsing(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_bytes(b" " * (16 << 20) + b"{}")
    with pytest.raises(BundleError, match="byte limit"):
        read_bundle(bundle_copy)


def test_parse_manifest_errors_are_manifest_errors(tiny_bundle: MakeBundle) -> None:
    data = _manifest(tiny_bundle("onnx"))
    assert isinstance(parse_manifest(data), Manifest)
    data["input"]["std"] = [-1, -1, -1]
    with pytest.raises(ManifestError, match=r"input\.std\.0.*input\.std\.1.*input\.std\.2"):
        parse_manifest(data)


def test_version_1_manifests_are_upgraded(bundle_copy: Path) -> None:
    """A bundle written by format version 1 (one ``output``) keeps loading and predicting."""

    def to_version_1(manifest: dict[str, Any]) -> None:
        manifest["format_version"] = 1
        manifest["output"] = manifest.pop("outputs")[0]
        manifest.pop("frame", None)

    _edit(bundle_copy, to_version_1)
    manifest = read_bundle(bundle_copy).manifest
    assert manifest.format_version == 2 and [o.kind for o in manifest.outputs] == ["logits"]
    assert manifest.frame is None
    with edgeseg.runtime.load(bundle_copy) as seg:
        assert seg.predict(np.zeros((30, 40, 3), np.uint8)).shape == (30, 40)
    _edit(bundle_copy, lambda m: m.pop("output"))
    with pytest.raises(BundleError, match="outputs"):
        read_bundle(bundle_copy)
