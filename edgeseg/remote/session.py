"""One device's benchmark session: one connection, its environment checked once per backend, jobs one at a time."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from edgeseg.bundle import MANIFEST, Bundle, read_bundle, sha256_of
from edgeseg.remote.connection import connect, home_path, run
from edgeseg.remote.device import CONNECT_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, Device, RemoteError
from edgeseg.remote.environment import DeviceEnvironment, check_environment
from edgeseg.remote.upload import BUNDLE_CACHE, put_folder
from edgeseg.remote.wheel import install_wheel

# The same benchmark a local `edgeseg bench` runs (a latency and a memory pass, each in a fresh process),
# run by the device's Python on the device's copy of the bundle; prints its record as one JSON line.
BENCH_SCRIPT = """\
import json, sys
from edgeseg.bench import benchmark
print(json.dumps(benchmark(sys.argv[1], **json.loads(sys.argv[2]))))
"""


@dataclass(frozen=True)
class BenchSettings:
    """How every job of a run is measured, and how devices are reached."""

    backend: str | None = None  # None: each bundle's own
    warmup: int = 10
    iters: int = 50
    boundary: str = "model"
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    connect_timeout: float = CONNECT_TIMEOUT_S
    wheel: Path | None = None  # install this wheel into a venv on the device first (--install-wheel)


@dataclass(frozen=True)
class Job:
    """One benchmark: a local bundle (checked by :func:`checked_bundle`) at a thread count (None: the default)."""

    bundle: Bundle
    threads: int | None = None


def checked_bundle(path: Path) -> Bundle:
    """The bundle at ``path``, every listed file checked against its size and sha256 before it is copied."""
    bundle = read_bundle(path)
    bundle.verify()
    return bundle


class DeviceSession:
    """Benchmarks on one connected device; call :meth:`benchmark` for one job at a time."""

    def __init__(self, connection: asyncssh.SSHClientConnection, device: Device, settings: BenchSettings) -> None:
        self.connection = connection
        self.device = device
        self.settings = settings
        self._environments: dict[str, DeviceEnvironment] = {}

    async def environment(self, backend: str) -> DeviceEnvironment:
        """The device's Python for ``backend`` (installing the wheel first with ``--install-wheel``), checked once."""
        if backend not in self._environments:
            python = None
            if self.settings.wheel is not None:
                python = await install_wheel(self.connection, self.device, self.settings.wheel, backend)
            self._environments[backend] = await check_environment(self.connection, self.device, backend, python)
        return self._environments[backend]

    async def copy_bundle(self, bundle: Bundle) -> tuple[str, bool]:
        """The bundle's folder on the device (relative to its home) and whether it was copied now."""
        files = {MANIFEST: bundle.path / MANIFEST} | {name: bundle.path / name for name in bundle.manifest.files}
        return await put_folder(self.connection, self.device, BUNDLE_CACHE, sha256_of(bundle.path / MANIFEST), files)

    async def benchmark(self, job: Job) -> dict[str, Any]:
        """Benchmark ``job`` on the device: the local record's keys, plus ``device`` (its description)."""
        bundle = job.bundle
        backend = self.settings.backend or bundle.default_backend
        environment = await self.environment(backend)
        folder, copied = await self.copy_bundle(bundle)
        options = {
            "backend": self.settings.backend,
            "threads": job.threads,
            "warmup": self.settings.warmup,
            "iters": self.settings.iters,
            "boundary": self.settings.boundary,
        }
        script, bundle_folder, arguments = shlex.quote(BENCH_SCRIPT), home_path(f"~/{folder}"), json.dumps(options)
        command = f"{home_path(environment.python)} -c {script} {bundle_folder} {shlex.quote(arguments)}"
        output = await run(self.connection, self.device, command, f"benchmarking {bundle.path}")
        try:
            record = json.loads(output.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            record = None
        if not isinstance(record, dict) or "latency_ms" not in record:
            raise RemoteError(f"device {self.device.name}: the benchmark printed no record: {output[-500:]!r}")
        record["bundle"] = str(bundle.path)
        record["device"] = {
            "name": self.device.name,
            "address": str(self.device.address),
            "tags": list(self.device.tags),
            **environment.description,
            "bundle_cache": f"~/{folder}",
            "bundle_copied": copied,
        }
        return record


async def bench_device(device: Device, jobs: list[Job], settings: BenchSettings) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``device`` one after another; the first error (RemoteError) ends the run."""
    async with connect(device, settings.known_hosts, settings.connect_timeout) as connection:
        session = DeviceSession(connection, device, settings)
        return [await session.benchmark(job) for job in jobs]
