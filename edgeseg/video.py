"""Frame sources for ``edgeseg predict`` and live mode: an image, a folder or glob of images, a video file, a camera
index or a network stream (RTSP/HTTP), all read as RGB ``Frame`` s.

Videos, cameras and streams are read with OpenCV (``pip install 'edgeseg[video]'``), imported only when one is
opened. OpenCV decodes to BGR; every frame here is converted to RGB, the order ``Segmenter`` expects.

How a source ends:

* a video file ends normally when OpenCV has returned as many frames as the container declares
  (``CAP_PROP_FRAME_COUNT``); when it stops earlier, the frames it could decode are yielded first and then
  :class:`TruncatedVideoError` says how many of how many were read (a corrupt or cut-off file). A file OpenCV
  cannot open at all (not a video, or an mp4 cut off before its index) raises :class:`SourceError` at once;
* a camera or a stream of unknown length has no normal end: when it stops delivering frames (unplugged, closed
  by another program, connection lost) :class:`SourceError` says so after the frames it did deliver.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.closing import Closeable
from edgeseg.image_io import read_image

# Files with these suffixes are read as still images (Pillow); any other file is opened as a video (OpenCV).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".tga", ".mpo"})
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_GLOB_CHARS = frozenset("*?[")
# The largest camera index accepted (OpenCV numbers devices from 0; /dev/video<N> on Linux).
MAX_CAMERA_INDEX = 63


class SourceError(OSError):
    """A frame source cannot be opened, or stopped delivering frames; the message names it and says why."""


class TruncatedVideoError(SourceError):
    """A video file ended before the frame count its container declares (corrupt or cut off).

    Raised after the ``frames_read`` frames that could be decoded were yielded.
    """

    def __init__(self, source: str, frames_read: int, frames_declared: int) -> None:
        super().__init__(
            f"video {source} ended early: {frames_read} of the {frames_declared} frames its container declares "
            "could be decoded (the file is truncated or corrupt)"
        )
        self.frames_read = frames_read
        self.frames_declared = frames_declared


def require_cv2() -> Any:
    """Import OpenCV, or explain how to install it."""
    try:
        import cv2
    except ImportError:
        raise ImportError("reading videos, cameras and streams needs OpenCV: pip install 'edgeseg[video]'") from None
    return cv2


@dataclass(frozen=True)
class Frame:
    """One RGB frame of a source.

    ``index`` counts from 0; ``name`` is a file-name stem for its outputs; ``timestamp`` is when it was read,
    on the ``time.monotonic()`` clock (what live mode measures latency from); ``position`` is its time in the
    video in seconds, when the source knows it (None for images, cameras and streams).
    """

    index: int
    image: np.ndarray
    name: str
    timestamp: float
    position: float | None = None


@dataclass(frozen=True)
class SourceSpec:
    """What a SOURCE argument names, decided without opening it.

    ``kind`` is ``image`` (one image file), ``images`` (a folder or glob), ``video`` (a file read by OpenCV),
    ``camera`` (a device index) or ``stream`` (an RTSP/HTTP/... URL).
    """

    text: str
    kind: str

    @property
    def single_image(self) -> bool:
        """Whether the source is exactly one still image."""
        return self.kind == "image"

    @property
    def path(self) -> Path | None:
        """The file a single image or video source reads, else None."""
        return Path(self.text) if self.kind in ("image", "video") else None


def describe_source(text: str) -> SourceSpec:
    """Classify a SOURCE argument: a camera index, a URL, a glob, a folder, an image file or a video file."""
    if not text:
        raise ValueError("the source is empty; give an image, a folder, a glob, a video file, a camera index or a URL")
    if text.isdigit():
        if int(text) > MAX_CAMERA_INDEX:
            raise ValueError(f"camera index {text} is larger than {MAX_CAMERA_INDEX}")
        return SourceSpec(text, "camera")
    match = _URL.match(text)
    if match:
        scheme = match["scheme"].lower()
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"source {text}: URL scheme {scheme!r} is not one of {', '.join(STREAM_SCHEMES)}")
        return SourceSpec(text, "stream")
    path = Path(text)
    if path.is_dir() or (_GLOB_CHARS & set(text) and not path.exists()):
        return SourceSpec(text, "images")
    return SourceSpec(text, "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video")


class Source(Closeable):
    """An opened frame source: iterate it for :class:`Frame` s once; close it (or use ``with``) to release it.

    ``frame_count`` is the number of frames expected (None when unknown: cameras, streams), ``fps`` the
    source's frame rate when it states one.
    """

    kind: str
    frame_count: int | None = None
    fps: float | None = None

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def input_files(self) -> list[Path]:
        """The files the source reads (outputs must never replace them)."""
        return []

    def close(self) -> None:
        """Release the device or file; closing twice is harmless."""


class ImageFiles(Source):
    """Still images read one by one with :func:`~edgeseg.image_io.read_image`, in the given order."""

    def __init__(self, spec: SourceSpec, paths: list[Path]) -> None:
        super().__init__(spec)
        self.kind = spec.kind
        self.paths = paths
        self.frame_count = len(paths)

    def input_files(self) -> list[Path]:
        return list(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            image = read_image(path)
            yield Frame(index, image, path.stem or f"image_{index:06d}", time.monotonic())


def _image_paths(spec: SourceSpec) -> list[Path]:
    """The image files of a folder (sorted by name) or of a glob (sorted), at least one."""
    if Path(spec.text).is_dir():
        paths = sorted(p for p in Path(spec.text).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        where = f"folder {spec.text}"
    else:
        paths = sorted(Path(p) for p in glob.glob(spec.text) if Path(p).is_file())
        where = f"glob {spec.text!r}"
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SourceError(f"{where} holds no image files ({suffixes})")
    return paths


class Capture(Source):
    """A video file, camera or stream read with ``cv2.VideoCapture``, converted to RGB frame by frame."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.kind = spec.kind
        cv2 = require_cv2()
        self._cv2 = cv2
        if spec.kind == "video":
            path = Path(spec.text)
            if not path.exists():
                raise FileNotFoundError(f"video {path} does not exist")
            if not path.is_file():
                raise SourceError(f"video {path} is not a file")
        target: str | int = int(spec.text) if spec.kind == "camera" else spec.text
        self._path = Path(spec.text) if spec.kind == "video" else None
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"{self.description} cannot be opened: {self._why_not_opened()}")
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.frame_count = count if count > 0 and spec.kind != "camera" else None
        self.fps = fps if fps > 0 else None
        self._stem = (
            Path(spec.text).stem if spec.kind == "video" else f"{spec.kind}{spec.text if spec.kind == 'camera' else ''}"
        )

    @property
    def description(self) -> str:
        """The source as an error message names it."""
        return {"video": "video", "camera": "camera", "stream": "stream"}[self.kind] + f" {self.spec.text}"

    def _why_not_opened(self) -> str:
        if self.kind == "video":
            return (
                "OpenCV reads no video from it (not a video file, an unsupported codec, "
                "or a file cut off before its index)"
            )
        if self.kind == "camera":
            return "no such camera, or it is in use by another program"
        return "the address cannot be reached, or it serves no video OpenCV can read"

    def __iter__(self) -> Iterator[Frame]:
        cv2, capture, read = self._cv2, self._capture, 0
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            timestamp = time.monotonic()
            position = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self.kind == "video" else None
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
            yield Frame(read, rgb, f"{self._stem}_{read:06d}", timestamp, position)
            read += 1
        if self.frame_count is not None:
            if read < self.frame_count:
                raise TruncatedVideoError(self.spec.text, read, self.frame_count)
            return
        if self.kind == "video" and read > 0:
            return  # a container that declares no frame count: its end is where decoding stops
        raise SourceError(
            f"{self.description} stopped delivering frames after {read} frame(s) "
            "(disconnected, closed by another program, or the connection was lost)"
        )

    def input_files(self) -> list[Path]:
        return [self._path] if self._path else []

    def close(self) -> None:
        self._capture.release()


def open_source(spec: SourceSpec | str) -> Source:
    """Open a source for reading (see :func:`describe_source`); raises :class:`SourceError` when it cannot be."""
    spec = describe_source(spec) if isinstance(spec, str) else spec
    if spec.kind == "image":
        return ImageFiles(spec, [Path(spec.text)])
    if spec.kind == "images":
        return ImageFiles(spec, _image_paths(spec))
    return Capture(spec)
