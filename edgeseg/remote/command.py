"""``edgeseg bench --device`` / ``--devices``: run the benchmark on remote devices and report it."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

try:
    import asyncssh  # noqa: F401  (checked here so the error names the extra to install)
except ImportError:
    raise ImportError("benchmarking on devices needs asyncssh on this machine: pip install 'edgeseg[remote]'") from None

from edgeseg.bench import format_table
from edgeseg.remote.device import DEFAULT_PYTHON, Device, DeviceAddress
from edgeseg.remote.fleet import FleetResult, load_devices, run_fleet
from edgeseg.remote.report import fleet_table, plot_latency, write_json_atomically
from edgeseg.remote.session import BenchSettings, Job, bench_device, checked_bundle
from edgeseg.remote.wheel import build_wheel


def _devices(args: argparse.Namespace) -> list[Device]:
    """The fleet of ``--devices``, or the one ``--device`` with ``--key`` and ``--python``."""
    if args.devices:
        if args.key or args.python != DEFAULT_PYTHON:
            raise ValueError("with --devices, set key and python per device in devices.toml, not on the command line")
        return load_devices(Path(args.devices))
    address = DeviceAddress.parse(args.device)
    return [Device(address.host, address, Path(args.key) if args.key else None, args.python)]


def _report(args: argparse.Namespace, result: FleetResult) -> None:
    """Print the table; write --json and --plot (each atomically)."""
    if args.device and not result.failures:
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
    devices = _devices(args)
    jobs = [Job(checked_bundle(Path(b)), t) for b in args.bundles for t in args.threads or [None]]
    with tempfile.TemporaryDirectory(prefix="edgeseg-wheel-") as scratch:
        settings = BenchSettings(
            backend=args.backend,
            warmup=args.warmup,
            iters=args.iters,
            boundary=args.boundary,
            known_hosts=Path(args.known_hosts),
            connect_timeout=args.connect_timeout,
            wheel=build_wheel(Path(scratch)) if args.install_wheel else None,
        )
        if args.device:
            result = FleetResult(records=asyncio.run(bench_device(devices[0], jobs, settings)))
        else:
            result = asyncio.run(run_fleet(devices, jobs, settings))
    _report(args, result)
    return 1 if result.failures else 0
