"""Benchmark models in PyTorch eager, ONNX Runtime and OpenVINO with one protocol; write Markdown + JSON.

    python benchmarks/run.py table --models afformer-tiny [--size 512x512] [--threads 1 2]
    python benchmarks/run.py sweep --models afformer-tiny segformer-b0 --sides 256 512 768 1024

Every latency is also read as a fraction of this machine's compute ceiling, measured in the same run as
the best fp32 square-matmul throughput (torch) at the same thread count: fraction = 2 × MACs / latency /
FLOP/s. The ceiling is torch's sgemm, not the hardware's peak, so a backend with faster kernels can exceed 1.
Runtimes are measured by `edgeseg.bench` in fresh torch-free processes; PyTorch eager in a fresh process of
its own with the same warm-up / iteration protocol.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("onnxruntime", "openvino")
MATMUL_N = 2048


def matmul_gflops(threads: int, n: int = MATMUL_N, repeats: int = 10) -> float:
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


def largest_softmax_mb(model_name: str, size: tuple[int, int]) -> float:
    """Size of the largest softmax output (attention scores) one forward materialises, in MB."""
    import torch
    from torch.overrides import TorchFunctionMode

    from edgeseg.models import create

    class SoftmaxSizes(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.largest = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if getattr(func, "__name__", "") == "softmax" and isinstance(out, torch.Tensor):
                self.largest = max(self.largest, out.numel() * out.element_size())
            return out

    model = create(model_name)
    with torch.no_grad(), SoftmaxSizes() as sizes:
        model(torch.zeros(1, 3, *size))
    return sizes.largest / 1e6


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
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    return {"latency_ms": summarize(seconds), "peak_rss_mb": peak_kib / 1024}


def run_eager(model_name: str, size: tuple[int, int], threads: int, warmup: int, iters: int) -> dict:
    """``eager_worker`` in a fresh process."""
    args = [sys.executable, __file__, "eager-worker", model_name, f"{size[0]}x{size[1]}", str(threads)]
    args += ["--warmup", str(warmup), "--iters", str(iters)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"eager worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export(model_name: str, size: tuple[int, int], target: str, folder: Path) -> Path:
    """A static fp32 bundle of ``model_name`` at ``size`` (random weights: latency does not depend on them)."""
    from edgeseg.export import ExportRequest, export_bundle

    out = folder / f"{model_name}-{size[0]}x{size[1]}-{target}"
    return export_bundle(ExportRequest(model=model_name, out=out, target=target, input_size=size))


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table."""
    return [f"| {' | '.join(line)} |" for line in [columns, ["---"] * len(columns), *rows]]


def header(report: dict[str, Any]) -> list[str]:
    """The lines every results file starts with: machine, ceiling, protocol."""
    machine = report["machine"]
    return [
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores; ISA: "
        f"{', '.join(machine['isa'])}; {machine['mem_total_mb'] / 1024:.0f} GiB. Run on {report['date']} "
        f"(onnxruntime {machine['packages'].get('onnxruntime')}, openvino {machine['packages'].get('openvino')}).",
        f"Compute ceiling (best fp32 {MATMUL_N}² matmul, torch): "
        + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in report["ceiling_gflops"].items())
        + ".",
        "Timing boundary: model only (normalised input → logits at the native stride; no pre/post-processing) "
        "unless the row says end-to-end (uint8 720×1280 image → label map: resize, normalise, infer, upsample, "
        "argmax; random weights give noisy logits, the worst case for the upsample + argmax).",
        f"Protocol: {report['warmup']} warm-up + {report['iters']} timed runs; runtimes in fresh torch-free "
        "processes, peak RSS (VmHWM) in a separate fresh process; eager peak includes torch itself (~220 MB). "
        "Fraction = 2 × MACs / mean latency / matmul FLOP/s at the same thread count.",
    ]


def table_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {', '.join(report['models'])} at {report['size']}", "", *header(report), ""]
    columns = "model runtime boundary threads mean_ms std p50 p90 p99 FPS fraction_of_ceiling peak_RSS_MB load_s"
    rows = []
    for row in report["rows"]:
        lat = row["latency_ms"]
        rows.append(
            [row["model"], row["runtime"], row["boundary"], str(row["threads"])]
            + [fmt(lat[k]) for k in ("mean", "std", "p50", "p90", "p99")]
            + [fmt(1000 / lat["mean"]), fmt(row["fraction"], 2), fmt(row["peak_rss_mb"], 0)]
            + [fmt(row.get("load_s"), 2), fmt(row.get("first_inference_ms"))]
        )
    lines += markdown_table([*(c.replace("_", " ") for c in columns.split()), "first ms"], rows)
    lines += [
        "",
        "MACs (conv + linear + matmul, FLOPs/2, un-fused model): "
        + ", ".join(f"{m} {v / 1e9:.2f} G" for m, v in report["macs"].items()),
    ]
    return "\n".join(lines) + "\n"


def run_table(args: argparse.Namespace, report: dict[str, Any], workdir: Path) -> str:
    """Every model at one size: eager, ORT and OpenVINO at each thread count, plus end-to-end rows."""
    from edgeseg.bench import benchmark
    from edgeseg.imaging import parse_size
    from edgeseg.models import count_macs, create

    size = parse_size(args.size)
    report.update(size=args.size, rows=[], macs={})
    ceiling = report["ceiling_gflops"]
    for name in args.models:
        macs = report["macs"][name] = count_macs(create(name), size)
        bundles = {target: export(name, size, target, workdir) for target in BACKENDS}
        for threads in args.threads:
            rows = [{"runtime": "pytorch-eager", **run_eager(name, size, threads, args.warmup, args.iters)}]
            rows += [
                {"runtime": target, **benchmark(bundle, threads=threads, warmup=args.warmup, iters=args.iters)}
                for target, bundle in bundles.items()
            ]
            for row in rows:
                row.update(model=name, threads=threads, boundary=row.get("boundary", "model"))
                row["fraction"] = 2 * macs / (row["latency_ms"]["mean"] / 1e3) / (ceiling[threads] * 1e9)
            report["rows"].extend(rows)
        threads = max(args.threads)
        for target, bundle in bundles.items():
            record = benchmark(bundle, threads=threads, warmup=args.warmup, iters=args.iters, boundary="end-to-end")
            report["rows"].append({"runtime": target, **record, "model": name, "threads": threads, "fraction": None})
    return table_markdown(report)


def fit_exponent(pixels: list[float], latency: list[float]) -> float:
    """Slope of log(latency) against log(pixels): 1 = linear in pixels, 2 = quadratic."""
    import numpy as np

    return float(np.polyfit(np.log(pixels), np.log(latency), 1)[0])


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """Latency against pixels on log-log axes, one line per model and backend, with the fitted exponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for key, fit in report["exponents"].items():
        rows = [r for r in report["rows"] if f"{r['model']} / {r['runtime']}" == key]
        ax.plot(
            [r["pixels"] for r in rows],
            [r["latency_ms"]["mean"] for r in rows],
            marker="o",
            label=f"{key}: latency ∝ pixels^{fit:.2f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input pixels (H × W)")
    ax.set_ylabel(f"mean latency, ms ({report['threads']} threads)")
    ax.set_title(f"Latency vs resolution ({report['machine']['cpu_model']}, fp32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def sweep_markdown(report: dict[str, Any], plot_name: str) -> str:
    lines = [f"# Resolution sweep: {', '.join(report['models'])}", "", *header(report), ""]
    lines += [
        "Static graph per size; model-only boundary; "
        f"{report['threads']} threads. Largest attention = biggest softmax output one forward materialises "
        "(fp32, batch 1): quadratic-attention models grow with pixels², AFFormer's linear attention does not.",
        "",
    ]
    columns = ["model", "size", "runtime", "mean ms", "p50", "p90", "peak RSS MB", "GMACs", "fraction"]
    rows = [
        [r["model"], r["size"], r["runtime"]]
        + [fmt(r["latency_ms"][k]) for k in ("mean", "p50", "p90")]
        + [fmt(r["peak_rss_mb"], 0), f"{r['macs'] / 1e9:.2f}", fmt(r["fraction"], 2), fmt(r["attention_mb"], 1)]
        for r in report["rows"]
    ]
    lines += markdown_table([*columns, "largest attention MB"], rows)
    lines += ["", "Fitted exponent of latency against pixels (log-log least squares):", ""]
    lines += [f"- {key}: {fit:.2f}" for key, fit in report["exponents"].items()]
    lines += ["", f"![latency vs pixels]({plot_name})"]
    return "\n".join(lines) + "\n"


def run_sweep(args: argparse.Namespace, report: dict[str, Any], workdir: Path, stem: str) -> str:
    """Each model at each square side: latency and peak RSS on every backend, one static bundle per size."""
    from edgeseg.bench import benchmark
    from edgeseg.models import count_macs, create

    threads = max(args.threads)
    ceiling = report["ceiling_gflops"][threads] * 1e9
    report.update(threads=threads, sides=args.sides, rows=[], exponents={})
    for name in args.models:
        model = create(name)
        for side in args.sides:
            size = (side, side)
            macs = count_macs(model, size)
            attention = largest_softmax_mb(name, size)
            bundle = export(name, size, "onnxruntime", workdir)
            for backend in BACKENDS:
                record = benchmark(bundle, backend=backend, threads=threads, warmup=args.warmup, iters=args.iters)
                seconds = record["latency_ms"]["mean"] / 1e3
                record.update(
                    runtime=backend,
                    size=f"{side}x{side}",
                    pixels=side * side,
                    macs=macs,
                    fraction=2 * macs / seconds / ceiling,
                    attention_mb=attention,
                )
                report["rows"].append(record)
        for backend in BACKENDS:
            rows = [r for r in report["rows"] if r["model"] == name and r["runtime"] == backend]
            report["exponents"][f"{name} / {backend}"] = fit_exponent(
                [r["pixels"] for r in rows], [r["latency_ms"]["mean"] for r in rows]
            )
    plot_sweep(report, RESULTS / f"{stem}.png")
    return sweep_markdown(report, f"{stem}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("table", "sweep"):
        p = sub.add_parser(name)
        p.add_argument("--models", nargs="+", default=["afformer-tiny"])
        p.add_argument("--threads", type=int, nargs="+", default=[1, 2] if name == "table" else [2])
        p.add_argument("--warmup", type=int, default=20 if name == "table" else 5)
        p.add_argument("--iters", type=int, default=100 if name == "table" else 30)
        p.add_argument("--name", help="results file stem")
        if name == "table":
            p.add_argument("--size", default="512x512")
        else:
            p.add_argument("--sides", type=int, nargs="+", default=[256, 512, 768, 1024])
    worker = sub.add_parser("eager-worker")
    worker.add_argument("model")
    worker.add_argument("size")
    worker.add_argument("threads", type=int)
    worker.add_argument("--warmup", type=int, required=True)
    worker.add_argument("--iters", type=int, required=True)
    args = parser.parse_args()

    from edgeseg.imaging import parse_size

    if args.command == "eager-worker":
        print(json.dumps(eager_worker(args.model, parse_size(args.size), args.threads, args.warmup, args.iters)))
        return 0

    from edgeseg.bench.machine import machine_info

    stem = args.name or ("_".join(args.models) + ("_sweep" if args.command == "sweep" else ""))
    report: dict[str, Any] = {
        "models": args.models,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(max(args.threads)),
        "ceiling_gflops": {t: matmul_gflops(t) for t in args.threads},
        "warmup": args.warmup,
        "iters": args.iters,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.command == "table":
            markdown = run_table(args, report, Path(tmp))
        else:
            markdown = run_sweep(args, report, Path(tmp), stem)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
