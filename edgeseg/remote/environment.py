"""What the device runs: its Python, edgeseg, the backend and any other extra, checked before any work.

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
# Module each other edgeseg extra a remote command may need provides.
EXTRA_MODULES = {"image": "PIL", "video": "cv2"}

# Arguments: module names. Prints one JSON object: Python version, edgeseg version (null when missing), the
# modules that are missing, and the machine description (when edgeseg's benchmark harness imports).
PROBE_SCRIPT = """\
import importlib.util, json, platform, sys
def missing(name):
    try:
        return importlib.util.find_spec(name) is None
    except ImportError:
        return True
report = {"python": platform.python_version(), "executable": sys.executable, "edgeseg": None}
report["missing"] = [name for name in sys.argv[1:] if missing(name)]
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
    """A device's Python that can run a backend with some extras, and the device's description."""

    python: str
    edgeseg_version: str
    description: dict[str, Any]


def edgeseg_extras(backend: str, extras: tuple[str, ...] = ()) -> list[str]:
    """The edgeseg extras to install for ``backend`` and ``extras``."""
    backend_extra = BACKEND_EXTRAS[backend]
    return ([backend_extra] if backend_extra else []) + list(extras)


def pip_requirements(backend: str, extras: tuple[str, ...] = ()) -> str:
    """What ``pip install`` needs on the device for edgeseg with ``backend`` and ``extras``, quoted for a shell."""
    wanted = edgeseg_extras(backend, extras)
    edgeseg = f"'edgeseg[{','.join(wanted)}]'" if wanted else "edgeseg"
    return edgeseg if BACKEND_EXTRAS[backend] else f"{edgeseg} {BACKEND_PACKAGES[backend]}"


def pip_advice(device: Device, backend: str, extras: tuple[str, ...] = ()) -> str:
    """The line to run on the device to get edgeseg with ``backend`` and ``extras``, and the alternative."""
    return (
        f"run on the device: {device.python} -m pip install {pip_requirements(backend, extras)} "
        "(or pass --install-wheel to install this checkout into a venv there)"
    )


async def check_environment(
    connection: asyncssh.SSHClientConnection,
    device: Device,
    backend: str,
    python: str | None = None,
    extras: tuple[str, ...] = (),
) -> DeviceEnvironment:
    """The device's edgeseg with ``backend`` and ``extras`` under ``python`` (default: the device's).

    RemoteError saying what to install when something is missing.
    """
    python = python or device.python
    modules = [BACKEND_PACKAGES[backend], *(EXTRA_MODULES[extra] for extra in extras)]
    command = " ".join([home_path(python), "-c", shlex.quote(PROBE_SCRIPT), *map(shlex.quote, modules)])
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
    advice = pip_advice(device, backend, extras)
    if report.get("edgeseg") is None:
        raise RemoteError(f"{where} has no edgeseg; {advice}")
    if "problem" in report:
        raise RemoteError(f"{where}: edgeseg {report['edgeseg']} cannot run: {report['problem']}; {advice}")
    if report.get("missing"):
        missing = ", ".join(report["missing"])
        needed = ", ".join([f"the {backend} backend", *(f"edgeseg[{extra}]" for extra in extras)])
        raise RemoteError(f"{where} has edgeseg {report['edgeseg']} but not {missing} (needed: {needed}); {advice}")
    description = {**report["machine"], "python_executable": report["executable"], "edgeseg_version": report["edgeseg"]}
    return DeviceEnvironment(python, report["edgeseg"], description)
