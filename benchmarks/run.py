"""Benchmark models in PyTorch eager, ONNX Runtime and OpenVINO with one protocol; write Markdown + JSON.

    python benchmarks/run.py --models afformer-tiny [--size 512x512] [--threads 1 2]

Every latency is also read as a fraction of this machine's compute ceiling, measured in the same run as
the best fp32 square-matmul throughput at the same thread count: fraction = 2 × MACs / latency / FLOP/s.
Runtimes are measured by `edgeseg.bench` in fresh torch-free processes; PyTorch eager in a fresh process
of its own with the same warm-up / iteration protocol.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n×n matmul with torch at ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def eager_worker(model_name: str, size: tuple[int, int], threads: int, warmup: int, iters: int) -> dict:
    """Time the PyTorch eager model (as users run it, un-fused) in this process."""
    import torch

    from edgeseg.bench.stats import summarize
    from edgeseg.bench.timing import time_callable
    from edgeseg.models import create

    torch.set_num_threads(threads)
    model = create(model_name)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        seconds = time_callable(lambda: model(x), warmup=warmup, iters=iters)
    peak_kib = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    return {"latency_ms": summarize(seconds), "peak_rss_mb": peak_kib / 1024}


def run_eager(model_name: str, size: tuple[int, int], threads: int, warmup: int, iters: int) -> dict:
    """``eager_worker`` in a fresh process."""
    args = [sys.executable, __file__, "--eager-worker", model_name, f"{size[0]}x{size[1]}", str(threads)]
    args += ["--warmup", str(warmup), "--iters", str(iters)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"eager worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export(model_name: str, size: tuple[int, int], target: str, folder: Path) -> Path:
    from edgeseg.export import ExportRequest, export_bundle

    return export_bundle(
        ExportRequest(model=model_name, out=folder / f"{model_name}-{target}", target=target, input_size=size)
    )


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"# {', '.join(report['models'])} at {report['size']}",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores; ISA: "
        f"{', '.join(machine['isa'])}. Run on {report['date']}.",
        f"Compute ceiling (best fp32 {report['matmul_n']}² matmul, torch): "
        + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in report["ceiling_gflops"].items())
        + ".",
        "Timing boundary: model only (normalised input → logits at stride 8; no pre/post-processing) unless the "
        "row says end-to-end (uint8 720×1280 image → label map: resize, normalise, infer, upsample, argmax).",
        f"Protocol: {report['warmup']} warm-up + {report['iters']} timed runs; runtimes in fresh torch-free "
        "processes, peak RSS (VmHWM) in a separate fresh process; eager peak includes torch itself (~220 MB).",
        "Fraction = 2 × MACs / mean latency / matmul FLOP/s at the same thread count.",
        "",
        "| model | runtime | boundary | threads | mean ms | std | p50 | p90 | p99 | FPS | fraction of ceiling "
        "| peak RSS MB | load s | first ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lat = row["latency_ms"]
        fraction = "–" if row["fraction"] is None else fmt(row["fraction"], 2)
        load = fmt(row["load_s"], 2) if "load_s" in row else "–"
        first = fmt(row["first_inference_ms"]) if "first_inference_ms" in row else "–"
        lines.append(
            f"| {row['model']} | {row['runtime']} | {row['boundary']} | {row['threads']} | {fmt(lat['mean'])} | "
            f"{fmt(lat['std'])} | {fmt(lat['p50'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} | "
            f"{fmt(1000 / lat['mean'])} | {fraction} | {fmt(row['peak_rss_mb'], 0)} | {load} | {first} |"
        )
    lines.append("")
    lines.append(
        "MACs (conv + linear + matmul, FLOPs/2, un-fused model): "
        + ", ".join(f"{m} {v / 1e9:.2f} G" for m, v in report["macs"].items())
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["afformer-tiny"])
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--name", help="results file stem (default: the model names)")
    parser.add_argument("--eager-worker", nargs=3, metavar=("MODEL", "SIZE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from edgeseg.export import parse_size

    if args.eager_worker:
        name, size, threads = args.eager_worker
        print(json.dumps(eager_worker(name, parse_size(size), int(threads), args.warmup, args.iters)))
        return 0

    from edgeseg.bench import benchmark
    from edgeseg.bench.machine import machine_info
    from edgeseg.models import count_macs, create

    size = parse_size(args.size)
    ceiling = {t: matmul_gflops(t) for t in args.threads}
    report = {
        "models": args.models,
        "size": args.size,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(max(args.threads)),
        "matmul_n": 2048,
        "ceiling_gflops": ceiling,
        "warmup": args.warmup,
        "iters": args.iters,
        "macs": {},
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            macs = count_macs(create(name), size)
            report["macs"][name] = macs
            bundles = {target: export(name, size, target, Path(tmp)) for target in ("onnxruntime", "openvino")}
            for threads in args.threads:
                rows = [{"runtime": "pytorch-eager", **run_eager(name, size, threads, args.warmup, args.iters)}]
                for target, bundle in bundles.items():
                    record = benchmark(bundle, threads=threads, warmup=args.warmup, iters=args.iters)
                    rows.append({"runtime": target, **record})
                for row in rows:
                    row.update(model=name, threads=threads, boundary=row.get("boundary", "model"))
                    row["fraction"] = 2 * macs / (row["latency_ms"]["mean"] / 1e3) / (ceiling[threads] * 1e9)
                report["rows"].extend(rows)
            for target, bundle in bundles.items():
                threads = max(args.threads)
                record = benchmark(bundle, threads=threads, warmup=args.warmup, iters=args.iters, boundary="end-to-end")
                report["rows"].append(
                    {"runtime": target, **record, "model": name, "threads": threads, "fraction": None}
                )
    stem = args.name or "_".join(args.models)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
