"""What long work shows while it runs: stage lines and tqdm bars on stderr (bars need the ``progress`` extra),
and quiet third-party logs.

One display for export stages, calibration, parity, training, benchmarks and ``edgeseg predict``. Torch-free.
:func:`configure` (the CLI's ``--quiet``/``--verbose``) sets what is shown: by default stage lines always, bars
only on a terminal; ``quiet`` shows neither; ``verbose`` also lets NNCF, ONNX Runtime and OpenVINO log as they
like (otherwise :func:`quiet_third_party` keeps them to warnings).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

try:
    from tqdm import tqdm
except ImportError:  # the runtime-only install: stage lines, no bars (pip install 'edgeseg[progress]')
    tqdm = None

# Loggers of the libraries export drives; kept at WARNING unless --verbose.
ORT_DEFAULT_SEVERITY = 2  # ONNX Runtime's own default (warnings); it has no getter to read it back
THIRD_PARTY_LOGGERS = ("nncf", "onnxruntime", "openvino", "onnxscript", "onnx_ir", "torch.onnx", "onnxslim")


@dataclass
class _Settings:
    quiet: bool = False
    verbose: bool = False
    bars: bool | None = None  # None: on a terminal only


_settings = _Settings()


def configure(*, quiet: bool = False, verbose: bool = False, bars: bool | None = None) -> None:
    """Set what is shown for the rest of the process (``quiet`` wins over ``verbose``)."""
    _settings.quiet, _settings.verbose, _settings.bars = quiet, verbose and not quiet, bars


def bars_enabled() -> bool:
    """Whether progress bars are drawn: not quiet, and stderr is a terminal unless configured otherwise."""
    if _settings.quiet:
        return False
    return sys.stderr.isatty() if _settings.bars is None else _settings.bars


class Bar(Protocol):
    """What callers use of a progress bar: ``update(n)``, ``n``, ``close()`` and ``with``."""

    n: float

    def update(self, n: float = 1) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, *exc: object) -> Any: ...


class _NoBar:
    """A bar that draws nothing (bars off, or tqdm not installed)."""

    def __init__(self) -> None:
        self.n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def close(self) -> None:
        return None

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def bar(total: int | None, desc: str, unit: str = "it", scale: bool = False) -> Bar:
    """A tqdm bar on stderr (nothing drawn when bars are off or tqdm is missing); ``update(n)`` it, ``close()`` it
    or use it in ``with``. ``scale`` shows counts with SI prefixes (bytes as kB, MB).
    """
    if tqdm is None or not bars_enabled():
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, file=sys.stderr, mininterval=0.25)


def say(line: str) -> None:
    """One status line on stderr (above any bar), unless quiet."""
    if not _settings.quiet:
        if tqdm is None:
            print(line, file=sys.stderr)
        else:
            tqdm.write(line, file=sys.stderr)


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Announce a stage of long work, then its duration: ``what …`` and ``what: 12.3 s``."""
    say(f"{what} …")
    start = time.perf_counter()
    yield
    say(f"{what}: {time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Keep NNCF, ONNX Runtime, OpenVINO and the exporter at warnings, and NNCF's progress bars off, unless verbose.

    NNCF draws its bars with rich on standard output; they are captured and dropped here.
    """
    if _settings.verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in THIRD_PARTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    _set_onnxruntime_severity(3)  # errors only
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        _set_onnxruntime_severity(ORT_DEFAULT_SEVERITY)


def _set_onnxruntime_severity(severity: int) -> None:
    """Set ONNX Runtime's default logger severity (nothing to do without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    ort.set_default_logger_severity(severity)
