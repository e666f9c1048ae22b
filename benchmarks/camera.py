"""Camera path benchmark: a 720p frame → full-size label map, per frame-path variant, against model-only latency.

    python benchmarks/camera.py --models afformer-tiny \
        --checkpoint afformer-tiny=/work/shared/golden/afformer_tiny/checkpoint.pth [--threads 1 2]

For each model and backend (ONNX Runtime, OpenVINO fp32) it exports the plain bundle (model-only latency:
normalised input → logits) and one bundle per variant of ``VARIANTS`` (``--input``/``--output`` of
``edgeseg export``), then times ``Segmenter.predict`` on a 720p frame (``end-to-end``: every conversion,
resize, normalisation, inference and the full-size label map) with ``edgeseg.bench.benchmark`` in fresh
torch-free processes. Writes ``results/camera_720p.md`` and ``.json``; the ratio column is end-to-end /
model-only (targets: ≤ 1.15 for AFFormer-tiny and CGRSeg-T, ≤ 1.25 for SegFormer-B0 and U-MixFormer-B0).
Give a trained checkpoint where there is one: a trained model's masks have few boundaries, which the label
path's cost depends on. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("onnxruntime", "openvino")
FRAME = (720, 1280)
# (--input, --output) of each bundle timed end to end; the first is today's float bundle.
VARIANTS = (
    ("float", "logits"),
    ("uint8-rgb", "logits"),
    ("uint8-rgb", "labels,logits"),
    ("uint8-rgb", "labels-full"),
    ("uint8-bgr", "labels,labels-full,confidence"),
)


def export(
    model: str,
    target: str,
    size: tuple[int, int],
    variant: tuple[str, str],
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


def measure(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Every row: model-only and end-to-end latency per model, backend, variant and thread count."""
    from edgeseg.bench import benchmark

    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = []
    for model in args.models:
        checkpoint = Path(checkpoints[model]) if model in checkpoints else None
        for target in BACKENDS:
            bundles = {
                v: export(model, target, tuple(args.size), v, checkpoint, args.num_classes, root) for v in VARIANTS
            }
            for threads in args.threads:
                timing = dict(threads=threads, warmup=args.warmup, iters=args.iters)
                model_only = benchmark(bundles[VARIANTS[0]], **timing)["latency_ms"]["p50"]
                for variant, bundle in bundles.items():
                    record = benchmark(bundle, boundary="end-to-end", image_size=FRAME, **timing)
                    end_to_end = record["latency_ms"]["p50"]
                    stream = benchmark(bundle, boundary="stream", image_size=FRAME, **timing)
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
                            "ratio": end_to_end / model_only,
                            "stream_fps": stream["fps"],
                            "stream_vs_model": stream["fps"] * model_only / 1000,
                        }
                    )
    return rows


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# Camera path: {FRAME[0]}×{FRAME[1]} frame → full-size label map (`benchmarks/camera.py`)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} cores, {machine['os']}, onnxruntime "
        f"{machine['packages'].get('onnxruntime')}, openvino {machine['packages'].get('openvino')}. "
        f"Model size {args.size[0]}×{args.size[1]}, p50 of {args.iters} runs after {args.warmup} warm-up. "
        "Model-only: the float bundle, normalised input → logits. End-to-end: `Segmenter.predict(rgb_frame)`. "
        "Stream: frames per second of `Segmenter.stream` over 720p frames held in memory (no decoding); "
        "stream × model is that FPS times the model-only latency (target ≥ 0.9).",
        "",
        "| model | weights | backend | threads | --input | --output | model-only ms | end-to-end ms | ratio "
        "| stream FPS | stream × model |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['backend']} | {r['threads']} | {r['input']} | {r['outputs']} | "
            f"{r['model_only_ms']:.1f} | {r['end_to_end_ms']:.1f} | {r['ratio']:.2f} | {r['stream_fps']:.1f} | "
            f"{r['stream_vs_model']:.2f} |"
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
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeseg-camera-") as scratch:
        rows = measure(args, Path(scratch))
    from edgeseg.bench.machine import machine_info

    machine = machine_info(None)
    RESULTS.mkdir(exist_ok=True)
    record = {"frame": FRAME, "machine": machine, "args": vars(args), "rows": rows}
    (RESULTS / "camera_720p.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "camera_720p.md").write_text(markdown(rows, machine, args))
    plot(rows, RESULTS / "camera_720p.png")
    print(markdown(rows, machine, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
