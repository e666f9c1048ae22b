"""The base every inference backend derives from: validated arguments, I/O shapes, thread-safe calls, ``close()``."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from edgeseg.closing import Closeable


class BackendUnavailableError(ImportError):
    """The Python package a backend needs is not installed."""


class RunnerClosedError(RuntimeError):
    """``infer`` was called on a runner (or Segmenter) after ``close()``."""


# More threads than this many per core only adds contention (and tens of thousands crash the runtimes).
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


Result = TypeVar("Result")


class Runner(Closeable, ABC):
    """One loaded model on one backend: one input (float32, or a uint8 frame), one or more outputs.

    :meth:`infer` returns the first output as float32 (the logits of a plain bundle); :meth:`infer_all`
    returns every output by name in its own dtype (logits, uint8/int32 labels, float16 confidence).

    Every runner is safe to share between threads: concurrent :meth:`infer` calls each get their own result
    (each backend says how). :meth:`close` releases the model once no call is in flight; a runner is also a
    context manager. Subclasses call ``super().__init__`` first, then :meth:`_record_io`, and implement
    :meth:`_infer` and, when they hold resources beyond Python references, :meth:`_release`.
    """

    name: ClassVar[str]

    def __init__(self, path: str | Path, threads: int | None, config: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.threads = check_threads(threads)
        self.config = dict(config or {})
        self.input_shape: tuple[int | None, ...] = ()  # None for a dynamic dimension
        self.output_shape: tuple[int | None, ...] = ()  # of the first output
        self.input_dtype = np.dtype(np.float32)
        self.output_names: tuple[str, ...] = ()
        self.output_shapes: dict[str, tuple[int | None, ...]] = {}
        self._closed = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def _record_io(
        self,
        inputs: list[Iterable[object]],
        outputs: list[Iterable[object]],
        output_names: list[str] | None = None,
        input_dtype: str = "float32",
    ) -> None:
        """Check that the model has one input and at least one output; record shapes (dims per tensor), names, dtype."""
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"{self.path}: expected one input and an output, got {len(inputs)} and {len(outputs)}")
        if input_dtype not in ("float32", "uint8"):
            raise ValueError(f"{self.path}: the input is {input_dtype}; edgeseg graphs take float32 or uint8")
        self.input_shape = model_shape(inputs[0])
        self.input_dtype = np.dtype(input_dtype)
        shapes = [model_shape(dims) for dims in outputs]
        self.output_shape = shapes[0]
        self.output_names = tuple(output_names or [f"output{i}" for i in range(len(outputs))])
        self.output_shapes = dict(zip(self.output_names, shapes))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` and return its first output as a float32 array the caller owns.

        Raises :class:`RunnerClosedError` after :meth:`close`.
        """
        return self._guarded(self._infer, x)

    def infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``x`` (of :attr:`input_dtype`) and return every output by name, in its own dtype."""
        return self._guarded(self._infer_all, x)

    def _guarded(self, call: Callable[[np.ndarray], Result], x: np.ndarray) -> Result:
        """``call(x)`` counted as in flight, so that :meth:`close` waits for it; refused after close."""
        with self._idle:
            if self._closed:
                raise RunnerClosedError(
                    f"the {self.name} runner of {self.path} is closed; load the model again to run it"
                )
            self._in_flight += 1
        try:
            return call(x)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The backend's inference, first output as float32; may run in several threads at once."""

    def _infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name; backends with multi-output graphs override this."""
        return {self.output_names[0]: self._infer(x)}

    def _release(self) -> None:
        """Free the backend's resources; called once, with no call in flight."""

    def lanes(self, count: int) -> list[Runner]:
        """``count`` runners of this model for ``count`` inferences at once, splitting this runner's threads.

        On a CPU one inference rarely keeps every thread busy (its serial parts, its synchronisation), so two
        inferences of half the threads each finish more frames per second than one of all the threads: what
        a video pipeline wants, where a single frame's latency matters less. ``count`` 1 is this runner. By
        default, new runners of ``threads // count`` threads each (at least 1); the caller closes the runners
        it gets besides this one. Costs a load and the model's memory per lane.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"lanes need a positive int count, got {count!r}")
        if count == 1:
            return [self]
        per_lane = max(1, (self.threads or usable_cores()) // count)
        return [type(self)(self.path, threads=per_lane, config=self.config) for _ in range(count)]

    def close(self) -> None:
        """Release the model after the calls in flight finish; later calls raise. Closing twice is harmless."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._in_flight == 0)
        self._release()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"{type(self).__name__}(path={str(self.path)!r}, threads={self.threads}{state})"
