"""Soak: many frames through ``Segmenter.stream`` per backend, resident memory sampled as it runs.

    python benchmarks/soak.py [--model afformer-tiny] [--size 128x128] [--frames 10000] [--threads 2]

Exports the model once per backend (random weights: memory does not depend on them), then streams ``--frames``
frames of 144×176 through each bundle in a fresh torch-free process, sampling VmRSS every ``--sample-every``
frames. Growth is the least-squares slope of RSS over frames after ``--warmup`` frames, in MiB per 1000 frames.
Writes ``results/soak.md`` and ``results/soak.json`` with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import edgeseg

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("onnxruntime", "openvino")
FRAME_SHAPE = (144, 176, 3)  # QCIF-like: the soak is about memory, not about the label path's cost
GROWTH_LIMIT_MB = 1.0  # per 1000 frames after warm-up (issue 13)


def worker(bundle: str, frames: int, sample_every: int, threads: int) -> dict[str, Any]:
    """Stream ``frames`` frames through ``bundle`` in this (torch-free) process; RSS samples and the rate."""
    from edgeseg import runtime
    from edgeseg.bench.probe import resident_mb

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8) for _ in range(8)]

    def source() -> Iterator[np.ndarray]:
        for i in range(frames):
            yield pool[i % len(pool)].copy()  # a new array per frame, as a camera delivers them

    samples = []
    started = time.perf_counter()
    with runtime.load(bundle, threads=threads) as seg:
        for index, labels in enumerate(seg.stream(source()), start=1):
            assert labels is not None and labels.shape == FRAME_SHAPE[:2]
            if index % sample_every == 0:
                samples.append([index, resident_mb()["rss_mb"]])
    seconds = time.perf_counter() - started
    return {"samples": samples, "seconds": seconds, "fps": frames / seconds, "torch_imported": "torch" in sys.modules}


def growth_per_1000(samples: list[list[float]], warmup: int) -> float:
    """Least-squares slope of RSS (MiB) over frame index after ``warmup``, per 1000 frames."""
    points = np.array([s for s in samples if s[0] > warmup], dtype=np.float64)
    slope = np.polyfit(points[:, 0], points[:, 1], 1)[0]
    return float(slope * 1000)


def _export(model: str, size: tuple[int, int], target: str, folder: Path) -> Path:
    from edgeseg.export import ExportRequest, export_bundle

    return export_bundle(ExportRequest(model=model, out=folder / target, target=target, input_size=size))


def _run_worker(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "worker", str(bundle), "--frames", str(args.frames)]
    command += ["--sample-every", str(args.sample_every), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _table(rows: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# Soak: {args.frames} frames through `Segmenter.stream` ({args.model}, {args.size}, "
        f"{FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} frames, {args.threads} threads)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} cores, {machine['os']}; "
        f"edgeseg {edgeseg.__version__}. Growth: least-squares slope of VmRSS after "
        f"{args.warmup} warm-up frames (limit {GROWTH_LIMIT_MB} MiB / 1000 frames).",
        "",
        "| backend | frames | FPS | RSS after warm-up MiB | RSS at end MiB | growth MiB/1000 frames | within limit "
        "| growth over the second half |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        after = next(s[1] for s in r["samples"] if s[0] > args.warmup)
        lines.append(
            f"| {r['backend']} | {args.frames} | {r['fps']:.0f} | {after:.1f} | {r['samples'][-1][1]:.1f} | "
            f"{r['growth_mb_per_1000']:+.3f} | {'yes' if abs(r['growth_mb_per_1000']) < GROWTH_LIMIT_MB else 'NO'} "
            f"| {growth_per_1000(r['samples'], args.frames // 2):+.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("worker")
    run.add_argument("bundle")
    for p in (parser, run):
        p.add_argument("--frames", type=int, default=10000)
        p.add_argument("--sample-every", type=int, default=250)
        p.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="afformer-tiny")
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--warmup", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "worker":
        print(json.dumps(worker(args.bundle, args.frames, args.sample_every, args.threads)))
        return

    from edgeseg.bench.machine import machine_info
    from edgeseg.imaging import parse_size

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for backend in BACKENDS:
            bundle = _export(args.model, parse_size(args.size), backend, Path(folder))
            result = _run_worker(bundle, args)
            result["growth_mb_per_1000"] = growth_per_1000(result["samples"], args.warmup)
            rows.append({"backend": backend, **result})
            print(f"{backend}: {result['fps']:.0f} FPS, growth {result['growth_mb_per_1000']:+.3f} MiB/1000 frames")
    machine = machine_info(args.threads)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2))
    (RESULTS / "soak.md").write_text(_table(rows, machine, args))
    print(f"wrote {RESULTS / 'soak.md'}")


if __name__ == "__main__":
    main()
