"""``--install-wheel``: a wheel of this checkout, installed into a venv on the device (optional)."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh

import edgeseg
from edgeseg.bundle import sha256_of
from edgeseg.remote.connection import home_path, run
from edgeseg.remote.device import Device, RemoteError
from edgeseg.remote.environment import edgeseg_extras
from edgeseg.remote.upload import CACHE, WHEEL_CACHE, put_folder

DEVICE_VENV = f"~/{CACHE}/venv"
VENV_PYTHON = f"{DEVICE_VENV}/bin/python"


def checkout_root() -> Path:
    """The source checkout this edgeseg was imported from; RemoteError when it is an installed package."""
    root = Path(edgeseg.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise RemoteError(
            f"--install-wheel builds a wheel of an edgeseg source checkout, but edgeseg was imported from {root}, "
            "which has no pyproject.toml; install edgeseg on the device yourself"
        )
    return root


def build_wheel(folder: Path) -> Path:
    """Build a wheel of the checkout (no dependencies) into ``folder`` and return its path.

    The build runs on a copy of the package's sources in ``folder``, so the checkout gets no build/ folder and
    no stale file of an earlier build can enter the wheel.
    """
    root, source = checkout_root(), folder / "source"
    shutil.copytree(root / "edgeseg", source / "edgeseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(folder)]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # builds offline with this environment's setuptools
    proc = subprocess.run([*command, str(source)], capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("edgeseg-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise RemoteError(f"building a wheel of this checkout failed: {' '.join(command)}\n{proc.stderr.strip()}")
    return wheels[0]


async def install_wheel(
    connection: asyncssh.SSHClientConnection, device: Device, wheel: Path, backend: str, extras: tuple[str, ...] = ()
) -> str:
    """Install ``wheel`` with what ``backend`` and ``extras`` need into a venv on the device; return its Python.

    The venv sees the device's system packages (a Jetson's TensorRT comes with JetPack); the device needs pip
    access to an index for packages it lacks.
    """
    folder, _ = await put_folder(connection, device, WHEEL_CACHE, sha256_of(wheel), {wheel.name: wheel})
    remote_wheel = home_path(f"~/{folder}/{wheel.name}")
    wanted = edgeseg_extras(backend, extras)
    requirement = remote_wheel + (shlex.quote("[" + ",".join(wanted) + "]") if wanted else "")
    pip = f"{home_path(VENV_PYTHON)} -m pip install --quiet --disable-pip-version-check"
    command = " && ".join(
        [
            f"{home_path(device.python)} -m venv --system-site-packages {home_path(DEVICE_VENV)}",
            f"{pip} {requirement}",
            f"{pip} --force-reinstall --no-deps {remote_wheel}",
        ]
    )
    await run(connection, device, command, f"installing {wheel.name} into {DEVICE_VENV}")
    return VENV_PYTHON
