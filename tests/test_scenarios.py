"""MLPerf LoadGen scenarios and sustained runs on the tiny bundle (real sessions, real LoadGen), energy counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.bench import benchmark
from edgeseg.bench.energy import Ina3221Meter, RaplMeter, open_energy_meter
from edgeseg.bench.scenarios import ScenarioSettings
from edgeseg.bench.sustained import plot_sustained, summarize_series, timed_events

pytest.importorskip("mlperf_loadgen")

QUICK = {"warmup": 2, "threads": 1}


@pytest.fixture(scope="module")
def quick_keys(tiny_bundle) -> set[str]:
    """The keys of a quick-protocol record, which every scenario and sustained record also has."""
    return set(benchmark(tiny_bundle("onnx"), backend="onnxruntime", iters=3, **QUICK))


def _scenario(bundle: Path, backend: str, settings: ScenarioSettings) -> dict:
    return benchmark(bundle, backend=backend, scenario=settings, **QUICK)


def test_single_stream_reports_percentiles_and_validity(tiny_bundle, quick_keys) -> None:
    settings = ScenarioSettings("single-stream", min_duration_s=0.5, min_queries=64)
    record = _scenario(tiny_bundle("onnx"), "onnxruntime", settings)
    assert set(record) == quick_keys | {"scenario"}
    block = record["scenario"]
    assert block["loadgen_scenario"] == "SingleStream" and block["validity"] == "VALID", block["summary"]
    assert block["invalid_reasons"] == [] and block["query_count"] >= 64
    assert 0 < block["latency_ms"]["min"] <= block["p90_ms"] <= block["p99_ms"] <= block["latency_ms"]["max"]
    assert block["min_duration_ms"] == 500 and block["min_query_count"] == 64
    assert not block["meets_mlperf_run_length"] and "not a compliant MLPerf result" in block["compliance"]
    assert "600 s" in block["compliance"]
    # the SUT timed every sample LoadGen issued; the common latency summary is over them
    assert record["iters"] == record["latency_ms"]["n"] == block["query_count"]
    assert record["peak_rss_mb"] > 0 and not record["torch_imported"]


@pytest.mark.parametrize(("target", "backend"), [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_offline_uses_the_throughput_mode(tiny_bundle, quick_keys, target: str, backend: str) -> None:
    settings = ScenarioSettings("offline", min_duration_s=0.5, min_queries=200)
    record = _scenario(tiny_bundle(target), backend, settings)
    assert set(record) == quick_keys | {"scenario"}
    block = record["scenario"]
    assert block["loadgen_scenario"] == "Offline" and block["validity"] in ("VALID", "INVALID")
    assert bool(block["invalid_reasons"]) == (block["validity"] == "INVALID")
    assert block["samples_per_second"] > 0 and record["fps"] == pytest.approx(block["samples_per_second"])
    assert block["query_count"] == 1 and block["samples_per_query"] >= 200
    assert record["latency_ms"]["n"] == block["samples_per_query"]
    lat = block["latency_ms"]  # per sample, all issued at once: queueing included
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    executor = block["executor"]
    assert executor["mode"] == "throughput" and executor["streams"] >= 1
    if backend == "openvino":
        assert executor["PERFORMANCE_HINT"] == "THROUGHPUT" and executor["infer_requests"] >= 1
    else:
        assert executor["sessions"] == 1  # threads=1: one session of one thread


def test_server_reports_scheduled_qps_and_an_unmet_latency_bound(tiny_bundle) -> None:
    # a 1 µs bound no sample can meet: LoadGen must call the run INVALID and say why
    settings = ScenarioSettings("server", min_duration_s=0.5, min_queries=50, server_qps=200, server_latency_ms=0.001)
    block = _scenario(tiny_bundle("onnx"), "onnxruntime", settings)["scenario"]
    assert block["loadgen_scenario"] == "Server"
    assert block["target_qps"] == 200 and block["target_latency_ms"] == pytest.approx(0.001)
    assert block["scheduled_qps"] == pytest.approx(200, rel=0.5) and block["completed_qps"] > 0
    assert block["validity"] == "INVALID" and block["overlatency_query_count"] > 0
    assert any("latency constraint not met" in reason for reason in block["invalid_reasons"])
    assert "Scheduled samples per second" in block["summary"]


def test_scenario_arguments_are_checked(tiny_bundle) -> None:
    with pytest.raises(ValueError, match="scenario must be one of"):
        ScenarioSettings("multi-stream")
    with pytest.raises(ValueError, match="min_duration_s > 0"):
        ScenarioSettings("offline", min_duration_s=0)
    with pytest.raises(ValueError, match="model boundary"):
        benchmark(tiny_bundle("onnx"), boundary="end-to-end", scenario=ScenarioSettings("offline"))
    with pytest.raises(ValueError, match="not both"):
        benchmark(tiny_bundle("onnx"), scenario=ScenarioSettings("offline"), duration=1.0)


def test_sustained_run_records_a_time_series(tiny_bundle, quick_keys, tmp_path) -> None:
    record = benchmark(tiny_bundle("onnx"), backend="onnxruntime", duration=1.0, window=0.25, **QUICK)
    assert set(record) == quick_keys | {"sustained"}
    block = record["sustained"]
    frames = block["frames"]
    assert frames > 10 and len(block["t_s"]) == len(block["latency_ms"]) == frames == record["latency_ms"]["n"]
    assert block["t_s"] == sorted(block["t_s"]) and 1.0 <= block["duration_s"] < 2.0
    assert [w["start_s"] for w in block["windows"]] == [0.0, 0.25, 0.5, 0.75]
    assert sum(w["frames"] for w in block["windows"]) == frames
    first, last = block["windows"][0]["median_ms"], block["windows"][-1]["median_ms"]
    assert block["drift_ms"] == pytest.approx(last - first)
    assert block["drift_pct"] == pytest.approx((last - first) / first * 100)
    meter, why = open_energy_meter()
    if meter is None:  # this machine (a VM/container) exposes no counter: the record says so and why
        assert block["energy"]["joules_per_frame"] == "n/a" and block["energy"]["why"] == why
        assert "no readable powercap energy counter" in why
    else:
        meter.close()
        assert block["energy"]["joules_per_frame"] > 0
    pytest.importorskip("matplotlib")
    png = plot_sustained(record, tmp_path / "sustained.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write(path: Path, value: int | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def test_rapl_energy_per_frame_across_a_wrap_around(tmp_path) -> None:
    """Two packages; package 0's counter wraps at 1 J twice while 0.3 J per frame is used."""
    zones = tmp_path / "class" / "powercap"
    for zone, start in (("intel-rapl:0", 800_000), ("intel-rapl:1", 0)):
        _write(zones / zone / "name", f"package-{zone[-1]}")
        _write(zones / zone / "max_energy_range_uj", 1_000_000)
        _write(zones / zone / "energy_uj", start)
    _write(zones / "intel-rapl:0:0" / "energy_uj", 123)  # a sub-zone of package 0: not added again
    _write(zones / "intel-rapl:0:0" / "max_energy_range_uj", 1_000_000)
    meter, source = open_energy_meter(tmp_path)
    assert isinstance(meter, RaplMeter) and "intel-rapl:0: package-0" in source and "0:0" not in source

    counters = {"intel-rapl:0": 800_000, "intel-rapl:1": 0}
    per_frame = {"intel-rapl:0": 250_000, "intel-rapl:1": 50_000}  # µJ: 0.3 J per frame in all

    def frames():
        for _ in range(8):
            for zone, used in per_frame.items():
                counters[zone] = (counters[zone] + used) % 1_000_000
                _write(zones / zone / "energy_uj", counters[zone])
            yield 0.001

    series = timed_events(frames(), duration_s=60.0, window_s=1e-9, meter=meter)  # a reading after every frame
    block = summarize_series(series, 60.0, 1e-9, source, "")
    assert block["frames"] == 8 and block["energy"]["frames"] == 8
    assert block["energy"]["joules"] == pytest.approx(2.4)  # package 0 wrapped twice
    assert block["energy"]["joules_per_frame"] == pytest.approx(0.3)
    assert block["energy"]["source"] == source


def test_ina3221_board_input_rail_is_integrated(tmp_path) -> None:
    import time

    hwmon = tmp_path / "bus" / "i2c" / "drivers" / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    for channel, label, mv, ma in ((1, "VDD_IN", 5000, 1000), (2, "VDD_CPU_GPU_CV", 5000, 400)):
        _write(hwmon / f"in{channel}_label", label)
        _write(hwmon / f"in{channel}_input", mv)
        _write(hwmon / f"curr{channel}_input", ma)
    before = time.perf_counter()
    meter, source = open_energy_meter(tmp_path)
    started = time.perf_counter()
    try:
        assert isinstance(meter, Ina3221Meter) and source == "INA3221 VDD_IN"  # the board input, not the sum
        time.sleep(0.2)
        read_from = time.perf_counter()
        joules = meter.joules()
        read_to = time.perf_counter()
    finally:
        meter.close()
    assert 5.0 * (read_from - started) <= joules <= 5.0 * (read_to - before)  # 5 V × 1 A


def test_no_counter_says_why(tmp_path) -> None:
    meter, why = open_energy_meter(tmp_path)
    assert meter is None and "no readable powercap energy counter" in why and str(tmp_path) in why


def test_cli_runs_a_scenario_and_checks_its_options(tiny_bundle, tmp_path, capsys) -> None:
    import json

    from edgeseg.cli import main

    out = tmp_path / "records.json"
    argv = ["bench", str(tiny_bundle("onnx")), "--backend", "onnxruntime", "--threads", "1", "--warmup", "2"]
    scenario = ["--scenario", "single-stream", "--min-duration", "0.3", "--min-queries", "64"]
    assert main([*argv, *scenario, "--json", str(out)]) == 0
    (record,) = json.loads(out.read_text())
    assert record["scenario"]["loadgen_scenario"] == "SingleStream" and record["scenario"]["min_query_count"] == 64
    assert "| single-stream | VALID |" in capsys.readouterr().out
    assert main([*argv, "--plot", str(tmp_path / "p.png")]) == 2
    assert "give --duration" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_throughput_executor_runs_every_sample_and_reports_failures(tiny_bundle, backend: str) -> None:
    import numpy as np

    from edgeseg.bench.throughput import open_throughput
    from edgeseg.bundle import read_bundle

    bundle = read_bundle(tiny_bundle("openvino"))
    done: list[int] = []
    executor = open_throughput(bundle, backend, 2)
    try:
        assert executor.backend == backend and executor.streams >= 1
        x = np.zeros((1, 3, 64, 96), np.float32)
        for i in range(10):
            executor.submit(x, lambda i=i: done.append(i))
        executor.wait()
        assert sorted(done) == list(range(10))
        if backend == "onnxruntime":  # a failing sample still completes, and wait() reports it
            executor.submit(np.zeros((1, 3, 8, 8), np.float32), lambda: done.append(-1))
            with pytest.raises(RuntimeError, match="session failed"):
                executor.wait()
            assert done[-1] == -1
    finally:
        executor.close()
    with pytest.raises(ValueError, match="single-stream"):
        open_throughput(bundle, "tensorrt", 1)
