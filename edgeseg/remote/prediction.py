"""``edgeseg predict --device``: segment a source on a device with its own backend build; the labels come back here.

Local images, folders, globs and video files are copied to the device once (content-addressed); a camera index or
a stream URL names the device's own camera or a stream as the device sees it. The device runs the same
``edgeseg predict`` into a scratch folder, and the result is fetched and put in place only when complete.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from edgeseg.bundle import Bundle
from edgeseg.remote.connection import connection_error, home_path
from edgeseg.remote.device import Device, RemoteError
from edgeseg.remote.evaluation import content_digest
from edgeseg.remote.session import DeviceSession, Reach, device_session
from edgeseg.remote.upload import CACHE, put_folder
from edgeseg.video import describe_source, open_source
from edgeseg.video_out import check_output

INPUT_CACHE = f"{CACHE}/inputs"
RUNS = f"{CACHE}/runs"
REPORT = "report.json"
MAX_REPORT_BYTES = 16 << 20
# What the device's predict writes into an output folder: <frame name>.png (one plain, not hidden, file name).
_OUTPUT_NAME = re.compile(r"^[^/\x00.][^/\x00]{0,250}\.png$")
FOLDER_OUTPUT = "labels"


@dataclass(frozen=True)
class PredictRequest:
    """The options of one ``edgeseg predict`` (see ``edgeseg predict --help``)."""

    bundle: Bundle
    source: str
    out: str
    color: bool = False
    max_frames: int | None = None
    backend: str | None = None
    threads: int | None = None
    any_precision: bool = False
    live: bool = False
    inferences: int | None = None


@dataclass(frozen=True)
class _Plan:
    """The local files to copy, the source as the device names it, what the output is and the extras it needs."""

    files: dict[str, Path]
    digest: str  # of the files' content (see content_digest)
    kind: str  # image, folder or video (see edgeseg.video_out.check_output)
    out: Path
    inputs: list[Path]
    extras: tuple[str, ...]


def _plan(request: PredictRequest) -> _Plan:
    """Check the source and --out here, before any connection."""
    spec = describe_source(request.source)
    files: dict[str, Path] = {}
    if spec.kind in ("image", "images", "video"):
        if spec.kind == "video":
            paths = [Path(spec.text)]
        else:
            with open_source(spec) as source:
                paths = source.input_files()
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"source {path} does not exist or is not a file")
            if path.name in files:
                raise ValueError(f"two inputs are both named {path.name}; their labels would overwrite each other")
            files[path.name] = path
    kind, out = check_output(request.out, spec.single_image, list(files.values()), color=request.color)
    needs_video = spec.kind not in ("image", "images") or kind == "video"
    extras = ("image", "video") if needs_video else ("image",)
    return _Plan(files, content_digest(files), kind, out, list(files.values()), extras)


def _source_word(request: PredictRequest, plan: _Plan, folder: str | None) -> str:
    """The SOURCE argument on the device: the copied file or folder, or the camera index or URL as given."""
    if folder is None:
        return shlex.quote(request.source)
    spec = describe_source(request.source)
    return home_path(f"~/{folder}" if spec.kind == "images" else f"~/{folder}/{next(iter(plan.files))}")


def _commit(plan: _Plan, fetched: Path) -> str:
    """Put the fetched output in place (a file by one rename; a folder's PNGs one by one) and say what was written."""
    if plan.kind != "folder":
        os.replace(fetched, plan.out)
        return str(plan.out)
    names = sorted(p.name for p in fetched.iterdir())
    inputs = {p.resolve() for p in plan.inputs}
    for name in names:
        target = plan.out / name
        if target.resolve() in inputs or target.is_dir():
            raise ValueError(f"--out {plan.out}: {target} is an input image or a folder; give another folder")
    for name in names:
        os.replace(fetched / name, plan.out / name)
    return f"{len(names)} label PNGs in {plan.out}"


async def _output_names(sftp: asyncssh.SFTPClient, device: Device, folder: str) -> list[str]:
    """The label PNGs the device wrote into ``folder``: plain names of regular files, refused otherwise."""
    names = []
    for entry in await sftp.readdir(folder):
        name = str(entry.filename)
        if name in (".", ".."):
            continue
        mode = (await sftp.lstat(f"{folder}/{name}")).permissions or 0
        if not (_OUTPUT_NAME.match(name) and stat.S_ISREG(mode)):
            raise RemoteError(f"device {device.name}: its output holds {name!r}, not a label PNG; nothing written")
        names.append(name)
    return names


async def _fetch(session: DeviceSession, run_folder: str, remote_out: str, plan: _Plan) -> tuple[str, dict[str, Any]]:
    """Fetch the device's output into a hidden sibling of --out, then commit it; return the summary and report."""
    stage = plan.out.parent / f".{plan.out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    if plan.kind == "folder":
        stage = plan.out / stage.name
    try:
        async with session.connection.start_sftp_client() as sftp:
            if plan.kind == "folder":
                stage.mkdir()
                for name in await _output_names(sftp, session.device, remote_out):
                    await sftp.get(f"{remote_out}/{name}", str(stage / name))
            else:
                await sftp.get(remote_out, str(stage))
            async with sftp.open(f"{run_folder}/{REPORT}") as f:
                report = json.loads(await f.read(MAX_REPORT_BYTES))
        return _commit(plan, stage), report
    except (asyncssh.SFTPConnectionLost, asyncssh.ConnectionLost, asyncssh.DisconnectError) as error:
        raise connection_error(session.device, error) from None
    except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as error:
        raise RemoteError(f"device {session.device.name}: fetching {remote_out} failed: {error.reason}") from None
    finally:
        if stage.is_dir():
            shutil.rmtree(stage, ignore_errors=True)
        elif stage.exists():
            stage.unlink()


def _predict_command(
    python: str, bundle_folder: str, source: str, remote_out: str, run_folder: str, request: PredictRequest
) -> str:
    """The device's ``edgeseg predict`` command line, writing into ``remote_out`` and the report into the run folder."""
    words = [home_path(python), "-m", "edgeseg", "predict", home_path(f"~/{bundle_folder}"), source]
    words += ["--out", home_path(f"~/{remote_out}"), "--json", home_path(f"~/{run_folder}/{REPORT}")]
    words += ["--color"] if request.color else []
    words += ["--any-precision"] if request.any_precision else []
    words += ["--live"] if request.live else []
    for flag, value in (
        ("--max-frames", request.max_frames),
        ("--backend", request.backend),
        ("--threads", request.threads),
        ("--inferences", request.inferences),
    ):
        words += [flag, shlex.quote(str(value))] if value is not None else []
    return " ".join(words)


async def predict_on_device(device: Device, reach: Reach, request: PredictRequest) -> dict[str, Any]:
    """Run ``edgeseg predict`` on ``device``; write --out here; return the device's report plus ``device``."""
    plan = _plan(request)
    bundle = request.bundle
    async with device_session(device, reach) as session:
        environment = await session.environment(request.backend or bundle.default_backend, plan.extras)
        bundle_folder, copied = await session.copy_bundle(bundle)
        input_folder = None
        if plan.files:
            input_folder, _ = await put_folder(session.connection, device, INPUT_CACHE, plan.digest, plan.files)
        run_folder = f"{RUNS}/{secrets.token_hex(8)}"
        remote_out = f"{run_folder}/{FOLDER_OUTPUT if plan.kind == 'folder' else plan.out.name}"
        source = _source_word(request, plan, input_folder)
        predict = _predict_command(environment.python, bundle_folder, source, remote_out, run_folder, request)
        prepare = f"mkdir -p {home_path(f'~/{remote_out}' if plan.kind == 'folder' else f'~/{run_folder}')}"
        try:
            await session.run_command(f"{prepare} && {predict}", f"predicting {request.source}")
            summary, report = await _fetch(session, run_folder, remote_out, plan)
        finally:
            await session.run_command(f"rm -rf {home_path(f'~/{run_folder}')}", "removing the run's scratch folder")
        report["device"] = session.describe(environment, bundle_folder, copied)
    report.update(source=request.source, wrote=summary)
    return report
