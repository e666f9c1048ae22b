"""The `edgeseg` command line, run as a user would, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def edgeseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tiny-ov"
    done = edgeseg(
        "export", "--model", "afformer-tiny", "--input-size", "128x160", "--target", "openvino", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "parity vs PyTorch" in done.stdout and "openvino" in done.stdout
    return out


def test_models_lists_params_and_macs():
    done = edgeseg("models")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("afformer-tiny "))
    assert "2,127,306" in line and "3.09" in line


def test_export_writes_a_bundle(cli_bundle):
    manifest = json.loads((cli_bundle / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, 128, 160] and manifest["parity"]["passed"]


@pytest.mark.parametrize("color", [False, True])
def test_predict_writes_a_mask_at_the_image_size(cli_bundle, tmp_path, color):
    image = tmp_path / "in.jpg"
    rgb = np.random.default_rng(0).integers(0, 256, (75, 203, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(image)
    mask = tmp_path / "mask.png"
    done = edgeseg("predict", str(cli_bundle), str(image), "--out", str(mask), *(["--color"] if color else []))
    assert done.returncode == 0, done.stderr
    with Image.open(mask) as written:
        assert written.size == (203, 75)
        assert written.mode == ("P" if color else "L")
        assert np.asarray(written).max() < 150


def test_bench_prints_a_table_and_writes_json(cli_bundle, tmp_path):
    report = tmp_path / "bench.json"
    done = edgeseg("bench", str(cli_bundle), "--warmup", "1", "--iters", "3", "--threads", "1", "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "afformer-tiny" in done.stdout and "p99" in done.stdout
    (record,) = json.loads(report.read_text())
    assert record["backend"] == "openvino" and record["threads"] == 1 and not record["torch_imported"]
    assert record["latency_ms"]["p50"] > 0 and record["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--model", "nope", "--out", "x"], "unknown model 'nope'"),
        (["export", "--model", "afformer-tiny", "--input-size", "100x100", "--out", "x"], "multiples of 32"),
        (["predict", "missing-bundle", "img.png", "--out", "m.png"], "not an edgeseg bundle"),
    ],
)
def test_errors_are_one_clear_line(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_predict_reports_a_missing_image(cli_bundle, tmp_path):
    done = edgeseg("predict", str(cli_bundle), str(tmp_path / "none.png"), "--out", str(tmp_path / "m.png"))
    assert done.returncode == 2 and "does not exist" in done.stderr
