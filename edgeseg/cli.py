"""The ``edgeseg`` command line: models, export, predict, bench.

Heavy packages are imported inside each command, so ``predict`` and ``bench`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def cmd_models(args: argparse.Namespace) -> int:
    from edgeseg.models import count_macs, count_params, create, get_spec, list_models

    print(f"{'model':<20} {'family':<11} {'task':<14} {'params':>11} {'GMACs@512²':>11}  description")
    for name in list_models():
        spec = get_spec(name)
        model = create(name, num_classes=args.num_classes)
        gmacs = count_macs(model, (512, 512)) / 1e9
        print(
            f"{name:<20} {spec.family:<11} {spec.task:<14} {count_params(model):>11,} {gmacs:>11.2f}  "
            f"{spec.description}"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edgeseg.export import ExportRequest, export_bundle
    from edgeseg.imaging import parse_size

    request = ExportRequest(
        model=args.model,
        out=Path(args.out),
        target=args.target,
        input_size=parse_size(args.input_size),
        num_classes=args.num_classes,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        precision=args.precision,
        opset=args.opset,
        tolerance=args.tolerance,
        force=args.force,
        dynamic=args.dynamic,
    )
    out = export_bundle(request)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote {out} ({manifest['model']['weights']} weights, {manifest['export']['nodes']} ONNX nodes)")
    for name, meta in manifest["files"].items():
        print(f"  {name:<16} {meta['bytes'] / 1e6:8.2f} MB")
    print(f"parity vs PyTorch ({manifest['parity']['inputs']}):")
    for artifact, result in manifest["parity"]["results"].items():
        print(
            f"  {artifact:<12} {result['backend']:<12} max|d| {result['max_abs']:.2e}  mean|d| "
            f"{result['mean_abs']:.2e}  argmax agreement {result['argmax_agreement']:.4f}"
        )
    return 0


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from edgeseg.models import get_spec
    from edgeseg.models.hf_segformer import convert_checkpoint

    if get_spec(args.model).family != "segformer":
        raise ValueError(f"convert-checkpoint converts SegFormer checkpoints (segformer-b0..b5), not {args.model}")
    for note in convert_checkpoint(args.model, args.source, args.destination, args.to):
        print(f"  {note}")
    print(f"wrote {args.destination} ({args.to} format)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from edgeseg.image_io import read_image, write_label_png
    from edgeseg.runtime import load

    segmenter = load(args.bundle, backend=args.backend, threads=args.threads)
    labels = segmenter.predict(read_image(args.image))
    write_label_png(args.out, labels, colorize=args.color)
    classes = len(set(labels.ravel().tolist()))
    print(
        f"wrote {args.out}: {labels.shape[1]}x{labels.shape[0]} labels, {classes} classes present ({segmenter.backend})"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeseg.bench import benchmark, format_table

    records = []
    for bundle in args.bundles:
        for threads in args.threads or [None]:
            records.append(
                benchmark(
                    bundle,
                    backend=args.backend,
                    threads=threads,
                    warmup=args.warmup,
                    iters=args.iters,
                    boundary=args.boundary,
                )
            )
    print(format_table(records))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the models with params and GMACs at 512x512")
    models.add_argument("--num-classes", type=_positive_int, default=150)
    models.set_defaults(func=cmd_models)

    export = sub.add_parser("export", help="export a model to a self-describing bundle")
    export.add_argument("--model", required=True, help="a name from `edgeseg models`")
    export.add_argument("--checkpoint", help="official checkpoint (.pth); without it the weights are random")
    export.add_argument("--num-classes", type=_positive_int, default=150)
    export.add_argument(
        "--input-size", default="512x512", help="HEIGHTxWIDTH of the static graph (the example size with --dynamic)"
    )
    export.add_argument(
        "--dynamic", action="store_true", help="one graph for every height and width that is a multiple of 32"
    )
    export.add_argument("--target", default="onnxruntime", choices=["onnx", "onnxruntime", "openvino"])
    export.add_argument("--precision", default="fp32", choices=["fp32"])
    export.add_argument("--opset", type=int, default=18)
    export.add_argument("--tolerance", type=float, default=1e-4, help="parity gate: max abs logit difference")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    export.set_defaults(func=cmd_export)

    convert = sub.add_parser(
        "convert-checkpoint", help="SegFormer checkpoints: NVlabs/mmseg-0.x .pth <-> Hugging Face transformers"
    )
    convert.add_argument("--model", required=True, help="segformer-b0 ... segformer-b5")
    convert.add_argument("--to", required=True, choices=["hf", "nvlabs"], help="format to write")
    convert.add_argument("source", help="checkpoint in either format (.pth, .bin or .safetensors)")
    convert.add_argument("destination", help="hf: a folder (model.safetensors + config.json); nvlabs: a .pth file")
    convert.set_defaults(func=cmd_convert_checkpoint)

    predict = sub.add_parser("predict", help="segment one image with a bundle (no torch)")
    predict.add_argument("bundle")
    predict.add_argument("image")
    predict.add_argument("--out", required=True, help="PNG of class indices at the image's size")
    predict.add_argument("--color", action="store_true", help="write a colour palette PNG instead of indices")
    predict.add_argument("--backend", choices=["onnxruntime", "openvino"])
    predict.add_argument("--threads", type=_positive_int)
    predict.set_defaults(func=cmd_predict)

    bench = sub.add_parser("bench", help="latency and peak memory of bundles, in fresh torch-free processes")
    bench.add_argument("bundles", nargs="+", metavar="BUNDLE")
    bench.add_argument("--backend", choices=["onnxruntime", "openvino"])
    bench.add_argument("--threads", type=_positive_int, nargs="*", help="one or more thread counts")
    bench.add_argument("--warmup", type=_positive_int, default=10)
    bench.add_argument("--iters", type=_positive_int, default=50)
    bench.add_argument("--boundary", choices=["model", "end-to-end"], default="model")
    bench.add_argument("--json", help="also write the records as JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"edgeseg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
