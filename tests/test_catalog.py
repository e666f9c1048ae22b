"""The model catalog behind ``edgeseg models``: equal to the registry, and read without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeseg.catalog import build_catalog, read_catalog
from edgeseg.cli import missing_module_message


@pytest.mark.slow
def test_shipped_catalog_is_the_registry() -> None:
    regenerate = "edgeseg/catalog.json is stale: python -m edgeseg.catalog > edgeseg/catalog.json"
    assert read_catalog() == build_catalog()["models"], regenerate


def test_models_command_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from edgeseg.cli import main\n"
        "assert main(['models']) == 0\n"
        "assert 'torch' not in sys.modules, 'edgeseg models imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert names == [entry["name"] for entry in read_catalog()] and "segformer-b0" in names


def test_models_with_another_head_size_counts_that_head() -> None:
    command = [sys.executable, "-m", "edgeseg", "models", "segformer-b0", "mbv2-ca-seg", "--num-classes", "19"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["segformer-b0", "mbv2-ca-seg"]
    line = next(line for line in done.stdout.splitlines() if line.startswith("segformer-b0 "))
    # SegFormer-B0's 256→classes 1×1 classifier: 150 classes (3,752,694 params) less 131 × (256 + 1)
    assert f"{3_752_694 - 131 * 257:,}" in line


@pytest.mark.parametrize(
    ("module", "wanted"),
    [
        ("torch", "pip install 'edgeseg[export]' (where plain pip would pull a CUDA torch, first: pip install torch"),
        ("openvino.runtime", "pip install 'edgeseg[openvino]'"),
        ("cv2", "pip install 'edgeseg[video]'"),
    ],
)
def test_a_missing_module_names_the_extra_that_brings_it(module: str, wanted: str) -> None:
    assert wanted in missing_module_message(ModuleNotFoundError(f"No module named {module!r}", name=module))


def test_models_lists_only_the_names_given_and_refuses_unknown_ones() -> None:
    done = subprocess.run([sys.executable, "-m", "edgeseg", "models", "afformer-tiny"], capture_output=True, text=True)
    assert done.returncode == 0 and [line.split()[0] for line in done.stdout.splitlines()] == ["model", "afformer-tiny"]
    done = subprocess.run([sys.executable, "-m", "edgeseg", "models", "segformer-b9"], capture_output=True, text=True)
    assert done.returncode == 2 and "no model named segformer-b9" in done.stderr
