"""One device's session: one connection, its environment checked once per need, jobs one at a time."""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
class Reach:
    """How devices are reached and prepared: trusted host keys, connection timeout, an optional wheel to install."""

    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    connect_timeout: float = CONNECT_TIMEOUT_S
    wheel: Path | None = None  # install this wheel into a venv on the device first (--install-wheel)


@dataclass(frozen=True)
class BenchSettings:
    """How every benchmark of a run is measured (the options of a local ``edgeseg bench``)."""

    backend: str | None = None  # None: each bundle's own
    warmup: int = 10
    iters: int = 50
    boundary: str = "model"
    any_precision: bool = False  # run another precision's artifact where the backend has none of the bundle's
    inferences: int | None = None  # stream boundary: frames in the model at once (None: the device's default)


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
    """Work on one connected device, one job at a time."""

    def __init__(self, connection: asyncssh.SSHClientConnection, device: Device, wheel: Path | None = None) -> None:
        self.connection = connection
        self.device = device
        self.wheel = wheel
        self._environments: dict[tuple[str, tuple[str, ...]], DeviceEnvironment] = {}

    async def environment(self, backend: str, extras: tuple[str, ...] = ()) -> DeviceEnvironment:
        """The device's Python for ``backend`` and edgeseg ``extras`` (after installing the wheel, if any), once."""
        key = (backend, extras)
        if key not in self._environments:
            python = None
            if self.wheel is not None:
                python = await install_wheel(self.connection, self.device, self.wheel, backend, extras)
            self._environments[key] = await check_environment(self.connection, self.device, backend, python, extras)
        return self._environments[key]

    async def copy_bundle(self, bundle: Bundle) -> tuple[str, bool]:
        """The bundle's folder on the device (relative to its home) and whether it was copied now."""
        files = {MANIFEST: bundle.path / MANIFEST} | {name: bundle.path / name for name in bundle.manifest.files}
        return await put_folder(self.connection, self.device, BUNDLE_CACHE, sha256_of(bundle.path / MANIFEST), files)

    async def run_command(self, command: str, what: str) -> str:
        """Run a shell ``command`` on the device and return its stdout (see :func:`edgeseg.remote.connection.run`)."""
        return await run(self.connection, self.device, command, what)

    async def run_script(self, python: str, script: str, words: list[str], what: str) -> dict[str, Any]:
        """Run ``python -c script WORDS`` (shell words, quoted) and parse the last line it prints as a JSON object."""
        command = " ".join([home_path(python), "-c", shlex.quote(script), *words])
        output = await self.run_command(command, what)
        try:
            result = json.loads(output.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result = None
        if not isinstance(result, dict):
            raise RemoteError(f"device {self.device.name}: {what} printed no JSON result: {output[-500:]!r}")
        return result

    def describe(self, environment: DeviceEnvironment, folder: str, copied: bool) -> dict[str, Any]:
        """The ``device`` entry of a result: name, address, tags, machine, and the bundle's copy there."""
        return {
            "name": self.device.name,
            "address": str(self.device.address),
            "tags": list(self.device.tags),
            **environment.description,
            "bundle_cache": f"~/{folder}",
            "bundle_copied": copied,
        }

    async def benchmark(self, job: Job, settings: BenchSettings) -> dict[str, Any]:
        """Benchmark ``job`` on the device: the local record's keys, plus ``device`` (its description)."""
        bundle = job.bundle
        environment = await self.environment(settings.backend or bundle.default_backend)
        folder, copied = await self.copy_bundle(bundle)
        options = {
            "backend": settings.backend,
            "threads": job.threads,
            "warmup": settings.warmup,
            "iters": settings.iters,
            "boundary": settings.boundary,
            "any_precision": settings.any_precision,
        } | ({"inferences": settings.inferences} if settings.inferences is not None else {})
        what = f"benchmarking {bundle.path}"
        words = [home_path(f"~/{folder}"), shlex.quote(json.dumps(options))]
        record = await self.run_script(environment.python, BENCH_SCRIPT, words, what)
        if "latency_ms" not in record:
            raise RemoteError(f"device {self.device.name}: {what} gave no latency: {sorted(record)}")
        record["bundle"] = str(bundle.path)
        record["device"] = self.describe(environment, folder, copied)
        return record


@asynccontextmanager
async def device_session(device: Device, reach: Reach) -> AsyncIterator[DeviceSession]:
    """A session on ``device``, connected as ``reach`` says; ConnectionFailed when it cannot be reached."""
    async with connect(device, reach.known_hosts, reach.connect_timeout) as connection:
        yield DeviceSession(connection, device, reach.wheel)


async def bench_device(device: Device, jobs: list[Job], reach: Reach, settings: BenchSettings) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``device`` one after another; the first error (RemoteError) ends the run."""
    async with device_session(device, reach) as session:
        return [await session.benchmark(job, settings) for job in jobs]
