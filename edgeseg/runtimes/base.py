"""The base every inference backend derives from: validated arguments, I/O shapes, thread-safe calls, ``close()``."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

import numpy as np


class BackendUnavailableError(ImportError):
    """The Python package a backend needs is not installed."""


class RunnerClosedError(RuntimeError):
    """``infer`` was called on a runner (or Segmenter) after ``close()``."""


# More threads than this many per core only adds contention (and tens of thousands crash the runtimes).
THREADS_PER_CORE = 4


def check_threads(threads: int | None) -> int | None:
    """Validate a thread count: None (backend default) or 1 to ``THREADS_PER_CORE`` × this machine's cores."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None (backend default), got {threads!r}")
    cores = os.cpu_count() or 1
    if threads > THREADS_PER_CORE * cores:
        raise ValueError(
            f"{threads} threads is more than {THREADS_PER_CORE}× this machine's {cores} cores; "
            f"give at most {THREADS_PER_CORE * cores}"
        )
    return threads


def model_shape(dims: Iterable[object]) -> tuple[int | None, ...]:
    """A backend's view of a shape as ints, with None for every symbolic (dynamic) dimension."""
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None for d in dims)


RunnerType = TypeVar("RunnerType", bound="Runner")


class Runner(ABC):
    """One loaded model on one backend: a single float32 input, a single float32 output.

    Every runner is safe to share between threads: concurrent :meth:`infer` calls each get their own result
    (each backend says how). :meth:`close` releases the model once no call is in flight; a runner is also a
    context manager. Subclasses call ``super().__init__`` first, then :meth:`_record_io`, and implement
    :meth:`_infer` and, when they hold resources beyond Python references, :meth:`_release`.
    """

    name: ClassVar[str]

    def __init__(self, path: str | Path, threads: int | None) -> None:
        self.path = Path(path)
        self.threads = check_threads(threads)
        self.input_shape: tuple[int | None, ...] = ()  # None for a dynamic dimension
        self.output_shape: tuple[int | None, ...] = ()
        self._closed = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def _record_io(self, inputs: list[Iterable[object]], outputs: list[Iterable[object]]) -> None:
        """Check that the model has one input and one output, and record their shapes (given as dims per tensor)."""
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.input_shape = model_shape(inputs[0])
        self.output_shape = model_shape(outputs[0])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` and return its output as a float32 array the caller owns.

        Raises :class:`RunnerClosedError` after :meth:`close`.
        """
        with self._idle:
            if self._closed:
                raise RunnerClosedError(
                    f"the {self.name} runner of {self.path} is closed; load the model again to run it"
                )
            self._in_flight += 1
        try:
            return self._infer(x)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The backend's inference; may run in several threads at once."""

    def _release(self) -> None:  # noqa: B027 - optional hook: most backends free everything with their references
        """Free the backend's resources; called once, with no call in flight."""

    def close(self) -> None:
        """Release the model after the calls in flight finish; later calls raise. Closing twice is harmless."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._in_flight == 0)
        self._release()

    def __enter__(self: RunnerType) -> RunnerType:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"{type(self).__name__}(path={str(self.path)!r}, threads={self.threads}{state})"
