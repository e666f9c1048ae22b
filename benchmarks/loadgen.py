"""MLPerf LoadGen SingleStream and Offline runs of the headline models on ONNX Runtime and OpenVINO.

    python benchmarks/loadgen.py [--models afformer-tiny ...] [--size 512x512] [--threads 2] [--min-duration 10]

Exports each model once per target (random weights: latency does not depend on them) and runs each scenario
through ``edgeseg.bench.benchmark`` in fresh torch-free processes: SingleStream on the Segmenter (latency
hint), Offline on the backend's throughput mode (OpenVINO THROUGHPUT hint + AsyncInferQueue, ONNX Runtime
parallel one-thread sessions). Writes ``results/loadgen_<size>.md`` and ``.json`` with the machine.

Runs are far shorter than MLPerf's rules (600 s and 1024 queries / 24576 samples per run): they are not
compliant MLPerf results, and the file says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import edgeseg

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("afformer-tiny", "segformer-b0", "umixformer-b0", "cgrseg-t", "cloformer-xxs-seg")
TARGETS = {"onnx": "onnxruntime", "openvino": "openvino"}  # bundle target → backend it runs on
SCENARIOS = ("single-stream", "offline")


def export(model: str, size: tuple[int, int], target: str, folder: Path) -> Path:
    """A static fp32 bundle of ``model`` at ``size`` for ``target``."""
    from edgeseg.export import ExportRequest, export_bundle

    out = folder / f"{model}-{size[0]}x{size[1]}-{target}"
    return export_bundle(ExportRequest(model=model, out=out, target=target, input_size=size))


def markdown(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results file: title, protocol, one table per scenario."""
    from edgeseg.bench.special_tables import format_scenario_table

    machine = records[0]["machine"]
    lines = [
        f"# MLPerf LoadGen SingleStream and Offline: {', '.join(args.models)} at {args.size}",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores ({machine['usable_cores']} "
        f"usable), ISA {', '.join(machine['isa'])}, {machine['mem_total_mb'] / 1024:.0f} GiB, {machine['os']} "
        f"{machine['kernel']}, Python {machine['python']}, onnxruntime {machine['packages']['onnxruntime']}, "
        f"openvino {machine['packages']['openvino']}; edgeseg {edgeseg.__version__}. Run on {args.date}.",
        "",
        f"Protocol: random weights, fp32 static {args.size} bundles, {args.threads} threads, {args.warmup} warm-up "
        f"samples, then LoadGen with min duration {args.min_duration:g} s and min {args.min_queries} queries per "
        "run. These durations are below MLPerf's 600 s rule (and its 1024-query SingleStream / 24576-sample "
        "Offline minimums): the results are not compliant MLPerf results, only LoadGen-scheduled measurements. "
        "SingleStream runs each query on the Segmenter (latency hint); Offline runs on the throughput mode "
        "(OpenVINO THROUGHPUT hint + AsyncInferQueue; ONNX Runtime one single-thread session per thread). "
        f"Load average (1 min, `os.getloadavg`) {args.load_before:.2f} just before the run (other work on the "
        f"cores) and {args.load_after:.2f} at its end (the run's own threads included).",
        "",
    ]
    for scenario in SCENARIOS:
        rows = [r for r in records if r["scenario"]["name"] == scenario]
        if rows:
            lines += [f"## {scenario}", "", format_scenario_table(rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-duration", type=float, default=10.0, help="seconds per LoadGen run")
    parser.add_argument("--min-queries", type=int, default=100)
    args = parser.parse_args()
    args.date = time.strftime("%Y-%m-%d")

    from edgeseg.bench import benchmark
    from edgeseg.bench.scenarios import ScenarioSettings
    from edgeseg.imaging import parse_size

    size = parse_size(args.size)
    args.load_before = os.getloadavg()[0]
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            for target, backend in TARGETS.items():
                bundle = export(model, size, target, Path(folder))
                for scenario in SCENARIOS:
                    settings = ScenarioSettings(scenario, args.min_duration, args.min_queries)
                    record = benchmark(bundle, backend=backend, threads=args.threads, warmup=args.warmup,
                                       scenario=settings)  # fmt: skip
                    record["bundle"] = Path(record["bundle"]).name
                    block = record["scenario"]
                    print(f"{model} {backend} {scenario}: {block['validity']}, {record['fps']:.1f} samples/s, "
                          f"p90 {block['latency_ms']['p90']:.1f} ms", flush=True)  # fmt: skip
                    records.append(record)
    args.load_after = os.getloadavg()[0]
    stem = f"loadgen_{args.size}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(args), "records": records}, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(records, args))
    print(f"wrote {RESULTS / stem}.md")


if __name__ == "__main__":
    main()
