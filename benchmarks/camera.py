"""Camera path benchmark: a 720p video → full-size label maps, per frame-path variant, against the model alone.

    python benchmarks/camera.py --models afformer-tiny --checkpoint afformer-tiny=aff.pth --num-classes 6 \
        [--threads 1 2] [--variants float:logits uint8-rgb:labels-full] [--video clip.mp4]

For each model and backend (ONNX Runtime, OpenVINO fp32) it exports the plain bundle (model-only latency:
normalised input → logits) and one bundle per variant (``--input``/``--output`` of ``edgeseg export``), then
times, on frames of a 720p video file (by default a synthetic one: ``edgeseg data synthetic`` images at
720×1280, written as MPEG-4 at 30 FPS), model-only against ``end-to-end`` (``Segmenter.predict`` of the first
frame: conversion, resize, normalisation, inference and the full-size label map) alternating call by call in one
fresh torch-free process (the ratio is the median of each call's ratio to the model-only call just before it,
so a slow moment of this noisy machine weighs on both sides), and ``stream`` (``Segmenter.stream`` over the
video, decoding included, with ``inferences`` 1 and 2) with ``edgeseg.bench.benchmark``. Live mode plays the
video at 30 FPS into ``Segmenter.live`` (latest frame wins) and records the capture → result latency and the
drops. Writes ``results/camera_720p.md``, ``.json`` and ``.png``. Targets (issue 14): end-to-end ≤ 1.15×
model-only for AFFormer-tiny and CGRSeg-T, ≤ 1.25× for SegFormer-B0 and U-MixFormer-B0; stream ≥ 0.9 × 1000 /
model-only; live p50 ≤ model-only + one frame interval. Give a trained checkpoint where there is one: the label
path's cost depends on how many class boundaries the masks have. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("onnxruntime", "openvino")
FRAME = (720, 1280)
VIDEO_FPS = 30.0
VIDEO_FRAMES = 60
LIVE_FRAMES = 90
SETTLE_S = 0.05  # pause before each timed block: the previous session's threads stop spinning
# (--input, --output) of each bundle timed end to end; the first is today's float bundle.
VARIANTS = (("float", "logits"), ("uint8-rgb", "labels-full"))


def export(
    model: str,
    target: str,
    size: tuple[int, int],
    variant: tuple[str, ...],
    checkpoint: Path | None,
    num_classes: int,
    root: Path,
):
    """One bundle of ``model`` for ``target`` with the frame path of ``variant``."""
    from edgeseg.export import ExportRequest, export_bundle

    kind, outputs = variant
    out = root / f"{model}-{target}-{kind}-{outputs.replace(',', '+')}"
    request = ExportRequest(
        model=model,
        out=out,
        target=target,
        input_size=size,
        checkpoint=checkpoint,
        num_classes=num_classes,
        input_kind=kind,
        outputs=tuple(outputs.split(",")),
        parity_count=2,
    )
    return export_bundle(request)


def synthetic_video(root: Path) -> Path:
    """A 720p MPEG-4 video of ``edgeseg data synthetic`` images (textured shapes), 30 FPS."""
    import cv2

    from edgeseg.data import generate_synthetic

    dataset = generate_synthetic(root / "frames", VIDEO_FRAMES, FRAME, seed=1)
    path = root / "synthetic_720p.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (FRAME[1], FRAME[0]))
    for image in sorted((dataset.root / "images").iterdir()):
        writer.write(cv2.imread(str(image)))
    writer.release()
    return path


def live(bundle: Path, video: Path, threads: int) -> dict[str, Any]:
    """Play ``video`` at 30 FPS into ``Segmenter.live`` (capture time = the frame's due time); latency and drops."""
    import time

    from edgeseg.runtime import load
    from edgeseg.video import open_source

    class Paced:
        def __init__(self, image: Any, timestamp: float) -> None:
            self.image, self.timestamp = image, timestamp

    with open_source(str(video)) as source:
        images = [frame.image for frame in source]

    def camera():
        start = time.monotonic()
        for i in range(LIVE_FRAMES):
            due = start + i / VIDEO_FPS
            time.sleep(max(0.0, due - time.monotonic()))
            yield Paced(images[i % len(images)], due)

    with load(bundle, threads=threads) as seg:
        seg.predict(images[0])  # warm-up
        stats = seg.live(camera(), lambda result: None)
    return {
        "live_p50_ms": stats.latency_p50 * 1000 if stats.latency_p50 is not None else None,
        "live_dropped": stats.dropped,
        "live_processed": stats.processed,
    }


def interleaved_child(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """In this (fresh, torch-free) process: model-only and each bundle's ``predict``, alternating call by call.

    Returns per name the median latency (ms) and the median of its paired ratios to the model-only call just
    before it, so a slow moment of the machine weighs on both sides of a ratio. A bundle that is the plain one
    reuses its session; before a call on another session the previous one's threads get ``SETTLE_S`` to stop
    spinning.
    """
    from edgeseg.runtime import load
    from edgeseg.video import open_source

    with open_source(spec["video"]) as source:
        frame = next(iter(source)).image
    plain = load(spec["plain"], threads=spec["threads"])
    x = plain.preprocess(frame)
    sessions = {spec["plain"]: plain}
    calls = {"model-only": (plain, lambda: plain.logits(x))}
    for name, path in spec["bundles"].items():
        if path not in sessions:
            sessions[path] = load(path, threads=spec["threads"])
        seg = sessions[path]
        calls[name] = (seg, lambda seg=seg: seg.predict(frame))
    for _, call in calls.values():
        for _ in range(spec["warmup"]):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    ratios: dict[str, list[float]] = {name: [] for name in calls}
    previous = None
    for _ in range(spec["iters"]):
        for name, (seg, call) in calls.items():
            if seg is not previous:
                time.sleep(SETTLE_S)
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000)
            ratios[name].append(samples[name][-1] / samples["model-only"][-1])
            previous = seg
    return {name: {"ms": statistics.median(samples[name]), "ratio": statistics.median(ratios[name])} for name in calls}


def interleaved(plain: Path, bundles: dict[str, Path], video: Path, threads: int, args: argparse.Namespace):
    """Model-only and end-to-end medians (ms) and paired ratios per bundle, timed interleaved in one process."""
    spec = {
        "plain": str(plain),
        "bundles": {name: str(path) for name, path in bundles.items()},
        "video": str(video),
        "threads": threads,
        "warmup": args.warmup,
        "iters": args.iters,
    }
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, __file__, "--interleave", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Every row: model-only, end-to-end, stream and live per model, backend, variant and thread count."""
    from edgeseg.bench import benchmark

    video = Path(args.video) if args.video else synthetic_video(root)
    variants = [tuple(v.split(":", 1)) for v in args.variants]
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = []
    for model in args.models:
        checkpoint = Path(checkpoints[model]) if model in checkpoints else None
        num_classes = args.num_classes if checkpoint else 150
        for target in BACKENDS:
            bundles = {v: export(model, target, tuple(args.size), v, checkpoint, num_classes, root) for v in variants}
            plain = bundles.get(("float", "logits")) or export(
                model, target, tuple(args.size), ("float", "logits"), checkpoint, num_classes, root
            )
            for threads in args.threads:
                timing = dict(threads=threads, warmup=args.warmup, iters=args.stream_frames)
                names = {variant: ":".join(variant) for variant in bundles}
                p50 = interleaved(plain, {names[v]: b for v, b in bundles.items()}, video, threads, args)
                model_only = p50["model-only"]["ms"]
                for variant, bundle in bundles.items():
                    end_to_end, ratio = p50[names[variant]]["ms"], p50[names[variant]]["ratio"]
                    streams = {
                        n: benchmark(bundle, boundary="stream", video=video, inferences=n, **timing) for n in (1, 2)
                    }
                    rows.append(
                        {
                            "model": model,
                            "weights": "checkpoint" if checkpoint else "random",
                            "backend": target,
                            "threads": threads,
                            "input": variant[0],
                            "outputs": variant[1],
                            "model_only_ms": model_only,
                            "end_to_end_ms": end_to_end,
                            "ratio": ratio,
                            "stream_fps": {n: r["fps"] for n, r in streams.items()},
                            "stream_vs_model": {n: r["fps"] * model_only / 1000 for n, r in streams.items()},
                            **live(bundle, video, threads),
                            "live_target_ms": model_only + 1000 / VIDEO_FPS,
                        }
                    )
    return rows


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# Camera path: {FRAME[0]}×{FRAME[1]} frame → full-size label map (`benchmarks/camera.py`)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} cores, {machine['os']}, onnxruntime "
        f"{machine['packages'].get('onnxruntime')}, openvino {machine['packages'].get('openvino')}. "
        f"Model size {args.size[0]}×{args.size[1]}. Model-only (the float bundle, normalised input → logits) and "
        "end-to-end (`Segmenter.predict` of the video's first frame) alternate call by call in one process, "
        f"{args.iters} calls each after {args.warmup} warm-up: medians, and the ratio is the median of each call's "
        "ratio to the model-only call before it. Stream: frames per second of `Segmenter.stream` over the 720p video "
        "file, decoding included, with one inference at a time (all threads) / two at once (`inferences=2`: two lanes "
        "of half the threads, the default of `edgeseg predict` here); stream × model is that FPS times the model-only "
        "latency (target ≥ 0.9). Live: the "
        f"video played at {VIDEO_FPS:g} FPS into `Segmenter.live` for {LIVE_FRAMES} frames; capture → result p50 "
        "(target ≤ model-only + one frame interval) and frames dropped while busy.",
        "",
        "| model | weights | backend | threads | --input | --output | model-only ms | end-to-end ms | ratio "
        "| stream FPS (1 / 2 at once) | stream × model (1 / 2) | live p50 ms (target) | live dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['backend']} | {r['threads']} | {r['input']} | {r['outputs']} | "
            f"{r['model_only_ms']:.1f} | {r['end_to_end_ms']:.1f} | {r['ratio']:.2f} | "
            f"{r['stream_fps'][1]:.1f} / {r['stream_fps'][2]:.1f} | "
            f"{r['stream_vs_model'][1]:.2f} / {r['stream_vs_model'][2]:.2f} | "
            f"{r['live_p50_ms']:.1f} ({r['live_target_ms']:.1f}) | "
            f"{r['live_dropped']}/{r['live_processed'] + r['live_dropped']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Model-only and end-to-end latency per variant, one panel per backend and thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["backend"], r["threads"]) for r in rows})
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for axis, (model, backend, threads) in zip(axes[0], panels):
        chosen = [r for r in rows if (r["model"], r["backend"], r["threads"]) == (model, backend, threads)]
        labels = [f"{r['input']}\n{r['outputs']}" for r in chosen]
        positions = range(len(chosen))
        axis.bar(positions, [r["end_to_end_ms"] for r in chosen], color="tab:orange", label="end-to-end (720p)")
        axis.axhline(chosen[0]["model_only_ms"], color="tab:blue", label="model only")
        axis.set_xticks(list(positions), labels, rotation=60, fontsize=7)
        axis.set_title(f"{model}, {backend}, {threads} thread(s)", fontsize=9)
        axis.set_ylabel("ms (p50)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["afformer-tiny"])
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="MODEL=PATH", help="trained weights per model")
    parser.add_argument("--num-classes", type=int, default=150, help="the checkpoint's classes")
    parser.add_argument("--size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=60, help="timed calls of each, alternating")
    parser.add_argument("--stream-frames", type=int, default=40, help="frames timed in the stream run")
    parser.add_argument("--interleave", help=argparse.SUPPRESS)  # the timing child's spec (JSON)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[f"{i}:{o}" for i, o in VARIANTS],
        metavar="INPUT:OUTPUTS",
        help="the bundles timed end to end, e.g. float:logits uint8-rgb:labels-full",
    )
    parser.add_argument("--video", help="a 720p video file (default: a synthetic one)")
    parser.add_argument("--name", default="camera_720p", help="results file stem")
    args = parser.parse_args()
    if args.interleave:
        print(json.dumps(interleaved_child(json.loads(args.interleave))))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgeseg-camera-") as scratch:
        rows = measure(args, Path(scratch))
    from edgeseg.bench.machine import machine_info

    machine = machine_info(None)
    RESULTS.mkdir(exist_ok=True)
    record = {"frame": FRAME, "machine": machine, "args": vars(args), "rows": rows}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, machine, args))
    plot(rows, RESULTS / f"{args.name}.png")
    print(markdown(rows, machine, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
