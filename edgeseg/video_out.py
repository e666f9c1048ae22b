"""Label-map outputs of ``edgeseg predict``: one PNG, a folder of label PNGs, a colour-overlay video or a label video.

Nothing is half-written: every writer puts its frames under a temporary name in the destination's folder and
renames them into place in :meth:`LabelWriter.commit`; :meth:`LabelWriter.abort` (on any error) removes them.

* ``*.png`` (or .bmp, .tif; .jpg and .webp only with ``color``) — one label image (class indices, or the
  colour palette with ``color``); a single image only;
* a folder — one label PNG per frame, ``<name>.png`` (an image's stem, or ``<video stem>_<frame>``);
* ``*.mp4`` — the frames with their labels blended over in the palette's colours (lossy MPEG-4 Part 2, for looking
  at; not for reading labels back);
* ``*.mkv`` — a lossless FFV1 video whose grey levels are the class indices (up to 256 classes): decode it with
  OpenCV to get the label maps back exactly.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.image_io import LABEL_IMAGE_FORMATS, palette, write_label_png
from edgeseg.video import Frame, require_cv2

VIDEO_OUTPUTS = {".mp4": "overlay", ".mkv": "labels"}
# Weight of the class colour in the overlay video (the frame keeps the rest).
OVERLAY_ALPHA = 0.5
DEFAULT_VIDEO_FPS = 30.0
_FOURCC = {"overlay": "mp4v", "labels": "FFV1"}


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden, unused name next to ``path`` for writing it before the final rename."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


class LabelWriter:
    """Where label maps go; ``write`` each frame's, then ``commit`` (publishes) or ``abort`` (removes all)."""

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        raise NotImplementedError

    def commit(self) -> str:
        """Publish what was written; returns a short description of it."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove everything written so far; safe to call more than once."""
        raise NotImplementedError


class LabelImage(LabelWriter):
    """One label image at ``path`` (a single image), in the format of its suffix (:data:`LABEL_IMAGE_FORMATS`)."""

    def __init__(self, path: Path, color: bool, colors: np.ndarray | None = None) -> None:
        self.path, self.color, self.colors = path, color, colors
        self.image_format = LABEL_IMAGE_FORMATS[path.suffix.lower()][0]
        self._temporary = _temporary_sibling(path)
        self._written = 0

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        if self._written:
            raise ValueError(f"--out {self.path} is one image; give a folder to write one PNG per frame")
        write_label_png(
            self._temporary, labels, colorize=self.color, colors=self.colors, image_format=self.image_format
        )
        self._written = 1

    def commit(self) -> str:
        if not self._written:
            raise ValueError(f"--out {self.path}: no frame to write")
        os.replace(self._temporary, self.path)
        return str(self.path)

    def abort(self) -> None:
        self._temporary.unlink(missing_ok=True)


class LabelPngFolder(LabelWriter):
    """One label PNG per frame, ``<frame name>.png`` inside ``folder``; staged in a hidden subfolder first.

    Refuses to write over any of ``inputs`` (e.g. a folder of PNG images segmented into itself).
    """

    def __init__(self, folder: Path, color: bool, inputs: list[Path], colors: np.ndarray | None = None) -> None:
        self.folder, self.color, self.colors = folder, color, colors
        self._inputs = {p.resolve() for p in inputs}
        self._stage = _temporary_sibling(folder / "labels")
        self._stage.mkdir()
        self._names: set[str] = set()

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        name = f"{frame.name}.png"
        if name in self._names:
            raise ValueError(f"two frames are both named {frame.name!r}; their PNGs would overwrite each other")
        target = self.folder / name
        if target.resolve() in self._inputs:
            raise ValueError(f"--out {self.folder}: {target} is an input image; give another folder")
        if target.is_dir():
            raise ValueError(f"--out {self.folder}: {target} is a folder; give another folder")
        self._names.add(name)
        write_label_png(self._stage / name, labels, colorize=self.color, colors=self.colors)

    def commit(self) -> str:
        if not self._names:
            raise ValueError(f"--out {self.folder}: no frame to write")
        for name in sorted(self._names):
            os.replace(self._stage / name, self.folder / name)
        self._stage.rmdir()
        return f"{len(self._names)} label PNGs in {self.folder}"

    def abort(self) -> None:
        shutil.rmtree(self._stage, ignore_errors=True)


class VideoFile(LabelWriter):
    """A colour-overlay (``.mp4``) or lossless label (``.mkv``) video at ``path``, opened at the first frame's size."""

    def __init__(self, path: Path, fps: float | None, num_classes: int, colors: np.ndarray | None = None) -> None:
        self.path = path
        self.mode = VIDEO_OUTPUTS[path.suffix.lower()]
        if self.mode == "labels" and num_classes > 256:
            raise ValueError(
                f"--out {path}: a label video holds up to 256 classes and this model has {num_classes}; "
                "write label PNGs to a folder instead"
            )
        self.fps = fps or DEFAULT_VIDEO_FPS
        self._cv2 = require_cv2()
        self._temporary = _temporary_sibling(path, path.suffix)
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._colors = palette() if colors is None else colors
        self._frames = 0

    def _open(self, height: int, width: int) -> None:
        cv2 = self._cv2
        fourcc = cv2.VideoWriter_fourcc(*_FOURCC[self.mode])
        self._writer = cv2.VideoWriter(str(self._temporary), fourcc, self.fps, (width, height), self.mode == "overlay")
        if not self._writer.isOpened():
            raise OSError(
                f"--out {self.path}: this OpenCV build cannot write {_FOURCC[self.mode]} video; "
                "write label PNGs to a folder instead"
            )
        self._size = (height, width)

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        height, width = labels.shape
        if self._writer is None:
            self._open(height, width)
        elif self._size != (height, width):
            raise ValueError(
                f"frame {frame.name} is {height}x{width} (HxW) but the video is {self._size[0]}x{self._size[1]}; "  # type: ignore[index]
                "a video needs frames of one size: write label PNGs to a folder instead"
            )
        if self.mode == "labels":
            self._writer.write(np.ascontiguousarray(labels, dtype=np.uint8))
        else:
            colors = self._colors[labels if labels.dtype == np.uint8 else labels % 256]
            cv2 = self._cv2
            rgb = cv2.addWeighted(frame.image, 1.0 - OVERLAY_ALPHA, colors, OVERLAY_ALPHA, 0.0)
            self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self._frames += 1

    def commit(self) -> str:
        if self._writer is None:
            raise ValueError(f"--out {self.path}: no frame to write")
        self._writer.release()
        os.replace(self._temporary, self.path)
        kind = "colour-overlay" if self.mode == "overlay" else "label"
        return f"{kind} video {self.path} ({self._frames} frames at {self.fps:g} FPS)"

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
        self._temporary.unlink(missing_ok=True)


def check_output(out: str, single_image: bool, inputs: list[Path], color: bool = False) -> tuple[str, Path]:
    """Check ``--out`` before any work: returns its kind (``image``, ``folder``, ``video``) and path.

    A path without a suffix is a folder; a file must end in an image suffix of :data:`LABEL_IMAGE_FORMATS` (single
    images; JPEG and WEBP only with ``color``: they do not hold indices exactly), .mp4 or .mkv, and must not be one
    of the ``inputs``. Missing folders (the output folder, or a file's parents) are created once the path is valid.
    """
    path = Path(out)
    suffix = path.suffix.lower()
    if path.is_dir() or (not suffix and not path.exists()):
        path.mkdir(parents=True, exist_ok=True)
        return "folder", path
    images = "/".join(LABEL_IMAGE_FORMATS)
    wanted = f"a folder, an image ({images})" if single_image else "a folder (label PNGs)"
    choices = f"{wanted}, an .mp4 (colour overlay) or an .mkv (label video)"
    if suffix in LABEL_IMAGE_FORMATS:
        if not single_image:
            raise ValueError(f"--out {out}: the source has many frames; give {choices}")
        if not LABEL_IMAGE_FORMATS[suffix][1] and not color:
            raise ValueError(
                f"--out {out}: {suffix} does not hold class indices exactly; give a .png, or add --color for a "
                "coloured mask"
            )
    elif suffix not in VIDEO_OUTPUTS:
        raise ValueError(f"--out {out}: {suffix} is not an output edgeseg writes; give {choices}")
    if path.exists() and any(p.exists() and path.resolve() == p.resolve() for p in inputs):
        raise ValueError(f"--out {out} is the input; give another file")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"--out {out}: {path.parent} is a file, not a folder; give another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    return ("image" if suffix in LABEL_IMAGE_FORMATS else "video"), path


def open_writer(
    kind: str,
    path: Path,
    *,
    color: bool,
    fps: float | None,
    num_classes: int,
    inputs: list[Path],
    palette: np.ndarray | None = None,
) -> LabelWriter:
    """The writer for an output checked by :func:`check_output`; ``inputs`` are files it must never replace.

    ``palette`` (256×3 uint8, e.g. the bundle's class colours) colours ``--color`` PNGs and overlay videos.
    """
    if kind == "image":
        return LabelImage(path, color, palette)
    if kind == "folder":
        return LabelPngFolder(path, color, inputs, palette)
    return VideoFile(path, fps, num_classes, palette)
