"""What long work shows while it runs: stage lines and tqdm bars on stderr, and quiet third-party logs.

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

from tqdm import tqdm

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


def bar(total: int | None, desc: str, unit: str = "it", scale: bool = False) -> tqdm:
    """A tqdm bar on stderr (disabled when bars are off); ``update(n)`` it, ``close()`` it or use it in ``with``.

    ``scale`` shows counts with SI prefixes (bytes as kB, MB).
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        file=sys.stderr,
        disable=not bars_enabled(),
        mininterval=0.25,
    )


def say(line: str) -> None:
    """One status line on stderr (above any bar), unless quiet."""
    if not _settings.quiet:
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
