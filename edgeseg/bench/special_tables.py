"""Markdown tables of LoadGen scenario records and sustained-run records (see ``edgeseg.bench.benchmark``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCENARIO_COLUMNS = (
    "model", "input", "backend", "threads", "scenario", "result", "samples", "p50 ms", "p90 ms", "p99 ms",
    "samples/s", "streams", "min duration s", "notes",
)  # fmt: skip
SUSTAINED_COLUMNS = (
    "model", "input", "backend", "threads", "boundary", "duration s", "frames", "FPS", "first window p50 ms",
    "last window p50 ms", "drift %", "energy/frame mJ", "power W", "energy source",
)  # fmt: skip


def _cell(value: float | None, digits: int = 2) -> str:
    """A number with fixed decimals, or a dash."""
    return "–" if value is None else f"{value:.{digits}f}"


def _common(r: dict[str, Any]) -> list[str]:
    """Model, input size, backend and threads of a record."""
    h, w = r["input_size"]
    return [r["model"], f"{h}x{w}", r["backend"], "default" if r["threads"] is None else str(r["threads"])]


def _scenario_notes(s: dict[str, Any]) -> str:
    """Server targets and the reasons a run is invalid."""
    notes = []
    if s["loadgen_scenario"] == "Server":
        notes.append(
            f"scheduled {s['scheduled_qps']:.1f} of target {s['target_qps']:.1f} QPS, bound "
            f"{s['target_latency_ms']:.2f} ms at p{100 * s['target_latency_percentile']:g}"
        )
    notes += [reason.strip() for reason in s["invalid_reasons"]]
    return "; ".join(notes).replace("|", "/")


def _scenario_row(r: dict[str, Any]) -> list[str]:
    """Table cells of one scenario record: LoadGen's own numbers."""
    s = r["scenario"]
    lat = s["latency_ms"]
    rate = s.get("samples_per_second") or s.get("completed_qps") or s.get("qps")
    samples = (s["query_count"] or 0) * (s["samples_per_query"] or 1)
    return [
        *_common(r), s["name"], s["validity"], str(samples),
        *(_cell(lat[k]) for k in ("p50", "p90", "p99")),
        _cell(rate, 1), str(s["executor"]["streams"]), _cell(s["min_duration_ms"] / 1000, 1), _scenario_notes(s),
    ]  # fmt: skip


def format_scenario_table(records: Sequence[dict[str, Any]]) -> str:
    """LoadGen scenario records as a Markdown table with a line on what the numbers are."""
    if not records:
        raise ValueError("format_scenario_table needs at least one record")
    machine = records[0]["machine"]
    head = (
        f"MLPerf LoadGen {records[0]['scenario']['loadgen_version']}, performance-only runs, model boundary "
        f"(normalised input → logits). Latency percentiles are LoadGen's, per sample from issue to completion "
        f"(Offline issues all samples at once: queueing included); samples/s: SingleStream QPS, Offline "
        f"samples/s, Server completed QPS. Machine: "
        f"{machine['cpu_model']}, {machine['logical_cores']} logical cores ({machine['usable_cores']} usable). "
        f"Each is a {records[0]['scenario']['compliance']}."
    )
    lines = [head, "", "| " + " | ".join(SCENARIO_COLUMNS) + " |", "|" + "---|" * len(SCENARIO_COLUMNS)]
    lines += ["| " + " | ".join(_scenario_row(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"


def _sustained_row(r: dict[str, Any]) -> list[str]:
    """Table cells of one sustained record."""
    s = r["sustained"]
    energy = s["energy"]
    joules = energy["joules_per_frame"]
    watts = energy["watts"]
    return [
        *_common(r), r["boundary"], _cell(s["duration_s"], 1), str(s["frames"]), _cell(s["fps"], 1),
        _cell(s["windows"][0]["median_ms"]), _cell(s["windows"][-1]["median_ms"]), _cell(s["drift_pct"], 1),
        _cell(joules * 1000, 1) if isinstance(joules, float) else "n/a",
        _cell(watts, 1) if isinstance(watts, float) else "n/a",
        (energy["source"] or f"n/a: {energy['why']}").replace("|", "/"),
    ]  # fmt: skip


def format_sustained_table(records: Sequence[dict[str, Any]]) -> str:
    """Sustained-run records as a Markdown table: throughput, drift of the windowed median, energy."""
    if not records:
        raise ValueError("format_sustained_table needs at least one record")
    head = (
        "Sustained runs: drift = change of the median latency from the first to the last window; energy is the "
        "whole package/board's, other load included."
    )
    lines = [head, "", "| " + " | ".join(SUSTAINED_COLUMNS) + " |", "|" + "---|" * len(SUSTAINED_COLUMNS)]
    lines += ["| " + " | ".join(_sustained_row(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"
