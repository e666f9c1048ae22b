"""The ``edgeseg`` command line: models, data, train, export, lint, convert-checkpoint, predict, eval, bench.

Heavy packages are imported inside each command, so ``predict``, ``eval`` and ``bench`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeseg.manifest import PRECISIONS, TARGETS
from edgeseg.remote.options import add_remote_arguments, runs_remotely
from edgeseg.runtimes import BACKENDS

# Label PNGs hold 16-bit class indices.
MAX_CLASSES = 65536
MIN_OPSET = 18
# edgeseg.models.attention.HEAD_ATTENTION_KINDS, written out so that the CLI imports no torch.
HEAD_ATTENTION_CHOICES = ("se", "cbam", "ca")
# The presets of edgeseg/class_presets.json (edgeseg.classes.presets()), written out to keep --help cheap.
CLASS_PRESETS = ("ade20k", "cityscapes", "voc", "coco-stuff")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _threads(text: str) -> int:
    """A thread count the runtimes accept (see :func:`edgeseg.runtimes.base.check_threads`)."""
    from edgeseg.runtimes.base import check_threads

    try:
        return check_threads(_positive_int(text)) or 1
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _num_classes(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"{text} classes is more than the {MAX_CLASSES} that label maps can hold")
    return value


def _seed(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"seed {text} is not between 0 and 2**32 - 1")
    return value


def _opset(text: str) -> int:
    """An ONNX opset edgeseg exports: 18 up to the newest the installed onnx package knows."""
    value = _whole_number(text)
    try:
        from onnx.defs import onnx_opset_version
    except ImportError:
        newest = None
    else:
        newest = onnx_opset_version()
    if value < MIN_OPSET or (newest is not None and value > newest):
        raise argparse.ArgumentTypeError(f"opset {text} is not between {MIN_OPSET} and {newest or 'the newest'}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _fraction(text: str) -> float:
    value = _finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (exclusive)")
    return value


def _size(text: str) -> str:
    """A HEIGHTxWIDTH text, checked here and parsed by the command."""
    from edgeseg.imaging import parse_size

    try:
        parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _gate(text: str) -> str:
    """A RUNG=VALUE parity gate, checked here and parsed by the command."""
    from edgeseg.ladder import parse_gates

    try:
        parse_gates([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _write_json(path: str | None, data: object) -> None:
    """Also write ``data`` as JSON to ``path`` when one was given (``--json``)."""
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


def cmd_models(args: argparse.Namespace) -> int:
    from edgeseg.catalog import CATALOG_CLASSES, build_catalog, read_catalog

    # the shipped catalog is torch-free and instant (a test keeps it equal to the registry); other heads need torch
    if args.num_classes == CATALOG_CLASSES:
        entries = read_catalog()
        unknown = sorted(set(args.names) - {e["name"] for e in entries})
        if unknown:
            raise ValueError(f"no model named {', '.join(unknown)}; `edgeseg models` lists them all")
        entries = [e for e in entries if not args.names or e["name"] in args.names]
    else:
        entries = build_catalog(args.num_classes, args.names or None)["models"]
    print(f"{'model':<20} {'family':<11} {'task':<14} {'params':>11} {'GMACs@512²':>11}  description")
    for e in entries:
        print(
            f"{e['name']:<20} {e['family']:<11} {e['task']:<14} {e['params']:>11,} {e['gmacs']:>11.2f}  "
            f"{e['description']}"
        )
    return 0


def _download_progress() -> Callable[[int, int | None], None]:
    """A callback ``(bytes done, total)`` that draws the checkpoint download as a progress bar."""
    from edgeseg.progress import bar

    shown: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if not shown:
            shown.append(bar(total, "downloading weights", "B", scale=True))
        shown[0].update(done - shown[0].n)
        if total is not None and done >= total:
            shown[0].close()

    return update


def cmd_export(args: argparse.Namespace) -> int:
    from edgeseg.bundle import read_bundle
    from edgeseg.export import ExportRequest, export_bundle
    from edgeseg.imaging import parse_size
    from edgeseg.ladder import parse_gates
    from edgeseg.weights.choice import choose_export_weights

    weights = choose_export_weights(
        args.model,
        weights=args.weights,
        checkpoint=args.checkpoint,
        classes=args.classes,
        num_classes=args.num_classes,
        progress=_download_progress(),
    )
    request = ExportRequest(
        model=args.model,
        out=Path(args.out),
        target=args.target,
        input_size=parse_size(args.input_size),
        num_classes=weights.num_classes,
        checkpoint=weights.checkpoint,
        classes=weights.classes,
        weights_source=weights.source,
        precision=args.precision,
        opset=args.opset,
        tolerance=args.tolerance,
        force=args.force,
        dynamic=args.dynamic,
        calib=Path(args.calib) if args.calib else None,
        calib_count=args.calib_count,
        parity_data=Path(args.parity_data) if args.parity_data else None,
        parity_count=args.parity_count,
        gates=parse_gates(args.gate or []),
        auto_exclude=args.auto_exclude,
        input_kind=args.input,
        outputs=tuple(args.output.split(",")),
        frame_size=parse_size(args.frame_size) if args.frame_size else None,
        head_attention=args.head_attention,
        model_options=dict(args.model_option or []),
        confidence_dtype=args.confidence_dtype,
        confidence_classes=args.confidence_classes,
    )
    out = export_bundle(request)
    manifest = read_bundle(out).manifest
    print(
        f"wrote {out} ({manifest.precision}, {manifest.model.weights} weights, {manifest.export['nodes']} ONNX nodes)"
    )
    if manifest.model.checkpoint is not None and manifest.model.checkpoint.source:
        print(f"  weights: {manifest.model.checkpoint.source}")
    if manifest.classes is not None:
        print(
            f"  classes: {manifest.classes.preset or 'named'} ({len(manifest.classes.names)}: "
            f"{', '.join(manifest.classes.names[:4])}, ...)"
        )
    for name, meta in manifest.files.items():
        print(f"  {name:<16} {meta.bytes / 1e6:8.2f} MB")
    print(_parity_summary(manifest.parity))
    if manifest.tensorrt is not None:
        print(f"TensorRT: {manifest.tensorrt['engine_build']}")
        for version, command in manifest.tensorrt["trtexec"].items():
            print(f"  {version}: {command}")
    return 0


def _parity_summary(parity: dict) -> str:
    """The parity ladder of each artifact, one line each, with its gate verdict."""
    lines = [f"parity vs PyTorch on {parity['images']}; random inputs: {parity['inputs']}"]
    if parity.get("note"):
        lines.append(f"  note: {parity['note']}")
    for artifact, r in parity["results"].items():
        ladder = r["ladder"]
        drop = f"  mIoU drop {ladder['miou_drop']:.2f} pt" if ladder.get("miou_drop") is not None else ""
        verdict = "gated: pass" if r["gates"] else "not gated"
        lines.append(
            f"  {artifact:<12} {r['precision']:<5} on {r['run_with']:<12} max|d| {r['max_abs']:.2e}  "
            f"agreement {ladder['agreement']:.4f}  mIoU vs ref {ladder['miou_vs_reference']:.4f}  "
            f"boundary F {ladder['boundary_f']:.4f}{drop}  ({verdict})"
        )
    if "auto_exclude" in parity:
        kept = parity["auto_exclude"]["kept_float"]
        lines.append(f"  --auto-exclude kept {len(kept)} node(s) in float: {', '.join(kept)}")
    return "\n".join(lines)


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
    if runs_remotely(args):
        from edgeseg.remote.command import predict_on_device

        return predict_on_device(args)
    from edgeseg.classes import label_palette
    from edgeseg.predict import segment_live, segment_source
    from edgeseg.progress import bar
    from edgeseg.runtime import load, video_inferences
    from edgeseg.video import describe_source, open_source
    from edgeseg.video_out import check_output, open_writer

    if args.live and args.inferences is not None:
        raise ValueError("--inferences sets video mode's frames in the model at once; live mode runs one at a time")

    # OpenCV's and FFmpeg's own log lines repeat what the error says; set these variables to see them again.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    spec = describe_source(args.source)
    kind, out = check_output(args.out, spec.single_image, [spec.path] if spec.path else [], color=args.color)
    segmenter = load(args.bundle, backend=args.backend, threads=args.threads, any_precision=args.any_precision)
    classes = segmenter.bundle.manifest.classes
    with segmenter, open_source(spec) as source:
        writer = open_writer(
            kind,
            out,
            color=args.color,
            fps=source.fps,
            num_classes=segmenter.num_classes,
            inputs=source.input_files(),
            palette=label_palette(classes.palette if classes else None),
        )
        try:
            counts = [n for n in (source.frame_count, args.max_frames) if n is not None]
            progress = None if spec.single_image else bar(min(counts) if counts else None, "frames", "frame")
            if args.live:
                realtime = spec.kind == "video"
                report = segment_live(
                    segmenter, source, writer, realtime=realtime, max_frames=args.max_frames, progress=progress
                )
            else:
                inferences = args.inferences or (1 if spec.single_image else video_inferences(segmenter))
                report = segment_source(
                    segmenter, source, writer, max_frames=args.max_frames, progress=progress, inferences=inferences
                )
            wrote = writer.commit()
        except BaseException:
            writer.abort()
            raise
    fps = f", {report['fps']:.1f} FPS" if report["fps"] and not spec.single_image else ""
    print(f"wrote {wrote}: {report['frames']} frame(s) of {spec.kind} {args.source}{fps} ({segmenter.backend})")
    if args.live:
        p50 = report["latency_ms"]["p50"]
        latency = f", capture → result p50 {p50:.1f} ms" if p50 is not None else ""
        print(f"live: {report['read']} frame(s) read, {report['dropped']} dropped while the model was busy{latency}")
    _write_json(args.json, {"source": args.source, "kind": spec.kind, "backend": segmenter.backend, **report})
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edgeseg.evaluate import evaluate, format_report

    if runs_remotely(args):
        from edgeseg.remote.command import eval_on_device

        return eval_on_device(args)
    report = evaluate(
        args.bundle,
        args.data,
        split=args.split,
        backend=args.backend,
        threads=args.threads,
        limit=args.limit,
        any_precision=args.any_precision,
    )
    print(format_report(report))
    _write_json(args.json, report)
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from edgeseg.export.lint import format_findings, lint_onnx, load_graph
    from edgeseg.imaging import parse_size

    graph = load_graph(args.source, args.target, parse_size(args.input_size), args.num_classes)
    findings = lint_onnx(graph, args.target)
    print(f"{args.source} for {args.target}:")
    print(format_findings(findings))
    return 1 if any(f.severity == "error" for f in findings) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeseg.bench import benchmark, format_table
    from edgeseg.progress import bar

    if runs_remotely(args):
        from edgeseg.remote.command import bench_on_devices

        return bench_on_devices(args)
    records = []
    runs = [(bundle, threads) for bundle in args.bundles for threads in args.threads or [None]]
    with bar(len(runs), "benchmarks", "run") as shown:
        for bundle, threads in runs:
            records.append(
                benchmark(
                    bundle,
                    backend=args.backend,
                    threads=threads,
                    warmup=args.warmup,
                    iters=args.iters,
                    boundary=args.boundary,
                    any_precision=args.any_precision,
                    video=args.video,
                    inferences=args.inferences,
                    **_special_run(args),
                )
            )
            shown.update(1)
    print(format_table(records))
    _report_special_runs(records, args.plot)
    _write_json(args.json, records)
    return 0


def _special_run(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmark`` arguments of ``--scenario`` (LoadGen) or ``--duration`` (sustained run); empty for neither."""
    if args.plot and args.duration is None and not getattr(args, "devices", None):
        raise ValueError("--plot draws a sustained run or a fleet: give --duration SECONDS or --devices too")
    if args.scenario is not None:
        from edgeseg.bench.scenarios import ScenarioSettings

        settings = ScenarioSettings(
            args.scenario, args.min_duration, args.min_queries, args.server_qps, args.server_latency_ms
        )
        return {"scenario": settings, "duration": args.duration, "window": args.window}
    return {"duration": args.duration, "window": args.window} if args.duration is not None else {}


def _report_special_runs(records: list[dict[str, Any]], plot: str | None) -> None:
    """Print the scenario or sustained-run table of ``records`` and draw the sustained runs to ``plot``."""
    from edgeseg.bench.special_tables import format_scenario_table, format_sustained_table
    from edgeseg.bench.sustained import plot_sustained

    if "scenario" in records[0]:
        print(format_scenario_table(records))
    if "sustained" in records[0]:
        print(format_sustained_table(records))
        if plot is None:
            return
        for index, record in enumerate(records):
            path = Path(plot) if len(records) == 1 else Path(plot).with_stem(f"{Path(plot).stem}-{index + 1}")
            print(f"wrote {plot_sustained(record, path)}")


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from edgeseg.data import generate_synthetic
    from edgeseg.imaging import parse_size

    size = parse_size(args.size)
    dataset = generate_synthetic(Path(args.out), args.count, size, args.seed, args.val_fraction, args.force)
    splits = ", ".join(f"{len(stems)} {name}" for name, stems in dataset.splits.items())
    print(f"wrote {dataset.root}: {splits} images of {args.size}, {len(dataset.classes)} classes")
    fractions = json.loads((dataset.root / "dataset.json").read_text())["generator"]["pixel_fractions"]
    print("class pixel fractions: " + ", ".join(f"{name} {fraction:.3f}" for name, fraction in fractions.items()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edgeseg.imaging import parse_size
    from edgeseg.train import TrainConfig, train

    given = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "crop": parse_size(args.crop) if args.crop else None,
        "lr": args.lr,
    }
    recipe = {name: value for name, value in given.items() if value is not None}  # the rest: TrainConfig's defaults
    config = TrainConfig(
        args.model,
        Path(args.data),
        Path(args.out),
        seed=args.seed,
        threads=args.threads,
        head_attention=args.head_attention,
        **recipe,
    )
    train(config)
    return 0


def _add_special_run_arguments(bench: argparse.ArgumentParser) -> None:
    """``bench`` options of MLPerf LoadGen scenarios and sustained runs (the quick protocol stays the default)."""
    group = bench.add_argument_group("MLPerf LoadGen scenario (model boundary; needs edgeseg[loadgen])")
    group.add_argument(
        "--scenario",
        choices=["single-stream", "offline", "server"],
        help="an MLPerf LoadGen scenario instead of the quick protocol (model boundary; needs the loadgen extra)",
    )
    group.add_argument(
        "--min-duration",
        type=_positive_float,
        default=10.0,
        help="LoadGen's minimum run time in seconds (default 10; MLPerf's rules ask 600: shorter is not compliant)",
    )
    group.add_argument("--min-queries", type=_positive_int, default=100, help="LoadGen's minimum query count")
    group.add_argument("--server-qps", type=_positive_float, help="Server target QPS (default: half the warm-up's)")
    group.add_argument(
        "--server-latency-ms", type=_positive_float, help="Server latency bound (default: 10 warm-up service times)"
    )
    sustained = bench.add_argument_group("sustained run")
    sustained.add_argument("--duration", type=_positive_float, help="repeat the boundary for this many seconds")
    sustained.add_argument("--window", type=_positive_float, help="seconds per median window (default duration/10)")
    sustained.add_argument(
        "--plot",
        metavar="PNG",
        help="draw latency over time of a --duration run, or latency per bundle x device of a --devices fleet "
        "(needs matplotlib)",
    )


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: generate a synthetic segmentation set")
    kinds = data.add_subparsers(dest="data_command", required=True)
    synthetic = kinds.add_parser("synthetic", help="procedural textured shapes of 5 classes over textured backgrounds")
    synthetic.add_argument(
        "--out", required=True, help="dataset folder to write (new, empty, or an edgeseg dataset with --force)"
    )
    synthetic.add_argument("--count", required=True, type=_positive_int, help="number of images")
    synthetic.add_argument("--size", required=True, type=_size, help="HEIGHTxWIDTH of every image, e.g. 512x512")
    synthetic.add_argument("--seed", type=_seed, default=0, help="same seed, same files")
    synthetic.add_argument("--val-fraction", type=_fraction, default=0.2, help="share of the images held back for val")
    synthetic.add_argument(
        "--force",
        action="store_true",
        help="replace an existing edgeseg dataset (one with dataset.json), never another folder",
    )
    synthetic.set_defaults(func=cmd_data_synthetic)


def _class_indices(text: str) -> tuple[int, ...]:
    """``12,20`` → (12, 20): distinct 0-based class indices."""
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated class indices, e.g. 12,20") from None
    if min(indices) < 0 or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"{text!r}: class indices are distinct and 0 or more")
    return indices


def _model_option(text: str) -> tuple[str, bool | int | float | str]:
    """``KEY=VALUE`` with VALUE a JSON literal (true, 3, 0.5, "x"; a bare word is a string); never evaluated."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE, e.g. full_resolution=false")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if not isinstance(value, bool | int | float | str):
        raise argparse.ArgumentTypeError(f"{text!r}: VALUE must be a boolean, a number or a string")
    return key, value


def _add_head_attention_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--head-attention",
        choices=HEAD_ATTENTION_CHOICES,
        help="insert an SE, CBAM or Coordinate Attention block after the fuse conv of an all-MLP head "
        "(segformer-*, cloformer-*-seg); a checkpoint trained with one needs the same option",
    )


def _add_weights_arguments(export: argparse.ArgumentParser) -> None:
    """``--weights``/``--checkpoint`` (one of them), ``--classes`` and ``--num-classes`` of ``edgeseg export``."""
    source = export.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        help="trained weights: a name from `edgeseg weights list` (e.g. ade20k; downloaded once into "
        "$EDGESEG_HOME, default ~/.cache/edgeseg), a checkpoint file, or hf:OWNER/NAME from the local Hugging Face "
        "cache (offline); without it the weights are random",
    )
    source.add_argument("--checkpoint", help="a checkpoint file (.pth, .bin, .safetensors): the same as --weights PATH")
    export.add_argument(
        "--classes",
        choices=CLASS_PRESETS,
        help="dataset whose class names and palette go into the bundle (default: the --weights entry's dataset)",
    )
    export.add_argument(
        "--num-classes",
        type=_num_classes,
        help="classes the model predicts (default: from --weights or --classes, else 150)",
    )


def cmd_weights_list(args: argparse.Namespace) -> int:
    from edgeseg.weights.listing import format_catalog

    print(format_catalog(args.model))
    return 0


def _add_weights_parser(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="official released checkpoints that --weights takes by name")
    actions = weights.add_subparsers(dest="weights_command", required=True)
    listing = actions.add_parser("list", help="the catalog: per model, name, dataset, training size, mIoU, source")
    listing.add_argument("--model", help="only this model's entries (a name from `edgeseg models`)")
    listing.set_defaults(func=cmd_weights_list)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="fine-tune a model on a dataset folder, on the CPU",
        description="Recipe options left out take the tuned defaults (edgeseg.train.TrainConfig), printed at start.",
    )
    train.add_argument("--model", required=True, help="a segmentation model from `edgeseg models`")
    train.add_argument("--data", required=True, help="dataset folder (see `edgeseg data synthetic`)")
    train.add_argument("--out", required=True, help="checkpoint (.pth) to write")
    train.add_argument("--steps", type=_positive_int, help="optimisation steps")
    train.add_argument("--batch-size", type=_positive_int, help="crops per step")
    train.add_argument("--crop", type=_size, help="HEIGHTxWIDTH of the random training crops")
    train.add_argument("--lr", type=_positive_float, help="peak AdamW learning rate")
    train.add_argument("--seed", type=_seed, default=0, help="random seed of the initialisation and the crops")
    train.add_argument("--threads", type=_threads, help="torch threads (default: every core)")
    _add_head_attention_argument(train)
    train.set_defaults(func=cmd_train)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` states each option's default (where it has one worth stating)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        stated = "%(default)" in text or "(default" in text
        if stated or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and every subcommand parser under it the :class:`DefaultsHelpFormatter`, and every
    command ``--quiet`` and ``--verbose``."""
    parser.formatter_class = DefaultsHelpFormatter
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in commands:
        for child in action.choices.values():
            _finish(child)
    if not commands:
        shown = parser.add_mutually_exclusive_group()
        shown.add_argument("-q", "--quiet", action="store_true", help="no progress bars or stage lines")
        shown.add_argument(
            "-v", "--verbose", action="store_true", help="also the log lines of NNCF, ONNX Runtime and OpenVINO"
        )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the models with params and GMACs at 512x512")
    models.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every one)")
    models.add_argument(
        "--num-classes", type=_num_classes, default=150, help="classes of the head counted (not 150: needs torch)"
    )
    models.set_defaults(func=cmd_models)

    export = sub.add_parser("export", help="export a model to a self-describing bundle")
    export.add_argument("--model", required=True, help="a name from `edgeseg models`")
    _add_weights_arguments(export)
    export.add_argument(
        "--input-size",
        default="512x512",
        type=_size,
        help="HEIGHTxWIDTH of the static graph (the example size with --dynamic)",
    )
    export.add_argument(
        "--dynamic", action="store_true", help="one graph for every height and width that is a multiple of 32"
    )
    export.add_argument("--target", default="onnxruntime", choices=TARGETS, help="the runtime the bundle is built for")
    export.add_argument("--precision", default="fp32", choices=PRECISIONS, help="what the target artifact runs in")
    export.add_argument("--calib", help="int8 calibration images: a folder, or a segmentation set (its train split)")
    export.add_argument("--calib-count", type=_positive_int, default=32, help="calibration images to use")
    export.add_argument(
        "--parity-data", help="images for the parity ladder (a set's val split; labelled sets add the mIoU drop)"
    )
    export.add_argument("--parity-count", type=_positive_int, default=8, help="parity-ladder images to use")
    export.add_argument(
        "--gate", action="append", type=_gate, metavar="RUNG=VALUE", help="override a parity gate, e.g. agreement=0.98"
    )
    export.add_argument(
        "--auto-exclude", action="store_true", help="int8: keep the fewest sensitive nodes in float until gates pass"
    )
    export.add_argument(
        "--input",
        default="float",
        choices=("float", "uint8-rgb", "uint8-bgr"),
        help="graph input: the normalised float tensor, or uint8 NHWC frames resized and normalised in the graph",
    )
    export.add_argument(
        "--output",
        default="logits",
        help="graph outputs, a comma-separated subset of logits, labels (argmax at the model stride), labels-full "
        "(at the frame size; needs --input uint8-*), confidence (softmax, float16)",
    )
    export.add_argument(
        "--confidence-dtype",
        choices=("float16", "uint8"),
        default="float16",
        help="the confidence output's type: float16 probabilities, or uint8 = round(255 × probability)",
    )
    export.add_argument(
        "--confidence-classes",
        type=_class_indices,
        help="only these classes' confidence maps, comma-separated 0-based indices, e.g. 12,20 (default: every class)",
    )
    export.add_argument(
        "--frame-size", type=_size, help="HEIGHTxWIDTH of the uint8 frames (default: any size; TensorRT needs it)"
    )
    export.add_argument("--opset", type=_opset, default=18, help="ONNX opset of the exported graph (18 or newer)")
    _add_head_attention_argument(export)
    export.add_argument(
        "--model-option",
        action="append",
        type=_model_option,
        metavar="KEY=VALUE",
        help="a build option of the model's family, repeatable; VALUE is a JSON literal, e.g. full_resolution=false "
        "(SETR: the graph stops at the head's stride and the runtime upsamples, exactly as the official resize)",
    )
    export.add_argument(
        "--tolerance", type=_positive_float, default=1e-4, help="fp32 parity gate: max abs logit difference"
    )
    export.add_argument(
        "--out",
        required=True,
        help="bundle folder to write (new, empty, or an edgeseg bundle with --force); one export at a time per folder",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an existing edgeseg bundle (one with its manifest.json), never another folder nor one holding "
        "--checkpoint, --calib or --parity-data",
    )
    export.set_defaults(func=cmd_export)

    lint = sub.add_parser("lint", help="check an ONNX graph (or a model's export) for a runtime's known hazards")
    lint.add_argument("source", metavar="MODEL|ONNX", help="an .onnx file, or a name from `edgeseg models`")
    lint.add_argument("--target", required=True, choices=BACKENDS, help="the runtime whose hazards to check")
    lint.add_argument("--input-size", default="512x512", type=_size, help="HEIGHTxWIDTH to export a model name at")
    lint.add_argument("--num-classes", type=_num_classes, default=150, help="classes of the head (a model name)")
    lint.set_defaults(func=cmd_lint)

    convert = sub.add_parser(
        "convert-checkpoint", help="SegFormer checkpoints: NVlabs/mmseg-0.x .pth <-> Hugging Face transformers"
    )
    convert.add_argument("--model", required=True, help="segformer-b0 ... segformer-b5")
    convert.add_argument("--to", required=True, choices=["hf", "nvlabs"], help="format to write")
    convert.add_argument("source", help="checkpoint in either format (.pth, .bin or .safetensors)")
    convert.add_argument("destination", help="hf: a folder (model.safetensors + config.json); nvlabs: a .pth file")
    convert.set_defaults(func=cmd_convert_checkpoint)

    predict = sub.add_parser(
        "predict",
        help="segment an image, a folder, a video, a camera or a stream with a bundle (no torch)",
        description="Frames are pipelined (reading, pre- and postprocessing overlap with the model). Nothing is "
        "half-written: on any error (a bad source, a camera that stops, a truncated video) the output is removed.",
    )
    predict.add_argument("bundle")
    predict.add_argument(
        "source",
        metavar="SOURCE",
        help="an image file, a folder or quoted glob of images, a video file, a camera index (0) or an "
        "RTSP/HTTP URL; videos, cameras and URLs need pip install 'edgeseg[video]'",
    )
    predict.add_argument(
        "--out",
        required=True,
        help="FILE.png (one image: class indices at its size), a folder (one label PNG per frame), FILE.mp4 (a "
        "colour overlay of the labels on the frames, lossy) or FILE.mkv (a lossless video of class indices, "
        "≤ 256 classes)",
    )
    predict.add_argument("--color", action="store_true", help="label PNGs in a colour palette instead of indices")
    predict.add_argument(
        "--max-frames", type=_positive_int, help="stop after this many frames (needed to end a camera or a stream)"
    )
    predict.add_argument(
        "--live",
        action="store_true",
        help="live mode: segment the newest frame whenever the model is free and drop the frames that arrive "
        "while it is busy (counted); a video file plays at its frame rate, like a camera; only segmented frames "
        "are written",
    )
    predict.add_argument(
        "--inferences",
        type=_positive_int,
        help="video mode: frames in the model at once, each lane with its share of the threads (default: 2 on a "
        "CPU backend with 2 or more threads, which gives more frames per second; 1 for a single image)",
    )
    predict.add_argument("--json", help="also write per-frame timings (decode and read→written latency) as JSON")
    predict.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    predict.add_argument("--any-precision", action="store_true", help=ANY_PRECISION_HELP)
    predict.add_argument("--threads", type=_threads, help=THREADS_HELP)
    add_remote_arguments(predict, fleet=False)
    predict.set_defaults(func=cmd_predict)

    evaluation = sub.add_parser("eval", help="mIoU, pixel accuracy and per-class IoU of a bundle on a labelled set")
    evaluation.add_argument("bundle")
    evaluation.add_argument("--data", required=True, help="dataset folder (dataset.json, images/, labels/)")
    evaluation.add_argument("--split", default="val", help="train, val or all")
    evaluation.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    evaluation.add_argument("--any-precision", action="store_true", help=ANY_PRECISION_HELP)
    evaluation.add_argument("--threads", type=_threads, help=THREADS_HELP)
    evaluation.add_argument("--limit", type=_positive_int, help="evaluate the first N images of the split")
    evaluation.add_argument("--json", help="also write the report as JSON")
    add_remote_arguments(evaluation, fleet=False)
    evaluation.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="latency and peak memory of bundles, in fresh torch-free processes")
    bench.add_argument("bundles", nargs="+", metavar="BUNDLE")
    bench.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    bench.add_argument("--any-precision", action="store_true", help=ANY_PRECISION_HELP)
    bench.add_argument("--threads", type=_threads, nargs="*", help="one or more thread counts")
    bench.add_argument("--warmup", type=_positive_int, default=10, help="untimed runs first")
    bench.add_argument("--iters", type=_positive_int, default=50, help="timed runs")
    bench.add_argument(
        "--boundary",
        choices=["model", "end-to-end", "stream"],
        default="model",
        help="model: logits only; end-to-end: one 720p image to labels; stream: pipelined 720p frames (throughput)",
    )
    bench.add_argument(
        "--video",
        help="end-to-end and stream: frames decoded from this video file (stream: decoding included) instead of "
        "random 720p frames",
    )
    bench.add_argument(
        "--inferences",
        type=_positive_int,
        help="stream: frames in the model at once (default: as edgeseg predict, 2 on a CPU backend with 2 or more "
        "threads)",
    )
    bench.add_argument("--json", help="also write the records as JSON")
    _add_special_run_arguments(bench)
    add_remote_arguments(bench, fleet=True)
    bench.set_defaults(func=cmd_bench)

    _add_data_parser(sub)
    _add_train_parser(sub)
    _add_weights_parser(sub)
    return _finish(parser)


# The optional extra (pyproject.toml) that brings each importable module a command may need.
EXTRA_OF_MODULE = {
    "torch": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "safetensors": "export",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "quantize",
    "PIL": "image",
    "cv2": "video",
    "matplotlib": "bench",
}
BACKEND_HELP = "the runtime to run the bundle on (default: the bundle's target)"
THREADS_HELP = "CPU threads of the runtime (default: the runtime's own choice)"
ANY_PRECISION_HELP = "with --backend: run the fp32 portable graph where that backend has no artifact of the bundle's"
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def missing_module_message(error: ModuleNotFoundError) -> str:
    """What to install for a missing module: the extra that brings it (and the CPU wheel index for torch)."""
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return str(error)
    message = f"this command needs {module}, from the {extra} extra: pip install 'edgeseg[{extra}]'"
    if module == "torch":
        message += f" (where plain pip would pull a CUDA torch, first: {CPU_TORCH})"
    return message


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edgeseg.progress import configure

    configure(quiet=args.quiet, verbose=args.verbose)
    try:
        return args.func(args)
    except ModuleNotFoundError as error:
        print(f"edgeseg {args.command}: error: {missing_module_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgeseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, RuntimeError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"edgeseg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
