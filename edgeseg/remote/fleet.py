"""A fleet: devices from ``devices.toml``, benchmarked in parallel, each device's jobs strictly one after another.

A device that cannot be reached, or whose job fails, is reported with its error; the other devices complete.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edgeseg.remote.device import DEFAULT_PYTHON, ConnectionFailed, Device, DeviceAddress, RemoteError
from edgeseg.remote.session import BenchSettings, Job, Reach, device_session

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_DEVICES_TOML_BYTES = 1 << 20
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f]+$")]


class _DeviceEntry(BaseModel):
    """One ``[[device]]`` table of devices.toml."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Label
    address: Text
    key: Text | None = None
    python: Text = DEFAULT_PYTHON
    tags: list[Label] = []


class _DevicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    device: Annotated[list[_DeviceEntry], Field(min_length=1, max_length=1024)]


def load_devices(path: Path) -> list[Device]:
    """The devices listed in ``path`` (a devices.toml); ValueError naming the bad entry and field otherwise.

    A relative ``key`` is relative to the file's folder; ``~`` is the local home folder.
    """
    if path.stat().st_size > MAX_DEVICES_TOML_BYTES:
        raise ValueError(f"{path} is over {MAX_DEVICES_TOML_BYTES} bytes; it is not a devices.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = _DevicesFile.model_validate(data).device
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        expected = "[[device]] tables of name, address, key, python, tags"
        raise ValueError(f"{path}: {problems} (expected {expected})") from None
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: device names must be unique, got {', '.join(names)}")
    devices = []
    for entry in entries:
        key = None if entry.key is None else path.parent / Path(entry.key).expanduser()
        try:
            address = DeviceAddress.parse(entry.address)
        except ValueError as error:
            raise ValueError(f"{path}: device {entry.name}: {error}") from None
        devices.append(Device(entry.name, address, key, entry.python, tuple(entry.tags)))
    return devices


@dataclass
class FleetResult:
    """Records of the jobs that ran, and one failure entry per job (or device) that did not."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def _failure(device: Device, job: Job | None, backend: str | None, error: str) -> dict[str, Any]:
    """A failure entry: the device, the job (None: the device as a whole), the backend asked for, the error."""
    bundle = None if job is None else job.bundle
    return {
        "device": device.name,
        "address": str(device.address),
        "tags": list(device.tags),
        "bundle": None if bundle is None else str(bundle.path),
        "model": None if bundle is None else bundle.model_name,
        "input_size": None if bundle is None else list(bundle.input_size),
        "precision": None if bundle is None else bundle.precision,
        "backend": backend or (None if bundle is None else bundle.default_backend),
        "threads": None if job is None else job.threads,
        "error": error,
    }


async def _run_device(device: Device, jobs: list[Job], reach: Reach, settings: BenchSettings) -> FleetResult:
    """Every job on one device, in order; a lost connection marks the jobs after it as not run."""
    result = FleetResult()
    try:
        async with device_session(device, reach) as session:
            for index, job in enumerate(jobs):
                try:
                    result.records.append(await session.benchmark(job, settings))
                except ConnectionFailed as error:
                    result.failures.append(_failure(device, job, settings.backend, str(error)))
                    result.failures += [
                        _failure(device, later, settings.backend, f"not run: {error}") for later in jobs[index + 1 :]
                    ]
                    break
                except (RemoteError, OSError, asyncssh.Error) as error:  # this job failed; the next may run
                    result.failures.append(_failure(device, job, settings.backend, str(error)))
    except ConnectionFailed as error:
        if not result.failures:  # the connection itself failed: one entry for the device
            result.failures.append(_failure(device, None, settings.backend, str(error)))
    return result


async def run_fleet(devices: list[Device], jobs: list[Job], reach: Reach, settings: BenchSettings) -> FleetResult:
    """Run ``jobs`` on every device in parallel, each device's jobs one after another."""
    merged = FleetResult()
    for outcome in await asyncio.gather(*(_run_device(device, jobs, reach, settings) for device in devices)):
        merged.records += outcome.records
        merged.failures += outcome.failures
    return merged
