"""Asynchronous throughput mode of each backend, for the Offline and Server scenarios.

* OpenVINO: the model compiled with the ``THROUGHPUT`` performance hint (the CPU plugin picks its streams)
  and run through an ``AsyncInferQueue`` of its optimal number of infer requests.
* ONNX Runtime: several independent sessions ("streams"), each with its own thread and one intra-op thread,
  fed from one queue (``Run`` releases the GIL, so the sessions run in parallel).

Both take a preprocessed input and a zero-argument completion callback; ``wait`` blocks until every
submitted input is done.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeseg.bundle import Bundle
from edgeseg.closing import Closeable
from edgeseg.runtime import runner_config
from edgeseg.runtimes import Runner, create_runner
from edgeseg.runtimes.base import usable_cores

Done = Callable[[], object]
WAIT_POLL_S = 0.5  # how often a waiting OpenVINO executor checks for failed requests


class ThroughputExecutor(Closeable, ABC):
    """Runs many inferences at once on one backend; ``streams`` is how many run in parallel."""

    backend: str
    streams: int
    settings: dict[str, Any]  # what the backend was configured with, for the record

    @abstractmethod
    def submit(self, x: np.ndarray, done: Done) -> None:
        """Start an inference of ``x``; ``done()`` is called (from another thread) when it has finished."""

    @abstractmethod
    def wait(self) -> None:
        """Block until every submitted inference has finished."""


class OpenVINOThroughput(ThroughputExecutor):
    """OpenVINO's THROUGHPUT hint and an AsyncInferQueue of its optimal number of requests."""

    backend = "openvino"

    def __init__(self, bundle: Bundle, threads: int | None) -> None:
        import openvino as ov

        properties: dict[str, Any] = {**runner_config(bundle, self.backend), "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(str(bundle.artifact(self.backend)), "CPU", properties)
        requests = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.streams = int(self._compiled.get_property("NUM_STREAMS"))
        self.settings = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams, "infer_requests": requests}
        self._queue = ov.AsyncInferQueue(self._compiled, requests)
        self._queue.set_callback(self._finished)
        # Samples whose Python callback has not run yet. wait() counts them down itself: AsyncInferQueue.wait_all
        # can return before a callback has run, and a second wait_all (or dropping the queue) while a callback
        # waits for the GIL deadlocks (seen with OpenVINO 2026.4).
        self._pending = 0
        self._idle = threading.Condition()

    def _finished(self, _request: Any, done: Done) -> None:
        """AsyncInferQueue's callback: the sample's own, then one fewer pending."""
        try:
            done()
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def submit(self, x: np.ndarray, done: Done) -> None:
        """Start ``x`` on the next idle infer request (blocks while every request is busy)."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.start_async({0: x}, done)
        except BaseException:
            with self._idle:
                self._pending -= 1
            raise

    def wait(self) -> None:
        """Wait until every submitted sample's callback has run; raise an inference error OpenVINO reports."""
        with self._idle:
            while not self._idle.wait_for(lambda: self._pending == 0, timeout=WAIT_POLL_S):
                self._queue.is_ready()  # raises the error of a failed request, whose callback never runs

    def close(self) -> None:
        """Finish the samples in flight, then drop the queue and the compiled model."""
        if getattr(self, "_queue", None) is not None:
            self.wait()
            self._queue = None
            self._compiled = None


class OnnxRuntimeThroughput(ThroughputExecutor):
    """``streams`` ONNX Runtime sessions of one intra-op thread each, one worker thread per session."""

    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None) -> None:
        self.streams = threads or usable_cores()
        self.settings = {"sessions": self.streams, "intra_op_threads_per_session": 1}
        artifact = bundle.artifact(self.backend)
        config = runner_config(bundle, self.backend)
        self._runners: list[Runner] = []
        try:
            for _ in range(self.streams):
                self._runners.append(create_runner(self.backend, artifact, threads=1, config=config))
        except BaseException:
            self.close()
            raise
        self._work: queue.Queue[tuple[np.ndarray, Done] | None] = queue.Queue()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._serve, args=(r,), daemon=True) for r in self._runners]
        for thread in self._threads:
            thread.start()

    def _serve(self, runner: Runner) -> None:
        """Worker loop: run queued inputs on ``runner`` until the None sentinel."""
        while (item := self._work.get()) is not None:
            x, done = item
            try:
                runner.infer(x)
            except Exception as error:  # kept and raised by wait(); the sample still completes so callers never hang
                self._errors.append(error)
            try:
                done()
            finally:
                self._work.task_done()
        self._work.task_done()

    def submit(self, x: np.ndarray, done: Done) -> None:
        """Queue ``x`` for the next idle session."""
        self._work.put((x, done))

    def wait(self) -> None:
        """Wait until the queue is drained; raise the first error a session hit."""
        self._work.join()
        if self._errors:
            raise RuntimeError(f"an ONNX Runtime session failed during the throughput run: {self._errors[0]}")

    def close(self) -> None:
        """Stop the worker threads and release the sessions."""
        for _ in getattr(self, "_threads", ()):
            self._work.put(None)
        for thread in getattr(self, "_threads", ()):
            thread.join()
        self._threads = []
        for runner in self._runners:
            runner.close()
        self._runners = []


EXECUTORS: dict[str, Callable[[Bundle, int | None], ThroughputExecutor]] = {
    "openvino": OpenVINOThroughput,
    "onnxruntime": OnnxRuntimeThroughput,
}


def open_throughput(bundle: Bundle, backend: str, threads: int | None) -> ThroughputExecutor:
    """The throughput executor of ``backend`` for ``bundle``; ``threads`` caps its CPU threads (None: all cores)."""
    if backend not in EXECUTORS:
        raise ValueError(
            f"the offline and server scenarios support backends {', '.join(EXECUTORS)}, not {backend!r}; "
            "use --scenario single-stream for it"
        )
    return EXECUTORS[backend](bundle, threads)
