"""Download one file into the cache: resumable (HTTP Range into a ``.part`` file), verified, renamed when whole.

urllib only. A file is published under its final name only after it is complete and its hash (when known)
matched, so the cache never holds a half-written or unverified file under a name the loader would take.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 1 << 20
MAX_BYTES = 4 << 30  # no released checkpoint is near this; a larger answer is refused
TIMEOUT_S = 60.0
ATTEMPTS = 3
USER_AGENT = "edgeseg-weights (urllib)"

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


class DownloadError(OSError):
    """A download failed; the message says what happened and what to do."""


class _BrokenTransfer(DownloadError):
    """The connection failed or ended early: worth resuming."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_url(url: str) -> None:
    if not re.match(r"^https?://", url):
        raise DownloadError(f"refusing to download {url!r}: only http(s) URLs are fetched")


def _total_from(response: http.client.HTTPResponse, start: int) -> int | None:
    """The whole file's size from Content-Range (a 206) or Content-Length (a 200)."""
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"^bytes (\d+)-\d+/(\d+)$", content_range)
    if response.status == 206 and match:
        if int(match.group(1)) != start:
            raise DownloadError(f"the server resumed at byte {match.group(1)}, not at {start}")
        return int(match.group(2))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _fetch_once(url: str, part: Path, progress: Progress | None) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size); raises on any short or failed read."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # the scheme was checked in download()
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # asked past the end: the .part may already be whole; the hash decides
            return
        raise DownloadError(
            f"{url} answered HTTP {error.code} {error.reason}; the publisher may have moved or removed the file: "
            "download it by hand and pass --weights PATH"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _BrokenTransfer(
            f"cannot reach {url} ({reason}); check the network, or download the file by hand and pass --weights PATH"
        ) from None
    with response:
        if response.status == 200 and start:  # the server ignored the Range: start again
            start = 0
        total = _total_from(response, start)
        if total is not None and total > MAX_BYTES:
            raise DownloadError(f"{url} is {total} bytes, over the {MAX_BYTES} byte limit for a checkpoint")
        done = start
        with part.open("ab" if start else "wb") as file:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as error:
                    raise _BrokenTransfer(f"the download of {url} broke after {done} bytes ({error})") from None
                if not block:
                    break
                done += len(block)
                if done > MAX_BYTES:
                    raise DownloadError(f"{url} sent more than {MAX_BYTES} bytes; refused")
                file.write(block)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:
            raise _BrokenTransfer(f"the download of {url} stopped at {done} of {total} bytes")


def _verify(part: Path, url: str, sha256: str | None, sha256_prefix: str | None) -> None:
    """Check ``part`` against the known hash; a mismatch removes it."""
    if sha256 is None and sha256_prefix is None:
        return
    actual = _sha256(part)
    wanted = (sha256 or sha256_prefix or "").lower()
    shown = wanted if sha256 is not None else f"{wanted}..."
    if not actual.startswith(wanted) or (sha256 is not None and actual != wanted):
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} does not have the published hash (sha256 {actual}, expected {shown}); "
            "the file was deleted. The publisher may have replaced it, or the transfer was tampered with: "
            "download it by hand from the publisher's page and check it before passing --weights PATH"
        )


@contextlib.contextmanager
def _exclusive(lock: Path, destination: Path) -> Iterator[None]:
    """Hold ``lock`` (POSIX advisory lock, released if the process dies) so two processes never share a ``.part``."""
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): concurrent downloads of one file are not detected
        yield
        return
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another process is downloading {destination} (it holds {lock}); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def download(
    url: str,
    destination: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    attempts: int = ATTEMPTS,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``url`` to ``destination`` unless it is already there; returns ``destination``.

    Bytes go to ``destination + '.part'``; a broken transfer keeps them, and the next attempt (in this call,
    up to ``attempts``, or a later call) asks the server for the rest with an HTTP Range request. The file is
    renamed into place only when complete and, when ``sha256`` (or a ``sha256_prefix``) is given, matching it.
    A second process downloading the same file meanwhile is refused (``destination + '.lock'``).
    """
    if destination.is_file():
        return destination
    _check_url(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    with _exclusive(destination.with_name(destination.name + ".lock"), destination):
        if destination.is_file():  # another process finished it while this one waited
            return destination
        last: DownloadError | None = None
        for _ in range(max(1, attempts)):
            try:
                _fetch_once(url, part, progress)
            except _BrokenTransfer as error:
                last = error
                continue
            _verify(part, url, sha256, sha256_prefix)
            os.replace(part, destination)
            return destination
        kept = part.stat().st_size if part.exists() else 0
        if not kept:
            part.unlink(missing_ok=True)
            raise DownloadError(str(last))
        raise DownloadError(f"{last}; {kept} bytes are kept in {part}: run the same command again to resume")
