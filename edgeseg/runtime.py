"""Run an exported bundle: the public, torch-free inference API.

>>> import edgeseg.runtime
>>> seg = edgeseg.runtime.load("bundles/afformer-tiny")       # backend from the bundle's target
>>> labels = seg.predict(rgb_uint8_image)                     # H×W class ids at the image's size
>>> seg.close()                                               # or: with edgeseg.runtime.load(...) as seg:

Bundles exported with ``--input uint8-bgr --output labels-full`` do the whole frame path in the graph:
``seg.outputs(opencv_bgr_frame)["labels-full"]`` is the frame's label map, and ``predict`` gives the same
label map as a float bundle's for an RGB image.

A ``Segmenter`` is safe to share between threads: concurrent calls give exactly the serial results.
Needs numpy and the chosen backend's package only (never torch).
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from edgeseg.bundle import Bundle, BundleError, read_bundle
from edgeseg.closing import Closeable
from edgeseg.imaging import FrameError, ImageError, as_rgb_uint8, labels_from_logits
from edgeseg.live import LiveResult, LiveStats, run_live
from edgeseg.runtimes import BackendUnavailableError, Runner, create_runner
from edgeseg.runtimes.base import usable_cores

__all__ = ["Segmenter", "load", "video_inferences"]

_log = logging.getLogger(__name__)


class Segmenter(Closeable):
    """A bundle loaded on one backend: preprocessing, the model and label-map postprocessing.

    Thread-safe (its runner is; the pre- and postprocessing keep no state). ``close()`` or a ``with`` block
    releases the model; calls after that raise :class:`~edgeseg.runtimes.RunnerClosedError`.
    """

    def __init__(self, bundle: Bundle, backend: str, runner: Runner) -> None:
        graph_input, outputs = bundle.graph_input, bundle.outputs
        checks: list[tuple[str, object, object]] = [("input shape", graph_input.shape, runner.input_shape)]
        checks += [(f"output {o.name} shape", o.shape, got) for o, got in zip(outputs, runner.output_shapes.values())]
        checks += [("input dtype", graph_input.dtype, runner.input_dtype.name)]
        checks += [("number of outputs", len(outputs), len(runner.output_shapes))]
        for what, expected, got in checks:
            if (tuple(expected) if isinstance(expected, tuple) else expected) != got:
                raise BundleError(
                    f"{bundle.path}: the manifest's {what} {expected} does not match the {backend} model's "
                    f"{got}; re-export the bundle"
                )
        self.bundle = bundle
        self.backend = backend
        self.runner = runner
        self.artifact = bundle.artifact_name(backend)  # the file that runs
        self.precision = bundle.artifact_precision(backend)
        self._kinds = [o.kind for o in outputs]
        self._label_workers = min(runner.threads or usable_cores(), usable_cores())

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the graph; for a dynamic bundle, its example size (see ``model_input_size``)."""
        return self.bundle.input_size

    @property
    def num_classes(self) -> int:
        """Number of classes the label maps index."""
        return self.bundle.num_classes

    def preprocess(self, image: Any) -> np.ndarray:
        """RGB image (see :func:`~edgeseg.imaging.as_rgb_uint8`) → normalised 1×3×h×w float32 model input."""
        return self.bundle.input_spec.preprocess(as_rgb_uint8(image))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Run the model alone on a preprocessed input; returns the 1×C×h'×w' float32 logits.

        Not for bundles whose graph takes frames (``--input uint8-*``) or has no logits output: use
        :meth:`predict` or :meth:`outputs`.
        """
        if self.bundle.frame is not None or "logits" not in self._kinds:
            raise ValueError(
                f"{self.bundle.path}: this bundle's graph takes {self.bundle.graph_input.dtype} frames and outputs "
                f"{', '.join(self._kinds)}, so the model cannot run alone on a preprocessed input; call "
                "predict(image) or outputs(frame)"
            )
        expected = tuple(self.bundle.input.shape)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not self._fits(x.shape):
            got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            wanted: object = expected
            if self.bundle.dynamic:
                wanted = f"{expected[:2]} + (H, W), H and W multiples of {self.bundle.size_multiple}"
            raise ValueError(
                f"logits() expects a float32 array of shape {wanted}, got {got}; "
                "make one from an image with Segmenter.preprocess(image), or call predict(image)"
            )
        if self._kinds == ["logits"]:
            return self.runner.infer(x)
        return self._run(x)["logits"]

    def _run(self, x: np.ndarray, runner: Runner | None = None) -> dict[str, np.ndarray]:
        """Every graph output for the graph input ``x``, by kind (on ``runner``, by default the Segmenter's)."""
        outputs = (runner or self.runner).infer_all(x)
        return dict(zip(self._kinds, outputs.values()))

    def _frame_input(self, image: Any) -> np.ndarray:
        """The 1×H×W×3 graph input of a bundle that takes frames, for a frame in its colour order (validated)."""
        frame = self.bundle.frame
        assert frame is not None
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
            raise ImageError(f"expected an H×W×3 uint8 {frame.color} frame, got {got}")
        if frame.size is not None and image.shape[:2] != frame.size:
            raise ImageError(
                f"this bundle takes {frame.size[0]}x{frame.size[1]} frames only (exported with --frame-size), "
                f"got {image.shape[0]}x{image.shape[1]}; resize the frame or re-export without --frame-size"
            )
        return np.ascontiguousarray(image)[None]

    def outputs(self, image: Any) -> dict[str, np.ndarray]:
        """Every output of the graph for one image, by kind (``logits``, ``labels``, ``labels-full``, ``confidence``).

        Bundles exported with ``--input uint8-rgb|uint8-bgr`` take an H×W×3 uint8 frame in that colour order
        as it comes (an OpenCV frame needs no conversion for ``uint8-bgr``); resizing and normalisation happen
        in the graph. Float bundles take an RGB image and pre-process it here. The batch axis is dropped:
        logits and confidence are C×h×w, label maps h×w (``labels-full``: the frame's H×W).
        """
        x = self.preprocess(image) if self.bundle.frame is None else self._frame_input(image)
        return {kind: out[0] for kind, out in self._run(x).items()}

    def _fits(self, shape: tuple[int, ...]) -> bool:
        expected = self.bundle.input.shape
        multiple = self.bundle.size_multiple
        return len(shape) == len(expected) and all(
            s == e if e is not None else s > 0 and s % multiple == 0 for s, e in zip(shape, expected)
        )

    def _graph_input(self, rgb: np.ndarray) -> np.ndarray:
        """What the graph takes for an RGB uint8 image: the normalised input, or the frame in its colour order."""
        frame = self.bundle.frame
        if frame is None:
            return self.bundle.input_spec.preprocess(rgb)
        return self._frame_input(rgb if frame.color == "RGB" else rgb[..., ::-1])

    def _infer(self, x: np.ndarray, runner: Runner) -> dict[str, np.ndarray]:
        """The outputs ``predict`` needs, by kind, for the graph input ``x`` on ``runner``."""
        if self._kinds == ["logits"] and self.bundle.frame is None:  # the plain graph: float32 logits
            return {"logits": runner.infer(x)}
        return self._run(x, runner)

    def _labels(self, outputs: dict[str, np.ndarray], size: tuple[int, int], workers: int) -> np.ndarray:
        """The label map of ``size`` from the graph's outputs: its ``labels-full``, else from its logits."""
        if "labels-full" in outputs:
            return outputs["labels-full"][0].astype(_label_dtype(self.num_classes), copy=False)
        return labels_from_logits(outputs["logits"][0], size, workers)

    def predict(self, image: Any) -> np.ndarray:
        """H×W label map for an RGB image, at the image's own size (uint8 for up to 256 classes).

        The same label map for every ``--input``/``--output`` of a bundle: a graph that takes frames gets the
        image directly (colour order swapped for ``uint8-bgr``); ``labels-full`` is taken from the graph when
        it has it, else the logits are upsampled here (:func:`~edgeseg.imaging.labels_from_logits`).
        """
        rgb = as_rgb_uint8(image)
        outputs = self._infer(self._graph_input(rgb), self.runner)
        return self._labels(outputs, rgb.shape[:2], self._label_workers)

    @overload
    def stream(
        self,
        frames: Iterable[Any],
        *,
        skip_bad_frames: Literal[False] = False,
        depth: int | None = ...,
        inferences: int = ...,
    ) -> Iterator[np.ndarray]: ...

    @overload
    def stream(
        self, frames: Iterable[Any], *, skip_bad_frames: Literal[True], depth: int | None = ..., inferences: int = ...
    ) -> Iterator[np.ndarray | None]: ...

    def stream(
        self, frames: Iterable[Any], *, skip_bad_frames: bool = False, depth: int | None = None, inferences: int = 1
    ) -> Iterator[np.ndarray | None]:
        """Yield one label map per frame of a video or camera iterator, in order, pipelined.

        Up to ``depth`` frames are in flight at once (default ``inferences + 2``), each in a worker thread:
        while the model runs on one frame, the next is resized and normalised and the previous one's label map
        is computed, and reading the next frame from ``frames`` (decoding, in the caller's thread) overlaps
        with all of them. The results are exactly :meth:`predict`'s. ``frames`` is read at most ``depth``
        frames ahead of what was yielded; ``depth=1`` runs frames one after another.

        ``inferences`` is how many frames are in the model at once. 1: one inference at a time, with all the
        backend's threads (the Segmenter's own model). 2 or more: the model is loaded once more for the stream
        in that many lanes that split the threads (:meth:`~edgeseg.runtimes.Runner.lanes`; OpenVINO's
        throughput mode): more frames per second on a CPU, where one inference leaves threads idle, for the
        cost of a load and the model's memory per lane while the stream runs.

        A frame that is not a usable image (see :func:`~edgeseg.imaging.as_rgb_uint8`) raises
        :class:`~edgeseg.imaging.FrameError` naming its index, after the frames before it were yielded;
        ``frames`` is not read past it, so a caller may catch it and call ``stream`` again on the same
        iterator. With ``skip_bad_frames=True`` such a frame yields ``None`` in its place (item i still belongs
        to frame i) and is logged as a warning on the ``edgeseg.runtime`` logger, and the stream goes on.
        Closing the generator (or leaving a ``for`` loop) waits for the frames in flight and reads no more.

        Frames must be RGB. A ``cv2.VideoCapture`` yields BGR frames: read videos, cameras and streams with
        :func:`edgeseg.video.open_source` (it converts), e.g.
        ``for labels in seg.stream(f.image for f in open_source("0")): ...``.
        """
        if isinstance(inferences, bool) or not isinstance(inferences, int) or inferences < 1:
            raise ValueError(f"inferences must be a positive int (frames in the model at once), got {inferences!r}")
        depth = inferences + 2 if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int (frames in flight), got {depth!r}")
        return self._pipelined(iter(frames), skip_bad_frames, depth, inferences)

    def _pipelined(
        self, frames: Iterator[Any], skip_bad_frames: bool, depth: int, inferences: int
    ) -> Iterator[np.ndarray | None]:
        """The generator behind :meth:`stream`: ``depth`` worker threads, ``inferences`` lanes, frames in order."""
        lanes = self.runner.lanes(inferences) if inferences > 1 else [self.runner]
        idle: queue.SimpleQueue[Runner] = queue.SimpleQueue()  # a lane runs one inference at a time
        for lane in lanes:
            idle.put(lane)

        def label_map(rgb: np.ndarray) -> np.ndarray:
            x = self._graph_input(rgb)
            lane = idle.get()
            try:
                outputs = self._infer(x, lane)
            finally:
                idle.put(lane)
            return self._labels(outputs, rgb.shape[:2], 1)

        pending: deque[Future[np.ndarray] | None] = deque()  # None: a skipped frame
        bad: tuple[int, ImageError] | None = None
        pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="edgeseg-stream")
        try:
            for index, frame in enumerate(frames):
                try:
                    rgb = as_rgb_uint8(frame)
                except ImageError as error:
                    if not skip_bad_frames:
                        bad = (index, error)
                        break
                    _log.warning("frame %d skipped: %s", index, error)
                    pending.append(None)
                else:
                    pending.append(pool.submit(label_map, rgb))
                if len(pending) >= depth:
                    done = pending.popleft()
                    yield None if done is None else done.result()
            while pending:
                done = pending.popleft()
                yield None if done is None else done.result()
        finally:
            for waiting in pending:
                if waiting is not None:
                    waiting.cancel()
            pool.shutdown(wait=True)
            for lane in set(lanes) - {self.runner}:
                lane.close()
        if bad is not None:
            raise FrameError(*bad) from bad[1]

    def live(self, source: Iterable[Any], callback: Callable[[LiveResult], object]) -> LiveStats:
        """Segment a camera's frames as they arrive, latest frame wins; blocks until ``source`` ends.

        ``source`` yields images, or frames with ``.image`` and ``.timestamp`` (``time.monotonic()`` capture
        time), e.g. :func:`edgeseg.video.open_source`'s. ``callback(result)`` gets a
        :class:`~edgeseg.live.LiveResult` (labels, frame index, timestamp, capture→result latency) in a worker
        thread; frames that arrive while the worker is busy are dropped and counted. Returns the
        :class:`~edgeseg.live.LiveStats`. To feed frames yourself, use :class:`edgeseg.live.LiveSegmenter`.
        """
        return run_live(self, source, callback)

    def close(self) -> None:
        """Release the model once the calls in flight finish; closing twice is harmless."""
        self.runner.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.runner.closed

    def __repr__(self) -> str:
        h, w = self.input_size
        size = f"dynamic, e.g. {h}x{w}" if self.bundle.dynamic else f"{h}x{w}"
        return (
            f"Segmenter(model={self.bundle.model_name!r}, backend={self.backend!r}, input={size}, "
            f"classes={self.num_classes}, precision={self.precision!r}, artifact={self.artifact!r}, "
            f"threads={self.runner.threads}, path={str(self.bundle.path)!r}{', closed' if self.closed else ''})"
        )


def video_inferences(segmenter: Segmenter) -> int:
    """The ``inferences`` of :meth:`Segmenter.stream` that gives a video the most frames per second: 2 on a CPU
    backend with 2 or more threads (measured on 2 cores: +30–40 % frames per second, see
    ``benchmarks/results/camera_720p.md``), else 1."""
    cores = usable_cores()
    threads = min(segmenter.runner.threads or cores, cores)
    return 2 if segmenter.backend in ("onnxruntime", "openvino") and threads >= 2 else 1


def _label_dtype(num_classes: int) -> type[np.integer[Any]]:
    """The label dtype of :func:`~edgeseg.imaging.labels_from_logits`: uint8, uint16, else int32."""
    return np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32


def runner_config(bundle: Bundle, backend: str) -> dict[str, Any]:
    """The bundle's runtime config for ``backend``; OpenVINO runs f32 unless the bundle states a hint.

    OpenVINO's CPU plugin runs in bf16 by default where the CPU supports it. Bundles of the ``openvino``
    target state the hint their parity was checked with; any other bundle run on OpenVINO (its portable
    fp32 ``model.onnx``) gets f32.
    """
    config = bundle.runtime_config(backend)
    if backend == "openvino":
        config.setdefault("INFERENCE_PRECISION_HINT", "f32")
    return config


def load(
    bundle: str | Path | Bundle,
    backend: str | None = None,
    threads: int | None = None,
    *,
    verify: bool = True,
    any_precision: bool = False,
) -> Segmenter:
    """Open a bundle and load its model on ``backend`` (default: the bundle's target).

    A backend without an artifact of the bundle's precision (e.g. ONNX Runtime for an int8 OpenVINO bundle) is
    refused, the message naming what it would run; ``any_precision`` runs it anyway (the fp32 portable graph).
    ``Segmenter.artifact`` and ``Segmenter.precision`` always state the file and precision that run.

    ``threads`` caps the backend's CPU threads (None: its default). ``verify`` checks the files the backend
    loads against their size and sha256 in the manifest first (raises :class:`~edgeseg.bundle.BundleError` on
    mismatch); without it, files are still confined to plain, listed names inside the bundle.
    Close the Segmenter (or use it in a ``with`` block) to release the model.
    """
    opened = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    name = opened.default_backend if backend is None else backend
    precision = opened.artifact_precision(name)
    if precision != opened.precision and not any_precision:
        raise ValueError(
            f"{opened.path} is a {opened.precision} {opened.target} bundle with no {opened.precision} artifact for "
            f"{name}: it would run the {precision} portable graph {opened.artifact_name(name)}. Load it on "
            f"{opened.default_backend}, export it for --target {name} --precision {opened.precision}, or accept "
            f"{precision} (any_precision=True; --any-precision on the command line)"
        )
    if verify:
        opened.verify(opened.loaded_files(name))
    artifact = opened.artifact(name)
    try:
        runner = create_runner(name, artifact, threads=threads, config=runner_config(opened, name))
    except (BackendUnavailableError, ValueError):
        raise
    except Exception as error:  # the backend's own parse/compile errors (RuntimeError subclasses, mostly)
        raise BundleError(
            f"{artifact} could not be loaded by {name} ({type(error).__name__}: {str(error).strip()[:300]}); "
            "the file is damaged or not for this backend: re-export the bundle (and load with verify=True)"
        ) from error
    try:
        return Segmenter(opened, name, runner)
    except BaseException:
        runner.close()
        raise
