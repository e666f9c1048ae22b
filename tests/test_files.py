"""Output folders: atomic replacement, the advisory lock, clean-up after signals and kills, --force confinement.

The process tests (marked slow) run real ``edgeseg export`` subprocesses of afformer-tiny at 64x64 and
signal them while their staging folder exists; only the concurrency test lets one export finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeseg import files
from edgeseg.bundle import read_bundle
from edgeseg.data import generate_synthetic
from edgeseg.export import ExportRequest, export_bundle
from edgeseg.export.pipeline import BUNDLE_FOLDER
from edgeseg.files import FolderBusyError, clean_leftovers, folder_lock, replace_folder, staged_folder

REPO = Path(__file__).resolve().parents[1]
EXPORT_ARGS = ("export", "--model", "afformer-tiny", "--input-size", "64x64", "--target", "onnx", "--parity-count", "2")
STARTUP_SECONDS = 180  # imports and model building on a loaded machine


def _fake_bundle(folder: Path, tag: str = "old") -> Path:
    """A folder the writer recognises as an edgeseg bundle (its manifest's format), holding ``tag``."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "edgeseg-bundle", "tag": tag}))
    return folder


def _tag(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["tag"]


def _start_export(out: Path, tmp: Path, *extra: str) -> subprocess.Popen[str]:
    """An ``edgeseg export`` subprocess writing ``out``, with its temporary files under ``tmp``."""
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    command = [sys.executable, "-m", "edgeseg", *EXPORT_ARGS, "--out", str(out), *extra]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and the child would inherit that: give it the default back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def _wait_for(condition: Callable[[], object], process: subprocess.Popen[str]) -> None:
    """Poll until ``condition()`` is true; fail if ``process`` ends first or it takes too long."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"export ended (status {process.returncode}) too early: {process.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("export never reached the awaited point")
        time.sleep(0.05)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---- replace_folder: the switch --------------------------------------------------------------------


WATCHER = """
import os, sys
manifest, ready, stop = sys.argv[1:]
open(ready, "w").close()
missing = 0
while not os.path.exists(stop):
    for _ in range(1000):
        missing += not os.path.exists(manifest)
print(missing)
"""


def test_replaced_folder_is_never_missing(tmp_path):
    out = _fake_bundle(tmp_path / "bundle", "0")
    ready, stop = tmp_path.parent / f"{tmp_path.name}.ready", tmp_path.parent / f"{tmp_path.name}.stop"
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(out / "manifest.json"), str(ready), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_for(ready.exists, watcher)
    try:
        for i in range(1, 301):
            replace_folder(_fake_bundle(tmp_path / f".bundle.partial-{i}", str(i)), out)
    finally:
        stop.touch()
        missing = int(watcher.communicate(timeout=60)[0])
    assert missing == 0, f"another process found no bundle at the path {missing} times"
    assert _tag(out) == "300" and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_fallback_swap_replaces_and_leaves_nothing(tmp_path, monkeypatch):
    def unsupported(first: Path, second: Path) -> None:
        raise OSError(22, "Invalid argument")  # what a file system without RENAME_EXCHANGE answers

    monkeypatch.setattr(files, "_exchange", unsupported)
    out = _fake_bundle(tmp_path / "bundle", "old")
    replace_folder(_fake_bundle(tmp_path / ".bundle.partial-1", "new"), out)
    assert _tag(out) == "new" and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_next_writer_restores_a_bundle_retired_by_an_interrupted_fallback_swap(tmp_path):
    out = tmp_path / "bundle"
    _fake_bundle(tmp_path / f".bundle.old-{os.getpid()}-0a1b2c3d", "previous")  # killed between the two renames
    _fake_bundle(tmp_path / f".bundle.partial-{os.getpid()}-4e5f6a7b", "half-written")
    with folder_lock(out):
        clean_leftovers(out)
    assert _tag(out) == "previous" and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_stale_staging_of_another_output_is_removed_only_when_its_writer_is_gone(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = _fake_bundle(tmp_path / f".other.partial-{dead_pid}-0a1b2c3d")
    alive = _fake_bundle(tmp_path / f".third.partial-{os.getpid()}-0a1b2c3d")
    out = tmp_path / "bundle"
    with folder_lock(out):
        clean_leftovers(out)
    assert not stale.exists() and alive.exists()


# ---- the advisory lock -----------------------------------------------------------------------------


def test_second_writer_fails_at_once_naming_the_holder_and_the_lock_file_goes(tmp_path):
    out = tmp_path / "bundle"
    with folder_lock(out):
        assert (tmp_path / ".bundle.lock").read_text().strip() == str(os.getpid())
        started = time.monotonic()
        with pytest.raises(FolderBusyError, match=rf"being written by another edgeseg process \(pid {os.getpid()}"):
            export_bundle(ExportRequest(model="afformer-tiny", out=out, target="onnx", input_size=(64, 64)))
        assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_concurrent_exports_to_one_folder_exactly_one_wins(tmp_path):
    out = tmp_path / "bundle"
    first = _start_export(out, tmp_path / "tmp")
    _wait_for(lambda: _partials(out), first)
    second = subprocess.run(
        [sys.executable, "-m", "edgeseg", *EXPORT_ARGS, "--out", str(out), "--force"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )
    assert second.returncode == 2, second.stderr
    assert f"being written by another edgeseg process (pid {first.pid}" in second.stderr
    _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors[-2000:]
    read_bundle(out).verify()
    assert _leftovers(tmp_path) == []


# ---- signals and kills -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "delay"),
    [(signal.SIGTERM, 143, 0.0), (signal.SIGINT, 130, 0.0), (signal.SIGINT, 130, 3.0)],
    ids=["sigterm-at-staging", "sigint-at-staging", "sigint-in-torch-export"],
)
def test_terminated_export_removes_its_staging_and_scratch(tmp_path, signum, status, delay):
    out = tmp_path / "bundle"
    export = _start_export(out, tmp_path / "tmp")
    _wait_for(lambda: _partials(out), export)
    time.sleep(delay)
    export.send_signal(signum)
    _, errors = export.communicate(timeout=STARTUP_SECONDS)
    assert export.returncode == status, errors[-2000:]
    assert _leftovers(tmp_path) == [] and not out.exists()
    assert list((tmp_path / "tmp").glob("edgeseg-*")) == []


def _swallow(error: BaseException) -> None:
    """What some libraries do with an interrupt: nothing."""


def _convert(error: BaseException) -> None:
    """What tqdm does when an interrupt lands in its lock creation: another exception."""
    raise AttributeError("type object 'tqdm' has no attribute '_lock'") from error


@pytest.fixture
def default_signal_handlers():
    """SIGINT and SIGTERM at Python's defaults for the test (a background shell starts pytest with SIGINT ignored)."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("default_signal_handlers")
@pytest.mark.parametrize("library", [_swallow, _convert], ids=["swallowed", "converted"])
@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_a_signal_a_library_swallows_or_converts_still_stops_the_block_and_commits_nothing(
    tmp_path, library, signum, expected
):
    out = _fake_bundle(tmp_path / "bundle", "old")
    with pytest.raises(expected) as raised, staged_folder(out, BUNDLE_FOLDER, force=True) as stage:
        (stage.folder / "manifest.json").write_text(json.dumps({"format": "edgeseg-bundle", "tag": "new"}))
        try:
            os.kill(os.getpid(), signum)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        except BaseException as error:
            library(error)
    if expected is SystemExit:
        assert raised.value.code == 143
    assert _tag(out) == "old" and [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back


@pytest.mark.slow
def test_export_after_a_sigkill_removes_the_killed_staging(tmp_path):
    out = _fake_bundle(tmp_path / "bundle", "old")
    killed = _start_export(out, tmp_path / "tmp", "--force")
    _wait_for(lambda: _partials(out), killed)
    killed.kill()
    killed.communicate()
    left = _partials(out)
    assert left, "a SIGKILL should leave the staging folder (this test checks that the next export removes it)"
    following = _start_export(out, tmp_path / "tmp", "--force")
    _wait_for(lambda: set(_partials(out)) - set(left), following)
    assert not any(p.exists() for p in left)
    following.send_signal(signal.SIGTERM)
    following.communicate(timeout=STARTUP_SECONDS)
    assert _tag(out) == "old" and _leftovers(tmp_path) == []


# ---- what --force may replace ----------------------------------------------------------------------


def _request(out: Path, **changes: object) -> ExportRequest:
    settings: dict[str, object] = {"force": True, **changes}
    return ExportRequest(model="afformer-tiny", out=out, target="onnx", input_size=(64, 64), **settings)  # type: ignore[arg-type]


def test_force_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"is not an edgeseg bundle .* never replaced, --force or not"):
        export_bundle(_request(out))
    assert (out / "holiday.jpg").read_bytes() == b"precious"
    (out / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FileExistsError, match="is not an edgeseg bundle"):
        export_bundle(_request(out))


def test_an_existing_bundle_needs_force(tmp_path):
    out = _fake_bundle(tmp_path / "bundle")
    with pytest.raises(FileExistsError, match="already holds an edgeseg bundle; pass --force"):
        export_bundle(_request(out, force=False))


@pytest.mark.parametrize("option", ["checkpoint", "calib", "parity_data"])
def test_force_never_replaces_a_bundle_holding_an_input(tmp_path, option):
    out = _fake_bundle(tmp_path / "bundle")
    given = out / "inputs" / "weights.pth"
    if option == "checkpoint":
        given.parent.mkdir()
        given.write_bytes(b"not really weights")
    else:
        given = given.parent
        given.mkdir()
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"holds the {flag} input"):
        export_bundle(_request(out, **{option: given}))
    assert given.exists()


def test_force_never_replaces_the_bundle_that_is_the_input_through_a_link(tmp_path):
    out = _fake_bundle(tmp_path / "bundle")
    (out / "weights.pth").write_bytes(b"weights")
    (tmp_path / "weights.pth").symlink_to(out / "weights.pth")
    with pytest.raises(ValueError, match="holds the --checkpoint input"):
        export_bundle(_request(out, checkpoint=tmp_path / "weights.pth"))


def test_force_refuses_files_links_and_protected_places(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is not a folder"):
        export_bundle(_request(tmp_path / "file"))
    (tmp_path / "link").symlink_to(_fake_bundle(tmp_path / "bundle"))
    with pytest.raises(FileExistsError, match="symbolic link"):
        export_bundle(_request(tmp_path / "link"))
    with pytest.raises(ValueError, match="file-system root"):
        export_bundle(_request(Path("/")))
    home = _fake_bundle(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ValueError, match="the home folder"):
        export_bundle(_request(home))
    work = _fake_bundle(tmp_path / "work")
    (work / "sub").mkdir()
    monkeypatch.chdir(work / "sub")
    for place in (work / "sub", work, Path(".."), Path(".")):
        with pytest.raises(ValueError, match="the current folder or one of its parents"):
            export_bundle(_request(place))
    assert (home / "manifest.json").exists() and (work / "manifest.json").exists()


def test_dataset_force_replaces_only_a_dataset(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"is not an edgeseg dataset .* never replaced"):
        generate_synthetic(out, 2, (32, 32), force=True)
    assert (out / "notes.txt").read_text() == "precious"
    (out / "notes.txt").unlink()
    generate_synthetic(out, 2, (32, 32))
    generate_synthetic(out, 3, (32, 32), force=True)
    assert len(list((out / "images").iterdir())) == 3 and [p.name for p in tmp_path.iterdir()] == ["set"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_new_folders_honour_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        dataset = generate_synthetic(tmp_path / "new" / "set", 2, (64, 64), seed=0).root
    finally:
        os.umask(previous)
    for folder in (dataset, dataset / "images", dataset / "labels", tmp_path / "new"):
        assert folder.stat().st_mode & 0o777 == mode, folder
    assert (dataset / "dataset.json").stat().st_mode & 0o777 == mode & 0o666
