"""fp32 / fp16 / bf16 / int8 on ONNX Runtime, OpenVINO and TensorRT-ready graphs, on trained models.

    python benchmarks/precision.py --models afformer-tiny [--size 512x512] [--threads 1 2] [--iters 50]
        [--rounds 3] [--stem NAME]

For each model: make a synthetic set (``edgeseg data synthetic``) and fine-tune on it (``edgeseg train``),
unless ``benchmarks/work`` already holds them; export every target × precision with the checkpoint, the
set's train split as calibration and its val split for the parity ladder (``--auto-exclude`` for int8);
evaluate each bundle's mIoU on the whole val split; time it at each thread count in fresh torch-free
processes, in ``--rounds`` rounds that each time every build of the model in turn (a shared machine's
slow spells then hit all builds of a round alike), keeping each build's median round. Writes
``results/precision_<size>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import fmt, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"
BUILDS = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "fp16"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("tensorrt", "fp16"),
    ("tensorrt", "int8"),
)


def edgeseg(*args: str) -> None:
    """Run the edgeseg CLI in a fresh process (so training gets a clean torch)."""
    subprocess.run([sys.executable, "-m", "edgeseg", *args], check=True)


def dataset(size: str, count: int) -> Path:
    folder = WORK / f"synthetic-{size}-{count}"
    if not (folder / "dataset.json").is_file():
        edgeseg("data", "synthetic", "--out", str(folder), "--count", str(count), "--size", size, "--force")
    return folder


def trained(model: str, data: Path) -> tuple[Path, dict[str, Any]]:
    """The model fine-tuned on ``data`` with `edgeseg train`'s defaults (trained once, then reused)."""
    import torch

    checkpoint = WORK / f"{model}-{data.name}.pth"
    if not checkpoint.is_file():
        edgeseg("train", "--model", model, "--data", str(data), "--out", str(checkpoint))
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True).get("meta", {})
    return checkpoint, meta


def export(model: str, target: str, precision: str, size: str, checkpoint: Path, data: Path) -> dict[str, Any]:
    """Export one bundle; returns its parity entry, or the failure."""
    from edgeseg.data import open_dataset
    from edgeseg.export import ExportRequest, ParityError, export_bundle
    from edgeseg.imaging import parse_size

    out = WORK / "bundles" / f"{model}-{target}-{precision}"
    request = ExportRequest(
        model=model,
        out=out,
        target=target,
        precision=precision,
        input_size=parse_size(size),
        num_classes=len(open_dataset(data).classes),
        checkpoint=checkpoint,
        calib=data,
        parity_data=data,
        auto_exclude=precision == "int8",
        force=True,
    )
    started = time.perf_counter()
    try:
        export_bundle(request)
    except ParityError as error:
        return {"ok": False, "error": str(error), "seconds": round(time.perf_counter() - started, 1)}
    manifest = json.loads((out / "manifest.json").read_text())
    result = manifest["parity"]["results"][target]
    return {
        "ok": True,
        "bundle": str(out),
        "seconds": round(time.perf_counter() - started, 1),
        "run_with": result["run_with"],
        "ladder": result["ladder"],
        "gates": result["gates"],
        "kept_float": manifest["parity"].get("auto_exclude", {}).get("kept_float", []),
        "precision_details": manifest["export"]["precision"],
        "encoder_layout": manifest["export"].get("encoder_layout"),
    }


def evaluate_row(row: dict[str, Any], data: Path) -> None:
    """Add the val-split mIoU to an exported row."""
    from edgeseg.evaluate import evaluate

    if row["ok"] and row["target"] != "tensorrt":
        row["eval"] = evaluate(row["bundle"], data, split="val")


def time_rows(rows: list[dict[str, Any]], threads: list[int], iters: int, rounds: int) -> None:
    """Latency of each timed row at each thread count: the run with the median mean of ``rounds`` rounds.

    Each round times every row once, so slow spells of a shared machine are spread over the rows instead of
    landing on one of them; ``rounds_mean`` keeps every round's mean.
    """
    from edgeseg.bench import benchmark

    timed = [r for r in rows if r["ok"] and r["target"] != "tensorrt"]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for t in threads:
            for i, row in enumerate(timed):
                latency = benchmark(row["bundle"], threads=t, warmup=10, iters=iters)["latency_ms"]
                runs.setdefault((i, t), []).append(latency)
    for (i, t), results in runs.items():
        ordered = sorted(results, key=lambda lat: lat["mean"])
        timed[i].setdefault("latency", {})[str(t)] = {
            **ordered[len(ordered) // 2],
            "rounds_mean": [lat["mean"] for lat in results],
        }


def speedups(rows: list[dict[str, Any]]) -> None:
    """Latency of each row relative to fp32 on the same backend and thread count."""
    baseline = {(r["model"], r["target"]): r for r in rows if r["precision"] == "fp32" and "latency" in r}
    for row in rows:
        base = baseline.get((row["model"], row["target"]))
        if base and "latency" in row:
            row["speedup"] = {
                t: base["latency"][t]["mean"] / lat["mean"] for t, lat in row["latency"].items() if t in base["latency"]
            }


def to_markdown(report: dict[str, Any]) -> str:
    from run import header

    lines = [f"# Precision: {', '.join(report['models'])} at {report['size']}", "", *header(report), ""]
    for model, meta in report["training"].items():
        lines.append(
            f"- {model}: fine-tuned on {meta['data']} by `edgeseg train` (defaults): val mIoU "
            f"{meta.get('val_miou', float('nan')):.3f} after {meta.get('seconds', float('nan')):.0f} s."
        )
    lines += [
        "",
        "Ladder: against PyTorch fp32 on the val images (8) through the bundle's pre-processing. "
        "val mIoU: `edgeseg eval` on the whole val split. TensorRT rows: graph checked in ONNX Runtime CPU "
        "(no TensorRT here), no latency. float: nodes the int8 recipe keeps in float + nodes `--auto-exclude` "
        "kept. layout: the encoder formulation the export chose (AFFormer; – for models with one). "
        f"Latency: mean of the median of {report.get('rounds', 1)} rounds, each timing every build in turn "
        "(all rounds' means in the .json).",
        "",
    ]
    threads = report["threads"]
    columns = ["model", "target", "precision", "gate", "agreement", "mIoU vs ref", "boundary F", "mIoU drop pt"]
    columns += ["val mIoU"] + [f"{t} thr ms" for t in threads] + [f"{t} thr ×fp32" for t in threads]
    columns += ["float: recipe + auto", "layout"]
    body = []
    for r in report["rows"]:
        if not r["ok"]:
            body.append([r["model"], r["target"], r["precision"], "FAIL: " + r["error"][:160]] + [""] * 9)
            continue
        ladder = r["ladder"]
        body.append(
            [r["model"], r["target"], r["precision"], "pass" if r["gates"] else "not gated"]
            + [fmt(ladder["agreement"], 4), fmt(ladder["miou_vs_reference"], 4), fmt(ladder["boundary_f"], 4)]
            + [fmt(ladder.get("miou_drop"), 2), fmt(r.get("eval", {}).get("miou"), 4)]
            + [fmt(r.get("latency", {}).get(str(t), {}).get("mean")) for t in threads]
            + [fmt(r.get("speedup", {}).get(str(t)), 2) for t in threads]
            + [f"{len(r['precision_details'].get('recipe_float', []))} + {len(r['kept_float'])}"]
            + [r.get("encoder_layout") or "–"]
        )
    columns = columns[: len(body[0])] if body else columns
    return "\n".join([*lines, *markdown_table(columns, body)]) + "\n"


def write(report: dict[str, Any], stem: str) -> None:
    """results/<stem>.json and .md, with speed-ups against fp32."""
    speedups(report["rows"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / f"{stem}.md").write_text(to_markdown(report))


def main() -> int:
    from edgeseg.bench.machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["afformer-tiny"])
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--count", type=int, default=400, help="synthetic images (train + val)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; each build keeps its median")
    parser.add_argument("--only", nargs="*", help="TARGET:PRECISION builds to run (default: all)")
    parser.add_argument("--stem", help="results file name without extension (default: precision_<side>)")
    args = parser.parse_args()

    data = dataset(args.size, args.count)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "models": args.models,
        "size": args.size,
        "threads": args.threads,
        "warmup": 10,
        "iters": args.iters,
        "rounds": args.rounds,
        "machine": machine_info(None),
        "ceiling_gflops": {},
        "training": {},
        "rows": [],
    }
    from run import matmul_gflops

    report["ceiling_gflops"] = {str(t): matmul_gflops(t) for t in args.threads}
    builds = [b for b in BUILDS if not args.only or f"{b[0]}:{b[1]}" in args.only]
    stem = args.stem or f"precision_{args.size.split('x')[0]}"
    for model in args.models:
        checkpoint, meta = trained(model, data)
        report["training"][model] = {"data": data.name, **{k: meta.get(k) for k in ("val_miou", "seconds", "steps")}}
        rows = []
        for target, precision in builds:
            row = {"model": model, "target": target, "precision": precision}
            row.update(export(model, target, precision, args.size, checkpoint, data))
            evaluate_row(row, data)
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("model", "target", "precision", "ok", "seconds")}), flush=True)
        time_rows(rows, args.threads, args.iters, args.rounds)
        report["rows"] += rows
        write(report, stem)  # after every model, so a long run keeps what it finished
    print((RESULTS / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
