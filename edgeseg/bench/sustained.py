"""Sustained runs: the same call repeated for a fixed time, latency over time, drift and energy per frame.

Thermal throttling or a noisy neighbour shows as drift: the change of the windowed median latency from the
first to the last window. Energy comes from :mod:`edgeseg.bench.energy`, read at every window boundary;
where no counter is readable the record says ``"n/a"`` and why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.bench.energy import EnergyMeter, open_energy_meter

DEFAULT_WINDOWS = 10
NOT_AVAILABLE = "n/a"


def timed_events(events: Iterator[float], duration_s: float, window_s: float, meter: EnergyMeter | None) -> dict:
    """Consume ``events`` (each yields the seconds one frame took) for ``duration_s``; the raw time series.

    Returns ``t_s`` (end of each frame, seconds from the start), ``latency_s`` and ``energy`` samples
    ``[t_s, joules]`` taken at the start, after the first frame past each window boundary and after the
    last frame (empty without a meter). The last frame is the first to end at or after ``duration_s``.
    """
    clock = time.perf_counter
    start = clock()
    stamps: list[float] = []
    latencies: list[float] = []
    energy = [[0.0, meter.joules()]] if meter is not None else []
    boundary = window_s
    for seconds in events:
        now = clock() - start
        stamps.append(now)
        latencies.append(seconds)
        if meter is not None and now >= boundary:
            energy.append([now, meter.joules()])
            boundary = (now // window_s + 1) * window_s
        if now >= duration_s:
            break
    if meter is not None and stamps and energy[-1][0] < stamps[-1]:
        energy.append([stamps[-1], meter.joules()])
    return {"t_s": stamps, "latency_s": latencies, "energy": energy}


def _windows(t: np.ndarray, latency_ms: np.ndarray, window_s: float, duration_s: float) -> list[dict[str, float]]:
    """Per window of ``window_s`` in ``duration_s``: start, frames, median and p90 latency in ms.

    A frame ending after the duration (the last one) belongs to the last window.
    """
    rows = []
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    index = np.minimum(np.floor(t / window_s).astype(int), count - 1)
    for k in np.unique(index):
        values = latency_ms[index == k]
        rows.append(
            {
                "start_s": float(k * window_s),
                "frames": int(values.size),
                "median_ms": float(np.median(values)),
                "p90_ms": float(np.percentile(values, 90)),
            }
        )
    return rows


def _energy_summary(energy: list[list[float]], t: np.ndarray, source: str | None, why: str) -> dict[str, Any]:
    """Energy per frame and mean power over the run, or "n/a" and the reason."""
    if source is None or len(energy) < 2:
        return {"source": None, "joules": NOT_AVAILABLE, "joules_per_frame": NOT_AVAILABLE, "watts": NOT_AVAILABLE,
                "why": why}  # fmt: skip
    (t0, j0), (t1, j1) = energy[0], energy[-1]
    frames = int(np.count_nonzero((t > t0) & (t <= t1)))
    joules = j1 - j0
    return {
        "source": source,
        "joules": joules,
        "joules_per_frame": joules / frames if frames else NOT_AVAILABLE,
        "watts": joules / (t1 - t0) if t1 > t0 else NOT_AVAILABLE,
        "frames": frames,
        "samples": energy,
        "note": "whole package/board energy: other load on the machine is included",
    }


def summarize_series(
    series: dict, duration_s: float, window_s: float, meter_source: str | None, why: str
) -> dict[str, Any]:
    """The sustained-run block of a record: time series, windowed medians, drift and energy."""
    t = np.asarray(series["t_s"], dtype=np.float64)
    latency_ms = np.asarray(series["latency_s"], dtype=np.float64) * 1000.0
    if t.size == 0:
        raise ValueError("the sustained run recorded no frame")
    windows = _windows(t, latency_ms, window_s, duration_s)
    first, last = windows[0]["median_ms"], windows[-1]["median_ms"]
    return {
        "duration_s": float(t[-1]),
        "requested_duration_s": duration_s,
        "window_s": window_s,
        "frames": int(t.size),
        "fps": float(t.size / t[-1]) if t[-1] > 0 else None,
        "t_s": [round(v, 6) for v in t.tolist()],
        "latency_ms": [round(v, 4) for v in latency_ms.tolist()],
        "windows": windows,
        "drift_ms": last - first,
        "drift_pct": (last - first) / first * 100.0 if first > 0 else None,
        "energy": _energy_summary(series["energy"], t, meter_source, why),
    }


def run_sustained(events: Iterator[float], duration_s: float, window_s: float | None, sysfs: Path) -> dict:
    """Run ``events`` for ``duration_s`` with energy from ``sysfs`` where readable; the sustained block."""
    if not duration_s > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration_s}")
    window = window_s or duration_s / DEFAULT_WINDOWS
    if not 0 < window <= duration_s:
        raise ValueError(f"window must be > 0 and at most the duration ({duration_s} s), got {window}")
    meter, source_or_why = open_energy_meter(sysfs)
    try:
        series = timed_events(events, duration_s, window, meter)
    finally:
        if meter is not None:
            meter.close()
    source, why = (source_or_why, "") if meter is not None else (None, source_or_why)
    return summarize_series(series, duration_s, window, source, why)


def plot_sustained(record: dict[str, Any], path: str | Path) -> Path:
    """Plot a sustained record's per-frame latency, windowed medians and (where measured) power to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the sustained-run plot needs matplotlib: pip install 'edgeseg[bench]'") from error
    block = record["sustained"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(block["t_s"], block["latency_ms"], ".", markersize=2, alpha=0.4, label="per frame")
    w = block["window_s"]
    centres = [row["start_s"] + w / 2 for row in block["windows"]]
    ax.plot(centres, [row["median_ms"] for row in block["windows"]], "o-", color="C3", label=f"median per {w:g} s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    drift = block["drift_pct"]
    ax.set_title(
        f"{record['model']} {record['backend']} {record['boundary']}: drift "
        + (f"{drift:+.1f} %" if drift is not None else NOT_AVAILABLE)
        + f", energy/frame {_joules_text(block['energy'])}"
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _joules_text(energy: dict[str, Any]) -> str:
    """Energy per frame for a title: millijoules, or n/a."""
    value = energy["joules_per_frame"]
    return f"{value * 1000:.1f} mJ" if isinstance(value, float) else NOT_AVAILABLE
