"""``edgeseg bench --device/--devices``, ``eval --device`` and ``predict --device``: run on devices and report."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import asyncssh  # noqa: F401  (checked here so the error names the extra to install)
except ImportError:
    raise ImportError("running on devices needs asyncssh on this machine: pip install 'edgeseg[remote]'") from None

from edgeseg.bench import format_table
from edgeseg.remote.device import DEFAULT_PYTHON, Device, DeviceAddress
from edgeseg.remote.evaluation import evaluate_on_device
from edgeseg.remote.fleet import FleetResult, load_devices, run_fleet
from edgeseg.remote.prediction import PredictRequest
from edgeseg.remote.prediction import predict_on_device as predict_remotely
from edgeseg.remote.report import fleet_table, plot_latency, write_json_atomically
from edgeseg.remote.session import BenchSettings, Job, Reach, bench_device, checked_bundle
from edgeseg.remote.wheel import build_wheel


def _devices(args: argparse.Namespace) -> list[Device]:
    """The fleet of ``--devices``, or the one ``--device`` with ``--key`` and ``--python``."""
    if getattr(args, "devices", None):
        if args.key or args.python != DEFAULT_PYTHON:
            raise ValueError("with --devices, set key and python per device in devices.toml, not on the command line")
        return load_devices(Path(args.devices))
    address = DeviceAddress.parse(args.device)
    return [Device(address.host, address, Path(args.key) if args.key else None, args.python)]


@contextmanager
def _reach(args: argparse.Namespace) -> Iterator[Reach]:
    """How to reach the devices; with --install-wheel, a wheel of this checkout that lasts for the block."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-wheel-") as scratch:
        wheel = build_wheel(Path(scratch)) if args.install_wheel else None
        yield Reach(Path(args.known_hosts), args.connect_timeout, wheel)


def _report(args: argparse.Namespace, result: FleetResult) -> None:
    """Print the table; write --json and --plot (each atomically)."""
    if args.device:
        print(f"Device {args.device}:")
        print(format_table(result.records))
    else:
        print(fleet_table(result.records, result.failures))
    if args.json:
        data = result.records if args.device else {"records": result.records, "failures": result.failures}
        write_json_atomically(Path(args.json), data)
        print(f"wrote {args.json}")
    if args.plot and result.records:
        if plot_latency(result.records, Path(args.plot)):
            print(f"wrote {args.plot}")
        else:
            print(f"no plot: matplotlib is not installed (pip install 'edgeseg[bench]'); {args.plot} not written")


def bench_on_devices(args: argparse.Namespace) -> int:
    """Run ``edgeseg bench`` on ``--device`` (any error ends it) or every device of ``--devices`` (failures reported).

    Exit status 0 when every job ran, 1 when a device of the fleet failed; no result file is written for a single
    device that failed.
    """
    if args.scenario is not None or args.duration is not None:
        raise ValueError(
            "--scenario and --duration run on this machine only for now; on a device, run them there: "
            "edgeseg bench BUNDLE --scenario ... (in a torch-free edgeseg install)"
        )
    if args.plot and args.device:
        raise ValueError("--plot draws a --devices fleet or a --duration run; one --device has no plot")
    devices = _devices(args)
    jobs = [Job(checked_bundle(Path(b)), t) for b in args.bundles for t in args.threads or [None]]
    settings = BenchSettings(args.backend, args.warmup, args.iters, args.boundary, args.any_precision, args.inferences)
    with _reach(args) as reach:
        if args.device:
            result = FleetResult(records=asyncio.run(bench_device(devices[0], jobs, reach, settings)))
        else:
            result = asyncio.run(run_fleet(devices, jobs, reach, settings))
    _report(args, result)
    return 1 if result.failures else 0


def eval_on_device(args: argparse.Namespace) -> int:
    """Run ``edgeseg eval`` on ``--device``; print its report and write --json (atomically)."""
    from edgeseg.evaluate import format_report

    [device] = _devices(args)
    bundle = checked_bundle(Path(args.bundle))
    with _reach(args) as reach:
        report = asyncio.run(
            evaluate_on_device(
                device,
                reach,
                bundle,
                Path(args.data),
                split=args.split,
                backend=args.backend,
                threads=args.threads,
                limit=args.limit,
                any_precision=args.any_precision,
            )
        )
    print(f"Device {args.device}:")
    print(format_report(report))
    if args.json:
        write_json_atomically(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


def predict_on_device(args: argparse.Namespace) -> int:
    """Run ``edgeseg predict`` on ``--device``; --out is written here once the device's output is complete."""
    [device] = _devices(args)
    bundle = checked_bundle(Path(args.bundle))
    request = PredictRequest(
        bundle,
        args.source,
        args.out,
        args.color,
        args.max_frames,
        args.backend,
        args.threads,
        args.any_precision,
        args.live,
        args.inferences,
    )
    with _reach(args) as reach:
        report = asyncio.run(predict_remotely(device, reach, request))
    fps = f", {report['fps']:.1f} FPS" if report.get("fps") and report["kind"] != "image" else ""
    print(
        f"wrote {report['wrote']}: {report['frames']} frame(s) of {report['kind']} {args.source}{fps} "
        f"(on device {args.device}, {report['backend']})"
    )
    if args.json:
        write_json_atomically(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0
