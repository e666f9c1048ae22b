"""Fuzzing bundles: random manifests, truncated and bit-flipped artifacts, on real ONNX Runtime and OpenVINO.

Invariant: loading either fails with one clear edgeseg error (:class:`~edgeseg.bundle.BundleError`, a ValueError)
or gives a Segmenter whose logits are exactly the model's; nothing is written outside the bundle's folder.
Derandomized and bounded (well under a minute).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeseg.runtime
from edgeseg.bundle import BundleError

FUZZ = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150
)
MakeBundle = Callable[..., Path]

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "..", "../model.onnx", "/etc/passwd", "model.onnx", "model.bin", "f32", "bf16", "x" * 300]),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a JSON document (dict keys and list indices), parents before children."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate(manifest: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> dict[str, Any]:
    """A copy of ``manifest`` with the node at ``path`` replaced, deleted, or given an extra key."""
    mutated = copy.deepcopy(manifest)
    if not path:
        return mutated if action != "replace" else value
    parent = mutated
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "extra" and isinstance(parent[last], dict):
        parent[last]["injected"] = value
    else:
        parent[last] = value
    return mutated


@contextmanager
def bundle_copy(source: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(shutil.copytree(source, Path(folder) / "bundle"))


def _listing(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_loads_or_refuses(folder: Path, backend: str, verify: bool, reference: Callable) -> str:
    """Load; a refusal must be a BundleError/ValueError naming the cause, a load must give the model's logits."""
    before = _listing(folder.parent)
    try:
        with edgeseg.runtime.load(folder, backend, threads=1, verify=verify) as segmenter:
            x = np.random.default_rng(0).standard_normal(segmenter.runner.input_shape, dtype=np.float32)
            np.testing.assert_allclose(segmenter.logits(x), reference(x), rtol=0, atol=1e-4)
            outcome = "loaded"
    except ValueError as error:  # BundleError, ImageError and the runtime's own argument errors
        assert str(error).strip(), "an edgeseg error must say what was wrong"
        outcome = type(error).__name__
    assert _listing(folder.parent) == before, "loading must write nothing beside the bundle"
    return outcome


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_random_manifests_load_correctly_or_are_refused(tiny_bundle: MakeBundle, tiny_conv, target: str) -> None:
    source = tiny_bundle(target)
    original = json.loads((source / "manifest.json").read_text())
    paths = list(_paths(original))
    outcomes: list[str] = []

    @FUZZ
    @given(
        path=st.sampled_from(paths),
        action=st.sampled_from(["replace", "delete", "extra"]),
        value=JSON_VALUES,
        backend=st.sampled_from(["onnxruntime", "openvino"]),
    )
    def check(path: tuple[Any, ...], action: str, value: Any, backend: str) -> None:
        with bundle_copy(source) as folder:
            mutated = _mutate(original, path, action, value)
            (folder / "manifest.json").write_text(json.dumps(mutated))
            outcomes.append(_check_loads_or_refuses(folder, backend, True, tiny_conv))

    check()
    assert "loaded" in outcomes and "BundleError" in outcomes  # both branches were exercised


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_artifacts_are_refused(tiny_bundle: MakeBundle, tiny_conv, damage: str) -> None:
    source = tiny_bundle("openvino")

    @settings(FUZZ, max_examples=25)
    @given(
        name=st.sampled_from(["model.onnx", "model.xml", "model.bin"]),
        fraction=st.floats(min_value=0.0, max_value=0.999),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
    )
    def check(name: str, fraction: float, seed: int) -> None:
        with bundle_copy(source) as folder:
            path = folder / name
            data = bytearray(path.read_bytes())
            at = int(fraction * len(data))
            if damage == "truncate":
                data = data[:at]
            elif damage == "flip":
                data[at] ^= 1 << (seed % 8)
            elif damage == "empty":
                data = bytearray()
            else:
                data = bytearray(np.random.default_rng(seed).integers(0, 256, len(data), dtype=np.uint8).tobytes())
            path.write_bytes(bytes(data))
            backend = "onnxruntime" if name == "model.onnx" else "openvino"
            # Verified loads refuse every change. Unverified ones must refuse what breaks the file's structure;
            # same-length changes of raw weights (a flipped bit, garbage model.bin) load and run: that is what
            # verify=False gives up.
            with pytest.raises(BundleError, match=f"{name} does not match its size and sha256"):
                edgeseg.runtime.load(folder, backend, verify=True)
            if damage in ("truncate", "empty") or (damage == "garbage" and name != "model.bin"):
                outcome = _check_loads_or_refuses(folder, backend, False, tiny_conv)
                assert outcome == "BundleError" or (damage == "truncate" and at == len(data)), outcome

    check()
