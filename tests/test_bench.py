"""The benchmark harness: statistics, timing, machine description and real end-to-end runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeseg
from edgeseg.bench import BOUNDARIES, BenchmarkError, _model_bytes, benchmark, format_table
from edgeseg.bench.machine import machine_info
from edgeseg.bench.stats import percentile, summarize
from edgeseg.bench.timing import time_callable
from edgeseg.bundle import read_bundle
from edgeseg.runtimes.base import usable_cores

H, W = 64, 96  # the tiny bundle's input size (tests/conftest.py)


# ---- stats -------------------------------------------------------------------------------------


def test_summarize_hand_computed() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004])  # 1, 2, 3, 4 ms
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(4.0)
    assert s["p50"] == pytest.approx(2.5)  # rank 1.5
    assert s["p90"] == pytest.approx(3.7)  # rank 2.7
    assert s["p99"] == pytest.approx(3.97)  # rank 2.97
    assert s["cv"] == pytest.approx(math.sqrt(1.25) / 2.5)
    assert s["fps"] == pytest.approx(400.0)


def test_percentiles_known_list_and_order_independence() -> None:
    ms = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(ms, 0) == 15.0 and percentile(ms, 100) == 50.0
    assert percentile(ms, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert percentile(ms, 75) == pytest.approx(40.0)  # rank 3.0
    shuffled = summarize([0.040, 0.015, 0.050, 0.020, 0.035])
    assert shuffled["p50"] == pytest.approx(35.0) and shuffled["min"] == pytest.approx(15.0)
    assert shuffled["p90"] == pytest.approx(np.percentile(ms, 90))


def test_summarize_single_value_and_errors() -> None:
    s = summarize([0.01])
    assert s["std"] == 0.0 and s["p99"] == pytest.approx(10.0) and s["fps"] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# ---- timing ------------------------------------------------------------------------------------


def test_time_callable_counts_calls() -> None:
    calls = []
    durations = time_callable(lambda: calls.append(1), warmup=3, iters=7)
    assert len(calls) == 10
    assert len(durations) == 7 and all(d >= 0 for d in durations)


def test_time_callable_measures_the_call() -> None:
    import time

    durations = time_callable(lambda: time.sleep(0.01), warmup=0, iters=2)
    assert all(0.009 <= d < 0.5 for d in durations)
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=0, iters=0)
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=-1, iters=1)


# ---- machine -----------------------------------------------------------------------------------


def test_machine_info_fields() -> None:
    info = machine_info(2)
    assert info["threads"] == 2 and machine_info(None)["threads"] is None
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["logical_cores"] >= 1 and 1 <= info["usable_cores"] <= info["logical_cores"]
    assert isinstance(info["isa"], list)
    assert info["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert info["packages"]["numpy"] == np.__version__
    assert info["packages"]["onnxruntime"] and info["packages"]["openvino"]
    if sys.platform.startswith("linux"):
        assert info["mem_total_mb"] > 0 and info["os"] == "Linux" and info["kernel"]


def test_model_bytes_counts_ir_xml_and_bin(tiny_bundle) -> None:
    bundle_dir = tiny_bundle("openvino")
    bundle = read_bundle(bundle_dir)
    ir_bytes = sum((bundle_dir / name).stat().st_size for name in ("model.xml", "model.bin"))
    assert _model_bytes(bundle, "openvino") == ir_bytes
    assert _model_bytes(bundle, "onnxruntime") == (bundle_dir / "model.onnx").stat().st_size


# ---- end to end: real runtime, fresh worker processes ------------------------------------------

CASES = [(b, bd) for b in ("onnxruntime", "openvino") for bd in ("model", "end-to-end")] + [("openvino", "stream")]


@pytest.fixture(scope="module")
def records(tiny_bundle) -> dict[tuple[str, str], dict]:
    bundle_dir = tiny_bundle("onnx")
    return {
        (backend, boundary): benchmark(
            bundle_dir,
            backend=backend,
            threads=1 if backend == "onnxruntime" else None,
            warmup=2,
            iters=5,
            boundary=boundary,
            image_size=(120, 160),
        )
        for backend, boundary in CASES
    }


@pytest.mark.parametrize(("backend", "boundary"), CASES)
def test_benchmark_record(records: dict, backend: str, boundary: str) -> None:
    r = records[(backend, boundary)]
    expected = {
        "bundle", "model", "input_size", "target", "precision", "artifact", "backend", "threads", "boundary",
        "image_size", "warmup", "iters", "latency_ms", "fps", "load_s", "first_inference_ms",
        "model_bytes", "peak_rss_mb", "rss_mb", "torch_imported", "macs", "params", "machine",
        "edgeseg_version",
    }  # fmt: skip
    assert expected <= r.keys()
    assert r["model"] == "tiny-conv" and r["input_size"] == [H, W]
    assert r["target"] == "onnx" and r["precision"] == "fp32" and r["artifact"] == "model.onnx"
    assert r["backend"] == backend and r["boundary"] == boundary
    assert r["threads"] == (1 if backend == "onnxruntime" else None)
    assert r["image_size"] == (None if boundary == "model" else [120, 160])
    # the stream's default: two inferences at once on a CPU backend with 2 or more threads (here: all cores)
    assert r["inferences"] == (min(2, usable_cores()) if boundary == "stream" else None)
    assert r["warmup"] == 2 and r["iters"] == 5
    lat = r["latency_ms"]
    assert lat["n"] == 5
    for key in ("mean", "min", "p50", "p90", "p99", "max"):
        assert lat[key] > 0
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["std"] >= 0 and lat["cv"] >= 0
    assert r["fps"] == pytest.approx(1000.0 / lat["mean"])
    assert r["load_s"] > 0 and r["first_inference_ms"] > 0
    assert r["model_bytes"] == (Path(r["bundle"]) / "model.onnx").stat().st_size
    assert r["torch_imported"] is False
    assert r["peak_rss_mb"] >= r["rss_mb"] > 0
    assert r["macs"] == 92160
    assert r["machine"]["threads"] == r["threads"] and r["machine"]["logical_cores"] >= 1
    assert r["edgeseg_version"] == edgeseg.__version__


def test_format_table(records: dict) -> None:
    rows = list(records.values())
    text = format_table(rows)
    lines = text.strip().splitlines()
    assert lines[0].startswith("Timing boundary")
    for meaning in BOUNDARIES.values():
        assert meaning in lines[0]
    assert rows[0]["machine"]["cpu_model"] in lines[0]
    header = "| model | input | backend | precision | artifact | threads | boundary | mean ms | std ms | p50 ms |"
    assert lines[2].startswith(header) and "| FPS | load s | first ms | peak RSS MB | size MB |" in lines[2]
    body = [line for line in lines[4:] if line.startswith("| tiny-conv |")]
    assert len(body) == len(rows) == len(lines) - 4
    assert all(line.count("|") == lines[2].count("|") for line in body)
    assert "end-to-end 120x160" in text and "stream 120x160" in text and "| default |" in text and "| 1 |" in text


def test_format_table_one_boundary_only(records: dict) -> None:
    head = format_table([records[("onnxruntime", "model")]]).splitlines()[0]
    assert BOUNDARIES["model"] in head and BOUNDARIES["end-to-end"] not in head
    with pytest.raises(ValueError):
        format_table([])


def test_benchmark_worker_failure_carries_stderr(tiny_bundle) -> None:
    bundle_dir = tiny_bundle("onnx")
    with pytest.raises(BenchmarkError, match=r"latency pass failed \(exit code [1-9]\d*\): \w+Error") as err:
        benchmark(bundle_dir, backend="no-such-backend", warmup=0, iters=1)
    assert "--- worker stderr ---" in str(err.value) and "Traceback" in str(err.value)


def test_benchmark_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        benchmark(tmp_path, boundary="wall-clock")
    with pytest.raises(ValueError):
        benchmark(tmp_path, iters=0)
    with pytest.raises(ValueError, match="applies to the stream boundary only"):
        benchmark(tmp_path, boundary="model", inferences=2)


@pytest.mark.parametrize("boundary", ["end-to-end", "stream"])
def test_frames_come_from_a_video_file_and_loop(tiny_bundle, tmp_path: Path, boundary: str) -> None:
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.mkv"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (80, 48))
    rng = np.random.default_rng(0)
    for _ in range(6):  # fewer frames than warm-up + timed ones: the worker starts the video again
        writer.write(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    writer.release()
    inferences = 3 if boundary == "stream" else None
    r = benchmark(tiny_bundle(), boundary=boundary, warmup=2, iters=9, video=video, inferences=inferences)
    assert r["image_size"] == [48, 80] and r["video"] == str(video.absolute()) and r["inferences"] == inferences
    assert r["latency_ms"]["n"] == 9 and r["latency_ms"]["min"] > 0
    with pytest.raises(FileNotFoundError, match="is not a file"):
        benchmark(tiny_bundle(), boundary=boundary, video=tmp_path / "missing.mp4")
