"""Read MLPerf LoadGen's result out of its logs: validity and why, percentiles, throughput, server QPS.

LoadGen writes ``mlperf_log_detail.txt`` (one ``:::MLLOG {json}`` entry per line, the structured record) and
``mlperf_log_summary.txt`` (the human-readable report). The numbers come from the detail log; the summary text
is kept beside them for the reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
MLLOG_PREFIX = ":::MLLOG "
NS_PER_MS = 1e6
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
# Checks LoadGen makes for validity, by the detail-log key that holds their outcome.
VALIDITY_CHECKS = {
    "result_min_duration_met": "min duration not met",
    "result_min_queries_met": "min query count not met",
    "early_stopping_met": "early stopping criterion not met",
    "result_perf_constraints_met": "latency constraint not met (too many queries over the target latency)",
}


class LoadGenLogError(RuntimeError):
    """LoadGen's logs are missing or hold no result."""


def read_detail(folder: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """The detail log of ``folder`` as (last value by key, error messages, warning messages)."""
    path = folder / DETAIL_LOG
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as error:
        raise LoadGenLogError(f"LoadGen wrote no detail log {path}: {error}") from error
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in lines:
        if not line.startswith(MLLOG_PREFIX):
            continue
        try:
            entry = json.loads(line[len(MLLOG_PREFIX) :])
        except json.JSONDecodeError:
            continue  # a line LoadGen cut short; the result entries are checked below
        key, value, meta = entry.get("key"), entry.get("value"), entry.get("metadata") or {}
        values[key] = value
        if meta.get("is_error"):
            errors.append(f"{key}: {value}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {value}")
    return values, errors, warnings


def _ms(values: dict[str, Any], key: str) -> float | None:
    """A nanosecond entry of the detail log in milliseconds, or None when absent."""
    value = values.get(key)
    return None if value is None else float(value) / NS_PER_MS


def parse_result(folder: Path) -> dict[str, Any]:
    """The result of the LoadGen run logged in ``folder``: scenario, validity and reasons, latency, throughput.

    ``latency_ms`` holds LoadGen's own latency statistics, per sample from its query's issue to its completion
    (Offline issues every sample in one query, so there they include the time spent waiting in the queue).
    Scenario fields: SingleStream ``p90_ms``, ``p99_ms`` and ``qps``; Offline ``samples_per_second``; Server
    ``scheduled_qps``, ``completed_qps``, ``target_qps``, ``target_latency_ms``, ``target_latency_percentile``
    and ``overlatency_query_count``. ``early_stopping`` is LoadGen's early-stopping verdict as text.
    """
    values, errors, warnings = read_detail(folder)
    validity = values.get("result_validity")
    if validity is None:
        raise LoadGenLogError(f"{folder / DETAIL_LOG} has no result_validity entry: LoadGen did not finish the run")
    reasons = [why for key, why in VALIDITY_CHECKS.items() if values.get(key) is False]
    if values.get("result_invalid_reason"):
        reasons.append(str(values["result_invalid_reason"]))
    reasons += [f"LoadGen error: {message}" for message in errors]
    scenario = values.get("effective_scenario")
    result: dict[str, Any] = {
        "loadgen_version": values.get("loadgen_version"),
        "loadgen_scenario": scenario,
        "validity": validity,
        "invalid_reasons": reasons if validity != "VALID" else [],
        "errors": errors,
        "warnings": warnings,
        "query_count": values.get("result_query_count"),
        "samples_per_query": values.get("effective_samples_per_query"),
        "min_duration_ms": values.get("effective_min_duration_ms"),
        "min_query_count": values.get("effective_min_query_count"),
        "early_stopping": values.get("early_stopping_result"),
        "latency_ms": {
            "min": _ms(values, "result_min_latency_ns"),
            "mean": _ms(values, "result_mean_latency_ns"),
            **{f"p{p.rstrip('0').rstrip('.')}": _ms(values, f"result_{p}_percentile_latency_ns") for p in PERCENTILES},
            "max": _ms(values, "result_max_latency_ns"),
        },
    }
    if scenario == "SingleStream":
        result["p90_ms"] = result["latency_ms"]["p90"]
        result["p99_ms"] = result["latency_ms"]["p99"]
        result["qps"] = values.get("result_qps_with_loadgen_overhead")
    elif scenario == "Offline":
        result["samples_per_second"] = values.get("result_samples_per_second")
    elif scenario == "Server":
        result["scheduled_qps"] = values.get("result_scheduled_samples_per_sec")
        result["completed_qps"] = values.get("result_completed_samples_per_sec")
        result["target_qps"] = values.get("effective_target_qps")
        result["target_latency_ms"] = _ms(values, "effective_target_latency_ns")
        result["target_latency_percentile"] = values.get("effective_target_latency_percentile")
        result["overlatency_query_count"] = values.get("result_overlatency_query_count")
    summary = folder / SUMMARY_LOG
    result["summary"] = summary.read_text(errors="replace") if summary.is_file() else None
    return result
