"""Benchmark harness: one protocol for every backend, each measurement in a fresh torch-free process.

Protocol (after trtexec, benchmark_app, onnxruntime_perf_test and TFLite's benchmark_model): load,
one first inference, ``warmup`` untimed then ``iters`` timed calls of a declared timing boundary,
reported as percentiles; peak memory is read in a second process of its own so timing and memory
never disturb each other.

``benchmark(..., scenario=ScenarioSettings(...))`` runs an MLPerf LoadGen scenario in the same worker instead of
the timed calls (:mod:`edgeseg.bench.scenarios`); ``duration=`` a sustained run (:mod:`edgeseg.bench.sustained`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgeseg
from edgeseg.bench.machine import machine_info
from edgeseg.bench.stats import summarize
from edgeseg.bundle import Bundle, read_bundle

if TYPE_CHECKING:
    from edgeseg.bench.scenarios import ScenarioSettings

BOUNDARIES = {
    "model": "normalised input → logits, excludes pre/post-processing",
    "end-to-end": ("uint8 image → label map at the image size, includes resize, normalise, upsample and argmax"),
    "stream": (
        "uint8 frames → label maps through the pipelined Segmenter.stream (frames in memory, no decoding); "
        "time per frame = interval between consecutive results, so FPS is the throughput"
    ),
}
# Boundaries that take whole images of --image-size rather than the model's input.
IMAGE_BOUNDARIES = ("end-to-end", "stream")
DEFAULT_IMAGE_SIZE = (720, 1280)
MIB = 1024 * 1024

__all__ = ["BOUNDARIES", "BenchmarkError", "benchmark", "format_table"]


class BenchmarkError(RuntimeError):
    """A benchmark worker process failed; the message carries its stderr."""


def _model_bytes(bundle: Bundle, backend: str) -> int:
    """Size of the files ``backend`` loads: the IR's .xml and .bin, or the one ONNX graph."""
    bundle.artifact(backend)  # checks every file it reads is a regular file of the bundle
    return sum((bundle.path / name).stat().st_size for name in bundle.loaded_files(backend))


def _probe(args: list[str], mode: str) -> dict[str, Any]:
    """Run one ``edgeseg.bench.probe`` pass in a fresh interpreter and return its JSON record."""
    cmd = [sys.executable, "-m", "edgeseg.bench.probe", *args, "--mode", mode]
    env = dict(os.environ)
    package_root = str(Path(edgeseg.__file__).absolute().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    stderr = proc.stderr.strip()
    if proc.returncode != 0:
        last = stderr.splitlines()[-1] if stderr else "(no stderr)"
        raise BenchmarkError(
            f"benchmark {mode} pass failed (exit code {proc.returncode}): {last}\n"
            f"command: {' '.join(cmd)}\n--- worker stderr ---\n{stderr}"
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchmarkError(
            f"benchmark {mode} pass printed no JSON record\ncommand: {' '.join(cmd)}\n"
            f"stdout: {proc.stdout.strip()!r}\n--- worker stderr ---\n{stderr}"
        ) from None


def benchmark(
    bundle_path: str | Path,
    *,
    backend: str | None = None,
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 50,
    boundary: str = "model",
    image_size: tuple[int, int] | None = None,
    any_precision: bool = False,
    scenario: ScenarioSettings | None = None,
    duration: float | None = None,
    window: float | None = None,
    video: str | Path | None = None,
    inferences: int | None = None,
) -> dict[str, Any]:
    """Benchmark one bundle on one backend: a latency pass, then a memory pass, each in its own process.

    The record's ``precision`` and ``artifact`` are those of the file that ran; a backend without an artifact of
    the bundle's precision is refused unless ``any_precision`` (see :func:`edgeseg.runtime.load`).

    ``backend=None`` uses the bundle's default backend and ``threads=None`` the backend's default
    thread count; the record keeps what was asked. ``image_size`` (HxW) is the input image of the
    ``end-to-end`` and ``stream`` boundaries (default 720x1280) and is ignored for ``model``; with ``video`` their
    frames are decoded from that file instead (``end-to-end``: its first frame; ``stream``: every frame in turn,
    decoding included in each interval) and the image size is the video's. ``inferences`` is the ``stream``
    boundary's frames in the model at once (see :meth:`edgeseg.runtime.Segmenter.stream`; default: what
    :func:`edgeseg.runtime.video_inferences` picks, as ``edgeseg predict`` does); the record states it.

    ``scenario`` replaces the ``iters`` timed calls by an MLPerf LoadGen run (``model`` boundary only;
    the record gains a ``scenario`` block); ``duration`` seconds replace them by a sustained run with
    median windows of ``window`` seconds (a ``sustained`` block). The memory pass is the same in every case.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {sorted(BOUNDARIES)}, got {boundary!r}")
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    if inferences is not None and (boundary != "stream" or inferences < 1):
        raise ValueError(f"inferences (a positive int) applies to the stream boundary only, got {inferences}")
    bundle = read_bundle(bundle_path)
    args = ["--bundle", str(bundle.path), "--boundary", boundary]
    args += ["--warmup", str(warmup), "--iters", str(iters)]
    if backend is not None:
        args += ["--backend", backend]
    if threads is not None:
        args += ["--threads", str(threads)]
    if any_precision:
        args.append("--any-precision")
    if boundary in IMAGE_BOUNDARIES:
        h, w = image_size or DEFAULT_IMAGE_SIZE
        args += ["--image-size", f"{h}x{w}"]
        if video is not None:
            if not Path(video).is_file():
                raise FileNotFoundError(f"--video {video} is not a file")
            args += ["--video", str(Path(video).absolute())]
    if inferences is not None:
        args += ["--inferences", str(inferences)]
    timed = _probe(args + _special_args(boundary, scenario, duration, window), "latency")
    memory = _probe(args, "memory")
    latency = summarize(timed["seconds"])
    fps = _throughput(timed, latency.pop("fps"))
    model = bundle.manifest.model
    special: dict[str, Any] = {key: timed[key] for key in ("scenario", "sustained") if key in timed}
    if special:
        iters = len(timed["seconds"])
    return {
        "bundle": str(bundle.path),
        "model": bundle.model_name,
        "input_size": list(bundle.input_size),
        "target": bundle.target,
        "precision": timed["precision"],
        "backend": timed["backend"],
        "artifact": timed["artifact"],
        "threads": threads,
        "boundary": boundary,
        "image_size": timed["image_size"],
        "video": timed["video"],
        "inferences": timed["inferences"],
        "warmup": warmup,
        "iters": iters,
        "latency_ms": latency,
        "fps": fps,
        "load_s": timed["load_s"],
        "first_inference_ms": timed["first_inference_ms"],
        "model_bytes": _model_bytes(bundle, timed["backend"]),
        "peak_rss_mb": memory["peak_rss_mb"],
        "rss_mb": memory["rss_mb"],
        "torch_imported": timed["torch_imported"] or memory["torch_imported"],
        "macs": model.macs,
        "params": model.params,
        "machine": machine_info(threads),
        "edgeseg_version": edgeseg.__version__,
        **special,
    }


def _special_args(
    boundary: str, scenario: ScenarioSettings | None, duration: float | None, window: float | None
) -> list[str]:
    """Worker arguments of a LoadGen scenario or a sustained run (empty for the quick protocol)."""
    if scenario is not None and duration is not None:
        raise ValueError("give a LoadGen scenario or a sustained duration, not both")
    if scenario is not None:
        if boundary != "model":
            raise ValueError(f"LoadGen scenarios time the model boundary; got boundary {boundary!r}")
        args = ["--scenario", scenario.scenario, "--min-duration", str(scenario.min_duration_s)]
        args += ["--min-queries", str(scenario.min_queries)]
        if scenario.server_qps is not None:
            args += ["--server-qps", str(scenario.server_qps)]
        if scenario.server_latency_ms is not None:
            args += ["--server-latency-ms", str(scenario.server_latency_ms)]
        return args
    if duration is None:
        if window is not None:
            raise ValueError("window is the median window of a sustained run: give a duration too")
        return []
    if not duration > 0 or (window is not None and not 0 < window <= duration):
        raise ValueError(f"need duration > 0 and 0 < window <= duration, got {duration} and {window}")
    return ["--duration", str(duration)] + (["--window", str(window)] if window is not None else [])


def _throughput(timed: dict[str, Any], fps: float) -> float:
    """Frames per second of a record: LoadGen's samples/s for Offline and Server, else 1000 / mean latency."""
    block = timed.get("scenario") or {}
    measured = block.get("samples_per_second") or block.get("completed_qps")
    return float(measured) if measured else fps


TABLE_COLUMNS = (
    "model", "input", "backend", "precision", "artifact", "threads", "boundary", "mean ms", "std ms", "p50 ms",
    "p90 ms", "p99 ms", "min ms", "max ms", "FPS", "load s", "first ms", "peak RSS MB", "size MB",
)  # fmt: skip


def _fmt(value: float | None, digits: int) -> str:
    """Fixed decimals, or a dash for a value that could not be measured."""
    return "–" if value is None else f"{value:.{digits}f}"


def _num(value: float) -> str:
    """Two decimals, or three significant digits below 1 so sub-millisecond values stay readable."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _row(r: dict[str, Any]) -> list[str]:
    """The table cells of one benchmark record."""
    lat = r["latency_ms"]
    h, w = r["input_size"]
    boundary = r["boundary"]
    if r["image_size"] is not None:
        boundary += " {}x{}".format(*r["image_size"])
    if r.get("inferences", 1) not in (None, 1):
        boundary += f", {r['inferences']} at once"
    return [
        r["model"], f"{h}x{w}", r["backend"], r["precision"], r["artifact"],
        "default" if r["threads"] is None else str(r["threads"]), boundary,
        *(_num(lat[k]) for k in ("mean", "std", "p50", "p90", "p99", "min", "max")),
        _fmt(r["fps"], 1), _fmt(r["load_s"], 3), _fmt(r["first_inference_ms"], 1),
        _fmt(r["peak_rss_mb"], 1), _num(r["model_bytes"] / MIB),
    ]  # fmt: skip


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """Render records as a Markdown table, preceded by one line naming the timing boundary and machine."""
    if not records:
        raise ValueError("format_table needs at least one record")
    machine = records[0]["machine"]
    threads = sorted({"default" if r["threads"] is None else str(r["threads"]) for r in records})
    used = {r["boundary"] for r in records}
    boundaries = "; ".join(f"{b}: {meaning}" for b, meaning in BOUNDARIES.items() if b in used)
    head = (
        f"Timing boundary — {boundaries}. Machine: {machine['cpu_model']}, "
        f"{machine['logical_cores']} logical cores ({machine['usable_cores']} usable), "
        f"threads: {', '.join(threads)}. Latency in ms; MB = MiB."
    )
    lines = [head, "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"
