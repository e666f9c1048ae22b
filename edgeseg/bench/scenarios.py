"""MLPerf Inference scenarios (SingleStream, Offline, Server) driven by MLCommons LoadGen on a loaded bundle.

LoadGen decides when to issue which sample and checks the run's validity; this module is the system under
test. Samples are preprocessed random images made before the run (the ``model`` timing boundary: normalised
input → logits). SingleStream runs each query on the Segmenter (latency hint, as the quick protocol);
Offline and Server run on the backend's throughput mode (:mod:`edgeseg.bench.throughput`).

MLPerf's run rules ask for at least 600 s and many queries per run (``MLPERF_RULES``); shorter runs, and any
run without the accuracy and audit passes, are not compliant MLPerf results, and the record says so.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.bench.loadgen_log import parse_result
from edgeseg.bench.throughput import ThroughputExecutor, open_throughput
from edgeseg.runtime import Segmenter

SCENARIOS = {"single-stream": "SingleStream", "offline": "Offline", "server": "Server"}
# MLPerf Inference run rules: minimum duration (s) and query count (Offline: samples) per performance run.
MLPERF_RULES = {
    "single-stream": {"min_duration_s": 600, "min_queries": 1024},
    "offline": {"min_duration_s": 600, "min_queries": 24576},
    "server": {"min_duration_s": 600, "min_queries": 270336},
}
PERFORMANCE_SAMPLES = 8  # distinct inputs in LoadGen's sample library
THROUGHPUT_PROBE_S = 0.5  # timed part of the throughput warm-up
# LoadGen plans a run's queries from the expected latency (SingleStream: min duration / latency queries) or QPS
# (Offline: one query of QPS × min duration samples); a run that runs out of them before its minimums is INVALID.
# A SingleStream run stops at its minimums, so a low expected latency (the fastest warm-up sample / HEADROOM)
# costs nothing; a high Offline QPS makes the run longer than the minimum, by up to HEADROOM.
HEADROOM = 2.0
SERVER_LOAD = 0.5  # default Server QPS: this fraction of the warm-up throughput
SERVER_LATENCY_FACTOR = 10.0  # default Server latency bound: this many warm-up service times
NOT_COMPLIANT = (
    "performance-only run with edgeseg's settings: not a compliant MLPerf result (that needs MLPerf's minimum "
    "duration and query count, an accuracy run and the audit tests)"
)


@dataclass(frozen=True)
class ScenarioSettings:
    """What to run: the scenario, LoadGen's minimum duration and query count, and the Server targets.

    ``server_qps``/``server_latency_ms`` None: chosen from the warm-up (``SERVER_LOAD`` × its throughput,
    ``SERVER_LATENCY_FACTOR`` × its service time).
    """

    scenario: str
    min_duration_s: float = 10.0
    min_queries: int = 100
    server_qps: float | None = None
    server_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        if not self.min_duration_s > 0 or self.min_queries < 1:
            raise ValueError(
                f"need min_duration_s > 0 and min_queries >= 1, got {self.min_duration_s} and {self.min_queries}"
            )
        for name in ("server_qps", "server_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None (chosen from the warm-up), got {value}")


def _import_loadgen() -> Any:
    """Import LoadGen's Python bindings, or explain how to install them."""
    try:
        import mlperf_loadgen
    except ImportError as error:
        raise ImportError(
            "--scenario needs MLCommons LoadGen: pip install 'edgeseg[loadgen]' (package mlcommons-loadgen)"
        ) from error
    return mlperf_loadgen


class _Sut:
    """The system under test LoadGen calls: runs samples, reports completions, keeps per-sample seconds."""

    def __init__(self, lg: Any, inputs: list[np.ndarray], run_one: Callable[[np.ndarray], object] | None) -> None:
        self.lg = lg
        self.inputs = inputs
        self.run_one = run_one  # synchronous (SingleStream); None: use ``executor``
        self.executor: ThroughputExecutor | None = None
        self.seconds: list[float] = []  # issue → completion, per sample, as seen by the SUT
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def issue(self, samples: list[Any]) -> None:
        """LoadGen's issue callback; never raises into LoadGen (errors are kept and raised after the run)."""
        issued = time.perf_counter()
        for sample in samples:
            if self.run_one is None:
                self._submit(sample, issued)
                continue
            try:
                self.run_one(self.inputs[sample.index])
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            self._complete(sample.id, issued)
            issued = time.perf_counter()

    def _submit(self, sample: Any, issued: float) -> None:
        """Start one sample on the throughput executor."""
        assert self.executor is not None
        try:
            self.executor.submit(self.inputs[sample.index], partial(self._complete, sample.id, issued))
        except Exception as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            self._complete(sample.id, issued)

    def _complete(self, sample_id: int, issued: float) -> None:
        """Tell LoadGen one sample is done and keep its latency."""
        elapsed = time.perf_counter() - issued
        with self._lock:
            self.seconds.append(elapsed)
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(sample_id, 0, 0)])

    def flush(self) -> None:
        """LoadGen's flush callback: nothing is batched."""


def _sample_inputs(seg: Segmenter) -> list[np.ndarray]:
    """``PERFORMANCE_SAMPLES`` preprocessed random images of the model's input size."""
    rng = np.random.default_rng(0)
    h, w = seg.input_size
    return [seg.preprocess(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(PERFORMANCE_SAMPLES)]


def _warm_up_latency(seg: Segmenter, inputs: list[np.ndarray], count: int) -> float:
    """Run ``count`` (at least 3) samples one by one; the fastest one's seconds (a run can be that fast)."""
    seconds = []
    for i in range(max(count, 3)):
        start = time.perf_counter()
        seg.logits(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def _warm_up_throughput(executor: ThroughputExecutor, inputs: list[np.ndarray], count: int) -> float:
    """Run ``count`` samples untimed, then bursts of 4 per stream for at least ``THROUGHPUT_PROBE_S``; samples/s."""

    def burst(size: int) -> None:
        for i in range(size):
            executor.submit(inputs[i % len(inputs)], lambda: None)
        executor.wait()

    burst(max(count, 2 * executor.streams))
    size, done = 4 * executor.streams, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < THROUGHPUT_PROBE_S:
        burst(size)
        done += size
    return done / elapsed


def _test_settings(lg: Any, settings: ScenarioSettings, tuned: dict[str, float]) -> Any:
    """LoadGen's TestSettings for a performance run of ``settings`` with the warm-up's estimates ``tuned``."""
    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, SCENARIOS[settings.scenario])
    test.mode = lg.TestMode.PerformanceOnly
    test.min_duration_ms = int(settings.min_duration_s * 1000)
    test.min_query_count = settings.min_queries
    if settings.scenario == "single-stream":
        test.single_stream_expected_latency_ns = max(1, int(tuned["expected_latency_ms"] * 1e6))
    elif settings.scenario == "offline":
        test.offline_expected_qps = tuned["expected_qps"]
    else:
        test.server_target_qps = tuned["target_qps"]
        test.server_target_latency_ns = max(1, int(tuned["target_latency_ms"] * 1e6))
    return test


def _tune(
    settings: ScenarioSettings, seg: Segmenter, executor: ThroughputExecutor | None, inputs: list, warmup: int
) -> dict[str, float]:
    """Warm up with ``warmup`` samples; derive LoadGen's expectations (and the Server targets not given) from it."""
    if executor is None:
        return {"expected_latency_ms": _warm_up_latency(seg, inputs, warmup) * 1000.0 / HEADROOM}
    qps = _warm_up_throughput(executor, inputs, warmup)
    tuned = {"warmup_qps": qps}
    if settings.scenario == "offline":
        tuned["expected_qps"] = HEADROOM * qps
    else:
        tuned["target_qps"] = settings.server_qps or SERVER_LOAD * qps
        service_ms = executor.streams / qps * 1000.0
        tuned["target_latency_ms"] = settings.server_latency_ms or SERVER_LATENCY_FACTOR * service_ms
    return tuned


def _run_loadgen(lg: Any, sut: _Sut, test: Any, count: int) -> dict[str, Any]:
    """One LoadGen run of ``sut`` over ``count`` samples; the result parsed from its logs."""
    loadgen_sut = lg.ConstructSUT(sut.issue, sut.flush)
    qsl = lg.ConstructQSL(count, count, lambda _indices: None, lambda _indices: None)
    try:
        with tempfile.TemporaryDirectory(prefix="edgeseg-loadgen-") as folder:
            output = lg.LogOutputSettings()
            output.outdir = folder
            output.copy_summary_to_stdout = False
            log = lg.LogSettings()
            log.log_output = output
            log.enable_trace = False
            lg.StartTestWithLogSettings(loadgen_sut, qsl, test, log)
            return parse_result(Path(folder))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(loadgen_sut)


def run_scenario(seg: Segmenter, settings: ScenarioSettings, warmup: int) -> tuple[dict[str, Any], list[float]]:
    """Run ``settings.scenario`` on ``seg`` under LoadGen after ``warmup`` untimed samples.

    Returns the scenario's record and the per-sample seconds the system under test saw.
    """
    lg = _import_loadgen()
    inputs = _sample_inputs(seg)
    executor = (
        None if settings.scenario == "single-stream" else open_throughput(seg.bundle, seg.backend, seg.runner.threads)
    )
    try:
        tuned = _tune(settings, seg, executor, inputs, warmup)
        sut = _Sut(lg, inputs, seg.logits if executor is None else None)
        sut.executor = executor
        result = _run_loadgen(lg, sut, _test_settings(lg, settings, tuned), len(inputs))
        if executor is not None:
            executor.wait()
    finally:
        if executor is not None:
            executor.close()
    if sut.errors:
        raise RuntimeError(f"{len(sut.errors)} samples failed during the LoadGen run; first: {sut.errors[0]}")
    rules = MLPERF_RULES[settings.scenario]
    shorter = f"this run is shorter than the rules' {rules['min_duration_s']} s / {rules['min_queries']} queries"
    long_enough = settings.min_duration_s >= rules["min_duration_s"] and settings.min_queries >= rules["min_queries"]
    record = {
        "name": settings.scenario,
        "settings": {**asdict(settings), "warmup": warmup},
        "tuned": tuned,
        "executor": (
            {"mode": "Segmenter, latency hint", "streams": 1}
            if executor is None
            else {"mode": "throughput", "streams": executor.streams, **executor.settings}
        ),
        "performance_samples": len(inputs),
        "mlperf_rules": rules,
        "meets_mlperf_run_length": long_enough,
        "compliance": NOT_COMPLIANT + ("" if long_enough else f"; {shorter}"),
        "sut_latency": "seconds from LoadGen issuing a sample to its completion, timed in the SUT",
        **result,
    }
    return record, sut.seconds
