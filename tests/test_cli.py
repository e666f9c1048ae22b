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


# ---- untrusted arguments and files: refused in one line, before any work --------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "b", "i.png", "--out", "m.png", "--threads", "100000"], "argument --threads: 100000 threads"),
        (["predict", "b", "i.png", "--out", "m.png", "--threads", "2000"], "argument --threads: 2000 threads"),
        (["bench", "b", "--threads", "1", "99999"], "argument --threads: 99999 threads"),
        (["train", "--model", "m", "--data", "d", "--out", "o", "--threads", "0"], "not a positive integer"),
        (["export", "--model", "m", "--out", "o", "--tolerance", "nan"], "argument --tolerance: nan is not a finite"),
        (["export", "--model", "m", "--out", "o", "--tolerance=-1e-4"], "argument --tolerance: -1e-4 is not a posi"),
        (["export", "--model", "m", "--out", "o", "--opset", "7"], "argument --opset: opset 7 is not between 18"),
        (["export", "--model", "m", "--out", "o", "--gate", "agreement=inf"], "argument --gate: gate 'agreement=inf'"),
        (["export", "--model", "m", "--out", "o", "--num-classes", "10000000"], "more than the 65536"),
        (["export", "--model", "m", "--out", "o", "--input-size", "0x512"], "argument --input-size: size '0x512'"),
        (["train", "--model", "m", "--data", "d", "--out", "o", "--lr", "inf"], "argument --lr: inf is not a finite"),
        (["data", "synthetic", "--out", "o", "--count", "2", "--size", "8x8", "--val-fraction", "1"], "between 0 and"),
        (["data", "synthetic", "--out", "o", "--count", "2", "--size", "8x8", "--seed", "-3"], "argument --seed"),
    ],
)
def test_bad_numbers_are_refused_at_parse_time(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_predict_into_a_folder_writes_the_image_name(tiny_bundle, tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    (tmp_path / "masks").mkdir()
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "masks"))
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "masks" / "cat.png") as written:
        assert written.size == (40, 30)


@pytest.mark.parametrize(
    ("out", "message"),
    [("mask.jpg", "the mask is written as PNG"), ("none/mask.png", "folder none does not exist"), ("in.png", "input")],
)
def test_predict_refuses_bad_output_paths(tiny_bundle, tmp_path, out, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "predict", str(tiny_bundle("onnx")), "in.png", "--out", out],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_predict_reports_a_corrupt_image_in_one_line(tiny_bundle, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    done = edgeseg("predict", str(tiny_bundle("onnx")), str(tmp_path / "broken.png"), "--out", str(tmp_path / "m.png"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / 'broken.png'}: is not a readable" in done.stderr


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"some text", "is not an ONNX model"),
        ("model.onnx", b"hello world", "is not an ONNX model"),
        ("empty.onnx", b"", "is not an ONNX model (no graph nodes"),
        ("folder.onnx", None, "is not an edgeseg bundle"),
    ],
)
def test_lint_refuses_files_that_are_not_onnx(tmp_path, name, data, message):
    path = tmp_path / name
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    done = edgeseg("lint", str(path), "--target", "openvino")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
