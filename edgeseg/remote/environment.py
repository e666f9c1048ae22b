"""What the device runs: its Python, edgeseg and the bundle's backend, checked before any benchmark.

The check runs a short ``python -c`` script on the device; it reports the device's description with the same
:func:`edgeseg.bench.machine.machine_info` a local benchmark records.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import asyncssh

from edgeseg.remote.connection import COMMAND_NOT_FOUND, CommandFailed, home_path, run
from edgeseg.remote.device import Device, RemoteError

# Python package each backend needs, and the edgeseg extra that installs it (TensorRT comes with the device's
# SDK, e.g. JetPack, or from pip).
BACKEND_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
BACKEND_EXTRAS: dict[str, str | None] = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": None}

# Prints one JSON object: Python version, edgeseg version (null when missing), whether the backend's package is
# there, and the machine description (when edgeseg's benchmark harness imports).
PROBE_SCRIPT = """\
import importlib.util, json, platform, sys
report = {"python": platform.python_version(), "executable": sys.executable, "edgeseg": None}
try:
    report["backend"] = importlib.util.find_spec(sys.argv[1]) is not None
except ImportError:
    report["backend"] = False
try:
    import edgeseg
    report["edgeseg"] = edgeseg.__version__
    import edgeseg.bench
    from edgeseg.bench.machine import machine_info
    report["machine"] = machine_info(None)
except ImportError as error:
    report["problem"] = type(error).__name__ + ": " + str(error)
print(json.dumps(report))
"""


@dataclass(frozen=True)
class DeviceEnvironment:
    """A device's Python that can benchmark a backend, and the device's description."""

    python: str
    edgeseg_version: str
    description: dict[str, Any]


def pip_requirements(backend: str) -> str:
    """What ``pip install`` needs on the device for edgeseg with ``backend``, quoted for a shell."""
    extra = BACKEND_EXTRAS[backend]
    return f"'edgeseg[{extra}]'" if extra else f"edgeseg {BACKEND_PACKAGES[backend]}"


def pip_advice(device: Device, backend: str) -> str:
    """The line to run on the device to get edgeseg with ``backend``, and the alternative."""
    return (
        f"run on the device: {device.python} -m pip install {pip_requirements(backend)} "
        "(or pass --install-wheel to install this checkout into a venv there)"
    )


async def check_environment(
    connection: asyncssh.SSHClientConnection, device: Device, backend: str, python: str | None = None
) -> DeviceEnvironment:
    """The device's edgeseg with ``backend`` under ``python`` (default: the device's); RemoteError saying what to do."""
    python = python or device.python
    command = f"{home_path(python)} -c {shlex.quote(PROBE_SCRIPT)} {shlex.quote(BACKEND_PACKAGES[backend])}"
    try:
        output = await run(connection, device, command, f"checking {python}")
    except CommandFailed as error:
        if error.exit_status == COMMAND_NOT_FOUND:
            raise RemoteError(
                f"device {device.name}: there is no Python at {python!r}; set the device's python (--python, or "
                "python in devices.toml) to a Python 3.10+ interpreter there"
            ) from None
        raise
    try:
        report = json.loads(output.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RemoteError(f"device {device.name}: {python} printed no report: {output[-500:]!r}") from None
    where = f"device {device.name} ({python}, Python {report.get('python')})"
    if report.get("edgeseg") is None:
        raise RemoteError(f"{where} has no edgeseg; {pip_advice(device, backend)}")
    if "problem" in report:
        raise RemoteError(
            f"{where}: edgeseg {report['edgeseg']} cannot run: {report['problem']}; {pip_advice(device, backend)}"
        )
    if not report.get("backend"):
        raise RemoteError(
            f"{where} has edgeseg {report['edgeseg']} but not {BACKEND_PACKAGES[backend]} for the {backend} backend; "
            f"{pip_advice(device, backend)}"
        )
    description = {**report["machine"], "python_executable": report["executable"], "edgeseg_version": report["edgeseg"]}
    return DeviceEnvironment(python, report["edgeseg"], description)
