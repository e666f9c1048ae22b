"""Compatibility matrix: every segmentation model through the bundle path, per target and size, with parity.

    python benchmarks/export_matrix.py [--models cgrseg-t cloformer-xxs-seg] [--sizes 512x512 352x480]

Each cell is a real `edgeseg export` (random weights, fp32) whose parity gate (max abs logit difference
≤ 1e-4 against PyTorch, OpenVINO at f32) passed or failed; the table gives the worst difference over the
bundle's artifacts (model.onnx in ONNX Runtime plus the target's own artifact).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("onnxruntime", "openvino")


def export_cell(model: str, size: tuple[int, int], target: str, folder: Path, dynamic: bool) -> dict[str, Any]:
    """Export one bundle; report parity per artifact or the error."""
    from edgeseg.bundle import read_bundle
    from edgeseg.export import ExportRequest, export_bundle

    out = folder / f"{model}-{size[0]}x{size[1]}-{target}"
    started = time.perf_counter()
    try:
        bundle = export_bundle(ExportRequest(model=model, out=out, target=target, input_size=size, dynamic=dynamic))
    except Exception as error:  # a failed cell is a result of the matrix, not a crash
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    manifest = read_bundle(bundle).manifest
    return {
        "ok": manifest.parity["passed"],
        "seconds": round(time.perf_counter() - started, 1),
        "nodes": manifest.export["nodes"],
        "max_abs": {k: v["max_abs"] for k, v in manifest.parity["results"].items()},
        "argmax_agreement": {k: v["argmax_agreement"] for k, v in manifest.parity["results"].items()},
        "sizes_checked": list(next(iter(manifest.parity["results"].values()))["by_size"]),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Export matrix",
        "",
        f"Run on {report['date']}, {report['machine']}; edgeseg {report['edgeseg']}. fp32, random weights, "
        "parity gate: max abs logit difference ≤ 1e-4 against PyTorch eager (OpenVINO with "
        "INFERENCE_PRECISION_HINT=f32). Cell: worst max abs difference over the bundle's artifacts (ONNX Runtime "
        "on model.onnx and the target's artifact), ONNX nodes, export seconds.",
        "",
        "| model | sizes checked | " + " | ".join(TARGETS) + " |",
        "|---|---|" + "---|" * len(TARGETS),
    ]
    for row in report["rows"]:
        cells = []
        for target in TARGETS:
            cell = row[target]
            if cell["ok"]:
                cells.append(f"✅ {max(cell['max_abs'].values()):.1e} ({cell['nodes']} nodes, {cell['seconds']} s)")
            else:
                cells.append(f"❌ {cell.get('error', 'parity gate failed')}")
        checked = next((row[t]["sizes_checked"] for t in TARGETS if row[t]["ok"]), [row["size"]])
        lines.append(f"| {row['model']} | {', '.join(checked)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="default: every segmentation model")
    parser.add_argument("--sizes", nargs="+", default=["512x512", "352x480"])
    parser.add_argument("--dynamic", action="store_true", help="one dynamic graph per cell (models that allow it)")
    parser.add_argument("--name", default="export_matrix")
    args = parser.parse_args()

    import edgeseg
    from edgeseg.bench.machine import machine_info
    from edgeseg.imaging import parse_size
    from edgeseg.models import get_spec, list_models

    names = args.models or [n for n in list_models() if get_spec(n).task == "segmentation"]
    machine = machine_info(None)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{machine['cpu_model']}, {machine['logical_cores']} cores",
        "edgeseg": edgeseg.__version__,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for text in args.sizes:
                size = parse_size(text)
                row = {"model": name, "size": text}
                row.update({t: export_cell(name, size, t, Path(tmp), args.dynamic) for t in TARGETS})
                report["rows"].append(row)
                print(markdown(report).splitlines()[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    return 0 if all(row[t]["ok"] for row in report["rows"] for t in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
