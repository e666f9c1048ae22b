"""Output folders written the way package managers install: staged, locked, switched in by one atomic rename.

A writer (``staged_folder``) holds an advisory lock next to the output, stages the result in a hidden sibling
``.NAME.partial-<pid>-<random>`` and swaps it in with ``renameat2(RENAME_EXCHANGE)``, so the path always holds
either the old folder or the new one. SIGTERM and SIGINT unwind through the clean-up; whatever a SIGKILL
leaves behind is removed (or, for an interrupted fallback swap, put back) by the next writer.
An existing output is replaced only when it is a folder of the expected kind, and never when it holds an input.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PARTIAL_TAG = "partial"  # staging folders: .NAME.partial-<pid>-<random>
RETIRED_TAG = "old"  # the fallback swap's previous folder: .NAME.old-<pid>-<random>
LOCK_SUFFIX = "lock"  # the advisory lock file: .NAME.lock
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.(?P<tag>{PARTIAL_TAG}|{RETIRED_TAG})-(?P<pid>\d+)-[0-9a-f]+$")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_RENAMEAT2_SYSCALL = {"x86_64": 316, "aarch64": 276}
_EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class FolderBusyError(RuntimeError):
    """Another process is writing the same output folder."""


@dataclass(frozen=True)
class FolderKind:
    """What a replaceable output folder holds: a JSON ``marker`` file whose ``format`` field is ``format``."""

    label: str
    marker: str
    format: str

    def recognises(self, folder: Path) -> bool:
        """Whether ``folder`` has this kind's marker file with this kind's format."""
        marker = folder / self.marker
        if marker.is_symlink() or not marker.is_file():
            return False
        try:
            content = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(content, dict) and content.get("format") == self.format


@dataclass(frozen=True)
class Stage:
    """Where a writer puts its result (``folder``) and its temporary files (``scratch``, never published)."""

    folder: Path
    scratch: Path


def output_path(path: Path) -> Path:
    """``path`` made absolute, ``..`` and symlinks resolved in its parent; a final symlink is kept as it is."""
    absolute = Path(os.path.abspath(path))
    if not absolute.name:
        return absolute
    return absolute.parent.resolve() / absolute.name


def _protected_places() -> list[tuple[Path, str]]:
    places = [(Path.cwd().resolve(), "the current folder or one of its parents")]
    with suppress(RuntimeError):  # no HOME and no password-database entry: no home folder to protect
        places.append((Path.home().resolve(), "the home folder or one of its parents"))
    return places


def check_output_folder(out: Path, kind: FolderKind, force: bool, inputs: Mapping[str, Path | None]) -> None:
    """Raise ValueError or FileExistsError, saying what to do, unless ``out`` may be written.

    Never written: the file-system root, the current folder or its parents, the home folder or its parents,
    a symlink, a file, a folder holding one of ``inputs`` (option → path). An existing non-empty folder is
    replaced only with ``force`` and only when ``kind`` recognises it.
    """
    out = output_path(out)
    if not out.name:
        raise ValueError(f"--out {out} is the file-system root; choose a new folder for the {kind.label}")
    for place, what in _protected_places():
        if place == out or place.is_relative_to(out):
            raise ValueError(f"--out {out} is {what}; choose a new folder for the {kind.label}")
    if out.is_symlink():
        raise FileExistsError(f"--out {out} is a symbolic link; pass the folder it points to, or a new folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; choose a new folder for the {kind.label}")
    for option, given in inputs.items():
        if given is not None and any(p == out or p.is_relative_to(out) for p in (output_path(given), given.resolve())):
            raise ValueError(f"--out {out} holds the {option} input {given}; write the {kind.label} to another folder")
    if not any(out.iterdir()):
        return
    if not kind.recognises(out):
        raise FileExistsError(
            f"--out {out} exists and is not an {kind.label} (no {kind.marker} of format {kind.format!r}), so it is "
            "never replaced, --force or not; choose a new folder, or move that one away yourself"
        )
    if not force:
        raise FileExistsError(f"--out {out} already holds an {kind.label}; pass --force to replace it")


def _exchange(first: Path, second: Path) -> None:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); OSError where unsupported."""
    machine = os.uname().machine
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "renameat2 exists on Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    args = (_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if hasattr(libc, "renameat2"):  # glibc 2.28+, musl 1.2.4+
        result = libc.renameat2(*args)
    elif machine in _RENAMEAT2_SYSCALL:
        result = libc.syscall(_RENAMEAT2_SYSCALL[machine], *args)
    else:
        raise OSError(errno.ENOSYS, f"neither a renameat2 function nor its syscall number known on {machine}")
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def _leftover_name(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out`` (same parent), replacing what was there.

    ``out`` holds the old folder or the new one at every instant: the two are exchanged atomically.
    """
    if not os.path.lexists(out):
        staging.rename(out)
        return
    try:
        _exchange(staging, out)
    except OSError as error:
        if error.errno not in _EXCHANGE_UNSUPPORTED:
            raise
        # No atomic exchange here (not Linux, an old kernel, or a file system that refuses it): two renames.
        # Between them ``out`` is missing for an instant; the old folder waits under a recognisable name,
        # and the next writer (``clean_leftovers``) puts it back if a crash struck in that instant.
        retired = _leftover_name(out, RETIRED_TAG)
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired)
    else:
        shutil.rmtree(staging)  # the exchange left the old folder there


def _lock_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process that has not written its pid yet"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the advisory lock ``.NAME.lock`` beside ``out``; FolderBusyError at once when another process holds it.

    The lock file carries the holder's pid and is removed by its holder while still locked; a process that
    locked a file which was removed meanwhile notices (another inode at the path) and tries again.
    """
    path = out.parent / f".{out.name}.{LOCK_SUFFIX}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{out} is being written by another edgeseg process ({holder}, lock {path}); "
                "wait for it to finish or choose another --out"
            ) from None
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        locked = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
            break
        os.close(fd)  # the holder before us removed this file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: see the docstring
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> None:
    """Remove what killed writers left in ``out``'s parent; call while holding ``folder_lock(out)``.

    For ``out`` itself: every staging folder goes, and a previous folder retired by an interrupted fallback
    swap is put back when ``out`` is missing. For other names: staging folders whose process is gone and
    whose lock is free.
    """
    found: dict[str, list[tuple[Path, str, int]]] = {}
    for entry in out.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.setdefault(match["name"], []).append((entry, match["tag"], int(match["pid"])))
    for name, leftovers in found.items():
        if name == out.name:
            _clean_own(out, leftovers)
        else:
            _clean_other(
                out.parent / name, [path for path, tag, pid in leftovers if tag == PARTIAL_TAG and not _pid_alive(pid)]
            )


def _clean_own(out: Path, leftovers: list[tuple[Path, str, int]]) -> None:
    retired = sorted((path for path, tag, _ in leftovers if tag == RETIRED_TAG), key=lambda p: p.stat().st_mtime)
    if retired and not os.path.lexists(out):
        retired.pop().rename(out)
    for path in [path for path, tag, _ in leftovers if tag == PARTIAL_TAG] + retired:
        shutil.rmtree(path)


def _clean_other(out: Path, stale: list[Path]) -> None:
    if not stale:
        return
    try:
        with folder_lock(out):
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
    except FolderBusyError:
        return  # its writer is at work; it cleans up itself


class _Termination:
    """The signal (SIGTERM or SIGINT) received in a staged block, kept even where a library swallows its exception."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.raise_for_signal()

    def raise_for_signal(self, cause: BaseException | None = None) -> None:
        """Raise KeyboardInterrupt (SIGINT) or SystemExit(143) (SIGTERM) if one arrived; else return."""
        if self.signum is None:
            return
        error: BaseException = KeyboardInterrupt() if self.signum == signal.SIGINT else SystemExit(128 + self.signum)
        raise error from cause


@contextmanager
def _cleanup_on_termination() -> Iterator[_Termination]:
    """While active, SIGTERM raises SystemExit(143) and SIGINT KeyboardInterrupt, so ``finally`` blocks run.

    The yielded ``_Termination`` remembers the signal: a library that catches or converts the exception (torch's
    exporter, tqdm) cannot make the block look finished. Handlers are installed only over the default action (a
    caller that ignores or handles a signal keeps its policy) and only in the main thread (the only one that may);
    the previous ones come back after.
    """
    termination = _Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    defaults = {signal.SIGTERM: (signal.SIG_DFL,), signal.SIGINT: (signal.SIG_DFL, signal.default_int_handler)}
    installed = {}
    for signum, default_actions in defaults.items():
        if signal.getsignal(signum) in default_actions:
            installed[signum] = signal.signal(signum, termination.handle)
    try:
        yield termination
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


@contextmanager
def staged_folder(
    out: Path, kind: FolderKind, force: bool = False, inputs: Mapping[str, Path | None] | None = None
) -> Iterator[Stage]:
    """Yield a ``Stage`` to fill; when the block completes, its folder replaces ``out`` in one atomic step.

    Raises FolderBusyError when another process writes ``out``, and what ``check_output_folder`` raises.
    An exception, SIGTERM or SIGINT in the block leaves ``out`` as it was and removes the stage.
    """
    out = output_path(out)
    inputs = inputs or {}
    check_output_folder(out, kind, force, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out), _cleanup_on_termination() as termination:
        clean_leftovers(out)
        check_output_folder(out, kind, force, inputs)  # again, now that no other writer can change it
        staging = _leftover_name(out, PARTIAL_TAG)
        try:
            staging.mkdir()
            stage = Stage(staging / "result", staging / "scratch")
            stage.folder.mkdir()
            stage.scratch.mkdir()
            try:
                yield stage
            except BaseException as error:
                termination.raise_for_signal(error)  # a signal's exception, even where a library replaced it
                raise
            termination.raise_for_signal()  # a signal whose exception a library swallowed: never commit
            replace_folder(stage.folder, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
