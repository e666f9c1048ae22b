"""Merged results of remote runs: a Markdown table, a JSON file written atomically, a latency plot (PNG)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeseg.bench import BOUNDARIES

TABLE_COLUMNS = (
    "device", "model", "input", "backend", "precision", "threads", "boundary", "p50 ms", "p90 ms", "p99 ms",
    "mean ms", "FPS", "peak RSS MB", "status",
)  # fmt: skip


def _cell(text: object) -> str:
    """One line of text that cannot break a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _record_row(r: dict[str, Any]) -> list[str]:
    lat = r["latency_ms"]
    h, w = r["input_size"]
    rss = "–" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.1f}"
    return [
        r["device"]["name"], r["model"], f"{h}x{w}", r["backend"], r["precision"],
        "default" if r["threads"] is None else str(r["threads"]), r["boundary"],
        *(f"{lat[k]:.3g}" if lat[k] < 1 else f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "mean")),
        f"{r['fps']:.1f}", rss, "ok",
    ]  # fmt: skip


def _failure_row(f: dict[str, Any]) -> list[str]:
    if f["bundle"] is None:
        job = ["(all)", "–", f["backend"] or "–", "–", "–"]
    else:
        threads = "default" if f["threads"] is None else str(f["threads"])
        job = [f["model"], "{}x{}".format(*f["input_size"]), f["backend"], f["precision"], threads]
    return [f["device"], *job, "–", "–", "–", "–", "–", "–", "–", "FAILED: " + f["error"].splitlines()[0]]


def _device_line(device: dict[str, Any]) -> str:
    """One device's description: CPU, cores, memory, OS, Python and backend versions."""
    packages = ", ".join(f"{name} {version}" for name, version in device["packages"].items() if version)
    memory = "?" if device["mem_total_mb"] is None else f"{device['mem_total_mb'] / 1024:.1f} GiB"
    isa = " ".join(device["isa"]) or "–"
    return (
        f"- {device['name']} ({device['address']}): {device['cpu_model']}, {device['arch']}, "
        f"{device['logical_cores']} logical cores ({device['usable_cores']} usable), ISA {isa}, "
        f"{memory}, {device['os']} {device['kernel']}, Python {device['python']}, edgeseg {device['edgeseg_version']}, "
        f"{packages}"
    )


def fleet_table(records: Sequence[dict[str, Any]], failures: Sequence[dict[str, Any]]) -> str:
    """Every record and failure as one Markdown table, then one line per device that answered."""
    boundaries = "; ".join(f"{b}: {BOUNDARIES[b]}" for b in sorted({r["boundary"] for r in records}))
    head = f"Timing boundary — {boundaries or 'none measured'}. Latency in ms; MB = MiB."
    lines = [head, "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    rows = [(r["device"]["name"], _record_row(r)) for r in records] + [(f["device"], _failure_row(f)) for f in failures]
    order = {name: index for index, name in enumerate(dict.fromkeys(name for name, _ in rows))}
    rows.sort(key=lambda row: order[row[0]])  # stable: each device's jobs stay in their order
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for _, row in rows]
    devices = {r["device"]["name"]: r["device"] for r in records}
    if devices:
        lines += ["", "Devices:", *(_device_line(d) for d in devices.values())]
    return "\n".join(lines) + "\n"


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path``: a temporary file beside it, renamed into place when complete."""
    path = Path(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def plot_latency(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Bars of median latency per bundle x device, whiskers from min to p99; False when matplotlib is missing.

    Written atomically like the JSON.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    jobs = list(dict.fromkeys(_job_label(r) for r in records))
    devices = list(dict.fromkeys(r["device"]["name"] for r in records))
    width = 0.8 / max(len(devices), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(jobs) * max(len(devices), 1)), 4.5))
    for d, device in enumerate(devices):
        mine = {_job_label(r): r["latency_ms"] for r in records if r["device"]["name"] == device}
        xs = [j + (d - (len(devices) - 1) / 2) * width for j, job in enumerate(jobs) if job in mine]
        lat = [mine[job] for job in jobs if job in mine]
        medians = [x["p50"] for x in lat]
        errors = [[x["p50"] - x["min"] for x in lat], [x["p99"] - x["p50"] for x in lat]]
        axes.bar(xs, medians, width, yerr=errors, capsize=3, label=device)
    axes.set_xticks(range(len(jobs)), jobs, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("latency, ms (bar: median; whiskers: min to p99)")
    boundaries = ", ".join(sorted({r["boundary"] for r in records}))
    axes.set_title(f"edgeseg bench per bundle and device, {boundaries} boundary")
    axes.legend(title="device")
    figure.tight_layout()
    path = Path(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial.png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        plt.close(figure)
    return True


def _job_label(record: dict[str, Any]) -> str:
    """Bundle, backend and threads of a record, for the plot's axis."""
    h, w = record["input_size"]
    threads = "" if record["threads"] is None else f" {record['threads']}t"
    return f"{record['model']} {h}x{w} {record['precision']} {record['backend']}{threads}"
