"""The bundle manifest's schema: one typed model, written by export, validated on every load.

Torch-free. The JSON Schema shipped in ``edgeseg/schemas/`` is generated from these classes
(``python -m edgeseg.manifest``) and a test keeps it identical. Everything a manifest says is untrusted: every
path is a plain file name inside the bundle, every number is bounded, and the runtime settings a backend receives
come from an allow-list per backend.

Format version 2 (the frame path in the graph) adds an optional ``frame`` (the graph takes uint8 NHWC frames
and applies ``input.resize`` and mean/std itself) and replaces the one ``output`` by ``outputs`` (kinds
``logits``, ``labels``, ``labels-full``, ``confidence``). Version-1 manifests are upgraded on reading
(their ``output`` becomes the only entry of ``outputs``), so version-1 bundles keep loading unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from edgeseg.imaging import normalize, resize_bilinear

FORMAT: Final = "edgeseg-bundle"
FORMAT_VERSION: Final = 2
MANIFEST = "manifest.json"
SCHEMA_FILE = f"schemas/manifest-{FORMAT_VERSION}.schema.json"

# Targets a bundle can name; "onnx" is the portable graph every bundle carries, run by ONNX Runtime.
TARGETS = ("onnx", "onnxruntime", "openvino", "tensorrt")
BACKEND_OF_TARGET = {
    "onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SUPPORTED_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32",),
    "onnxruntime": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "bf16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
UNSUPPORTED_BECAUSE = {
    "onnx": "the onnx target is the portable fp32 graph; use --target onnxruntime, openvino or tensorrt",
    "onnxruntime": "ONNX Runtime's CPU provider has no bf16 kernels (a bf16 graph fails to load with 'Could not "
    "find an implementation'); use --target openvino --precision bf16, or fp16",
    "tensorrt": "edgeseg writes fp16 and int8 graphs for TensorRT; use --precision fp16",
}
# OpenVINO on AVX512-BF16/AMX CPUs infers in bf16 unless told otherwise, so every bundle states its hint.
# int8 runs the ops NNCF left in float in bf16 (where the CPU has it; f32 elsewhere): parity is measured
# with bf16, the less accurate case. A manifest must state exactly the hint of its precision.
OPENVINO_HINTS = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "bf16"}

# Bounds on what a manifest may ask the runtime to allocate or compute.
MAX_SIDE = 8192  # pixels, per side of a model input
MAX_MULTIPLE = 1024
MAX_STRIDE = 64
MAX_CLASSES = 65535  # label maps are uint16 at most
MAX_MANIFEST_BYTES = 16 << 20
STD_RANGE = (1e-3, 1e4)
MEAN_RANGE = (-1e3, 1e3)

FileName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"),
    Field(description="a plain file name inside the bundle folder: no separators, no '..', not hidden"),
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Size = tuple[Side, Side]
Mean = Annotated[float, Field(ge=MEAN_RANGE[0], le=MEAN_RANGE[1], allow_inf_nan=False)]
Std = Annotated[float, Field(ge=STD_RANGE[0], le=STD_RANGE[1], allow_inf_nan=False)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def artifact_files(name: str) -> list[str]:
    """The files a backend reads for artifact ``name``: the file, and an OpenVINO IR's ``.bin`` beside it."""
    return [name, name.rsplit(".", 1)[0] + ".bin"] if name.endswith(".xml") else [name]


class _Strict(BaseModel):
    """Unknown fields are refused: a misspelt or injected key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (positive ints) rounded to the nearest int, ties to the even one."""
    quotient, rest = divmod(numerator, denominator)
    return quotient + (2 * rest > denominator or (2 * rest == denominator and quotient % 2 == 1))


class StretchResize(_Strict):
    """Static graphs: every image is stretched to the graph's one size."""

    mode: Literal["stretch"]
    size: Size

    def size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The graph's one size, whatever the image's."""
        return self.size


class KeepRatioResize(_Strict):
    """Dynamic graphs: mmseg's test rule, short side to ``short_side`` (long side at most ``max_long_side``)."""

    mode: Literal["keep_ratio"]
    short_side: Side
    max_long_side: Side
    multiple: Annotated[int, Field(ge=1, le=MAX_MULTIPLE)]

    @model_validator(mode="after")
    def _sides(self) -> KeepRatioResize:
        if self.max_long_side < self.short_side:
            raise ValueError(f"max_long_side {self.max_long_side} is below short_side {self.short_side}")
        return self

    def size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Scale so the short side is ``short_side`` without the long side passing ``max_long_side``, then round
        each side to the nearest multiple of ``multiple`` (at least one multiple).

        Exact rational arithmetic, ties to even (``round``'s rule, without float64's error): the graphs that
        take frames compute the same integers in int64 (:func:`edgeseg.export.frame_path.pre_graph`).
        """
        h, w = image_size
        short, long = min(h, w), max(h, w)
        # scale = numerator / denominator = min(short_side / short, max_long_side / long)
        if self.short_side * long <= self.max_long_side * short:
            numerator, denominator = self.short_side, short
        else:
            numerator, denominator = self.max_long_side, long
        m = self.multiple
        height, width = (m * max(1, _round_half_even(side * numerator, denominator * m)) for side in (h, w))
        return height, width


ResizeRule = Annotated[StretchResize | KeepRatioResize, Field(discriminator="mode")]
Dim = Annotated[int, Field(ge=1, le=MAX_SIDE)] | None


class InputSpec(_Strict):
    """The graph input and the pre-processing that makes it from an RGB uint8 image."""

    name: Name
    shape: tuple[Literal[1], Literal[3], Dim, Dim]
    example_size: Size
    size_multiple: Annotated[int, Field(ge=1, le=MAX_MULTIPLE)] = 1
    resize: ResizeRule
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    color: Literal["RGB"] = "RGB"
    pixel_range: tuple[Literal[0], Literal[255]] = (0, 255)
    normalization: Literal["(pixel - mean) / std"] = "(pixel - mean) / std"
    mean: tuple[Mean, Mean, Mean]
    std: tuple[Std, Std, Std]

    @property
    def dynamic(self) -> bool:
        """True when one graph takes every height and width that is a multiple of ``size_multiple``."""
        return self.shape[2] is None or self.shape[3] is None

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.dynamic != (self.resize.mode == "keep_ratio"):
            raise ValueError(
                f"resize mode {self.resize.mode!r} does not fit a {'dynamic' if self.dynamic else 'static'} graph "
                "(static graphs stretch to their size, dynamic ones keep the ratio)"
            )
        if isinstance(self.resize, StretchResize) and (
            tuple(self.shape[2:]) != self.example_size or self.resize.size != self.example_size
        ):
            raise ValueError(f"a static graph's shape {self.shape}, example_size and resize.size must agree")
        if any(side % self.size_multiple for side in self.example_size):
            raise ValueError(f"example_size {self.example_size} is not a multiple of size_multiple")
        if isinstance(self.resize, KeepRatioResize) and self.resize.multiple % self.size_multiple:
            raise ValueError(f"resize.multiple {self.resize.multiple} is not a multiple of {self.size_multiple}")
        return self

    def model_input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) an image of ``image_size`` is resized to before inference.

        Static graphs take their one size. Dynamic graphs keep the image's aspect ratio (mmseg's test-time
        rule): scale so the short side is ``short_side`` without the long side passing ``max_long_side``,
        then round each side to the nearest multiple.
        """
        return self.resize.size_for(image_size)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 RGB image → the normalised 1×3×h×w float32 model input this spec declares."""
        return normalize(resize_bilinear(rgb, self.model_input_size(rgb.shape[:2])), self.mean, self.std)


INPUT_KINDS = ("float", "uint8-rgb", "uint8-bgr")
OUTPUT_KINDS = ("logits", "labels", "labels-full", "confidence")
CONFIDENCE_DTYPES = ("float16", "uint8")
# Graph output name of each kind (ONNX names cannot hold '-').
OUTPUT_NAMES = {"logits": "logits", "labels": "labels", "labels-full": "labels_full", "confidence": "confidence"}


class FrameSpec(_Strict):
    """The graph takes camera frames and pre-processes them itself (``--input uint8-rgb|uint8-bgr``).

    The graph input is ``shape`` (None: any frame size), uint8 NHWC in ``color`` order; inside the graph
    it is resized by ``input.resize`` (bilinear, half-pixel, no antialias, as
    :func:`edgeseg.imaging.resize_bilinear`) and normalised by ``input.mean``/``input.std``. ``input`` then
    names the model's internal input.
    """

    name: Name
    shape: tuple[Literal[1], Dim, Dim, Literal[3]]
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    color: Literal["RGB", "BGR"]

    @property
    def size(self) -> tuple[int, int] | None:
        """The one frame (height, width) the graph takes, or None when it takes any size."""
        h, w = self.shape[1], self.shape[2]
        return None if h is None or w is None else (h, w)


POSTPROCESS = {
    "logits": "bilinear upsample (align_corners=False) to the image size, then argmax over classes",
    "labels": "none: argmax over classes in the graph, at the model's stride",
    "labels-full": "none: bilinear upsample of the logits to the frame size and argmax, in the graph",
    "confidence": "none: softmax over classes in the graph, at the model's stride",
}


class OutputSpec(_Strict):
    """One graph output: class ``logits`` (NCHW float32), ``labels`` (NHW class ids, argmax at ``stride``),
    ``labels-full`` (NHW class ids at the frame's size: upsample + argmax in the graph, stride 1) or
    ``confidence`` (NCHW softmax per class, float16, or uint8 = round(255 · p); ``classes``: the class of each
    channel when only some are output)."""

    name: Name
    shape: Annotated[tuple[Dim, ...], Field(min_length=3, max_length=4)]
    layout: Literal["NCHW", "NHW"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8", "int32"] = "float32"
    kind: Literal["logits", "labels", "labels-full", "confidence"] = "logits"
    stride: Annotated[int, Field(ge=1, le=MAX_STRIDE)]
    postprocess: str = POSTPROCESS["logits"]
    classes: Annotated[tuple[Annotated[int, Field(ge=0, lt=MAX_CLASSES)], ...], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OutputSpec:
        class_map = self.kind in ("logits", "confidence")
        layout, ndim = ("NCHW", 4) if class_map else ("NHW", 3)
        if self.layout != layout or len(self.shape) != ndim or self.shape[0] != 1:
            raise ValueError(f"a {self.kind} output is {layout} with batch 1, got {self.layout} {self.shape}")
        if class_map and self.shape[1] is None:
            raise ValueError(f"a {self.kind} output must state its number of classes, got shape {self.shape}")
        dtypes = {"logits": ("float32",), "confidence": CONFIDENCE_DTYPES, "labels": ("uint8", "int32")}
        if self.dtype not in dtypes.get(self.kind, dtypes["labels"]):
            raise ValueError(f"a {self.kind} output cannot be {self.dtype}")
        if self.classes is not None and (self.kind != "confidence" or len(self.classes) != self.shape[1]):
            raise ValueError(f"classes lists the class of each channel of a confidence output, got {self.classes}")
        if self.kind == "labels-full" and self.stride != 1:
            raise ValueError("a labels-full output is at the frame's own size: stride 1")
        return self

    @property
    def num_classes(self) -> int | None:
        """Channels of a class map over every class (logits, confidence); None for label maps and class subsets."""
        return self.shape[1] if len(self.shape) == 4 and self.classes is None else None


class CheckpointInfo(_Strict):
    """Where the weights came from and what loading them did."""

    file: Name
    sha256: Sha256
    source: Annotated[str, StringConstraints(max_length=2048)] | None = None  # a catalog entry, URL or hf:REPO
    ignored_keys: list[str] = []
    initialised_keys: list[str] = []
    shared_module_copies: Annotated[int, Field(ge=0)] = 0


class ModelInfo(_Strict):
    """The model the bundle was exported from."""

    name: Name
    family: str | None = None
    description: str | None = None
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    weights: Literal["random", "checkpoint"]
    weights_note: str | None = None
    checkpoint: CheckpointInfo | None = None
    params: Annotated[int, Field(ge=0)] | None = None
    macs: Annotated[int, Field(ge=0)] | None = None
    macs_input_size: Size | None = None
    head_attention: Literal["se", "cbam", "ca"] | None = None  # a block inserted into the all-MLP head

    @model_validator(mode="after")
    def _weights(self) -> ModelInfo:
        if (self.weights == "checkpoint") != (self.checkpoint is not None):
            raise ValueError("weights 'checkpoint' and a checkpoint entry go together")
        return self


Channel = Annotated[int, Field(ge=0, le=255)]


class ClassesInfo(_Strict):
    """What each class index means: ``names[i]`` is class ``i``, drawn in ``palette[i]`` (RGB) by ``--color``."""

    preset: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")] | None = None
    names: Annotated[list[Name], Field(min_length=1, max_length=MAX_CLASSES)]
    palette: Annotated[list[tuple[Channel, Channel, Channel]], Field(max_length=MAX_CLASSES)] | None = None
    source: Annotated[str, StringConstraints(max_length=2048)] | None = None

    @model_validator(mode="after")
    def _one_colour_per_class(self) -> ClassesInfo:
        if self.palette is not None and len(self.palette) != len(self.names):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.names)} class names")
        return self


class FileEntry(_Strict):
    """Size and sha256 of one bundle file, checked before the file is loaded."""

    bytes: Annotated[int, Field(ge=0)]
    sha256: Sha256


class OpenVINOConfig(_Strict):
    """Compile properties a bundle may set for OpenVINO's CPU plugin."""

    INFERENCE_PRECISION_HINT: Literal["f32", "bf16", "f16"]


class OnnxRuntimeConfig(_Strict):
    """Session config entries a bundle may set for ONNX Runtime."""

    session_intra_op_allow_spinning: Literal["0", "1"] | None = Field(
        None, alias="session.intra_op.allow_spinning", serialization_alias="session.intra_op.allow_spinning"
    )


class TensorRTConfig(_Strict):
    """Engine-build options a bundle may set for TensorRT (never a cache path: that is the user's choice)."""

    workspace_mb: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    tf32: bool | None = None
    dynamic_range: tuple[Size, Size, Size] | None = None


class RuntimeConfig(_Strict):
    """Per-backend settings the exporter validated parity with; nothing else reaches a backend."""

    onnxruntime: OnnxRuntimeConfig | None = None
    openvino: OpenVINOConfig | None = None
    tensorrt: TensorRTConfig | None = None


class Manifest(_Strict):
    """A bundle's ``manifest.json``. ``tools``, ``export``, ``parity`` and ``tensorrt`` are reports for people."""

    format: Literal["edgeseg-bundle"] = FORMAT
    format_version: Literal[2] = FORMAT_VERSION
    created: str | None = None
    model: ModelInfo
    classes: ClassesInfo | None = None
    input: InputSpec
    frame: FrameSpec | None = None
    outputs: Annotated[list[OutputSpec], Field(min_length=1, max_length=len(OUTPUT_KINDS))]
    target: Literal["onnx", "onnxruntime", "openvino", "tensorrt"]
    precision: Literal["fp32", "fp16", "bf16", "int8"]
    artifacts: dict[Literal["onnx", "onnxruntime", "openvino", "tensorrt"], FileName]
    runtime_config: RuntimeConfig = RuntimeConfig()
    files: dict[FileName, FileEntry]
    tools: dict[str, str] = {}
    export: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    tensorrt: dict[str, Any] | None = None

    @field_validator("files")
    @classmethod
    def _no_manifest_in_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if MANIFEST in files:
            raise ValueError(f"{MANIFEST} cannot list itself")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.precision not in SUPPORTED_PRECISIONS[self.target]:
            raise ValueError(f"target {self.target} does not take precision {self.precision}")
        if "onnx" not in self.artifacts:
            raise ValueError("artifacts must name the portable graph under 'onnx'")
        for backend, name in self.artifacts.items():
            unlisted = [n for n in artifact_files(name) if n not in self.files]
            if unlisted:
                raise ValueError(f"artifacts.{backend}: {', '.join(unlisted)} is not listed under files (unverifiable)")
        hint = self.runtime_config.openvino
        wanted = OPENVINO_HINTS[self.precision]
        if self.target == "openvino" and (hint is None or wanted != hint.INFERENCE_PRECISION_HINT):
            raise ValueError(
                f"runtime_config.openvino.INFERENCE_PRECISION_HINT must be {wanted!r} for a "
                f"{self.precision} openvino bundle (the hint its parity was checked with)"
            )
        kinds = [o.kind for o in self.outputs]
        names = [o.name for o in self.outputs]
        if len(set(kinds)) != len(kinds) or len(set(names)) != len(names):
            raise ValueError(f"outputs repeat a kind or a name: {list(zip(kinds, names))}")
        if self.classes is not None and len(self.classes.names) != self.model.num_classes:
            raise ValueError(
                f"classes.names has {len(self.classes.names)} names for model.num_classes {self.model.num_classes}"
            )
        for output in self.outputs:
            if output.num_classes not in (None, self.model.num_classes):
                raise ValueError(f"output {output.name} shape {output.shape} does not have model.num_classes channels")
            if output.classes is not None and max(output.classes) >= self.model.num_classes:
                raise ValueError(f"output {output.name} classes {output.classes} beyond model.num_classes")
        if "labels-full" in kinds and self.frame is None:
            raise ValueError("a labels-full output needs the frame as the graph input (a frame entry)")
        if not {"logits", "labels-full"} & set(kinds):
            raise ValueError("outputs need logits or labels-full: Segmenter.predict makes its label map from them")
        if self.frame is not None and self.input.dynamic and self.frame.size is not None:
            raise ValueError("a dynamic graph takes frames of any size: its frame shape must leave H and W free")
        return self

    @property
    def graph_input(self) -> tuple[str, tuple[int | None, ...], str]:
        """(name, shape, dtype) of the graph's one input: the frame when it has one, else the model input."""
        if self.frame is not None:
            return self.frame.name, tuple(self.frame.shape), self.frame.dtype
        return self.input.name, tuple(self.input.shape), self.input.dtype

    def output(self, kind: str) -> OutputSpec | None:
        """The output of ``kind`` (see ``OUTPUT_KINDS``), or None when the graph does not have it."""
        return next((o for o in self.outputs if o.kind == kind), None)

    def backend_config(self, backend: str) -> dict[str, Any]:
        """The allow-listed settings for ``backend``, as the backend takes them."""
        config = getattr(self.runtime_config, backend, None)
        return {} if config is None else config.model_dump(by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """The manifest as written to ``manifest.json``."""
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2) + "\n"


class ManifestError(ValueError):
    """A manifest is malformed: the message names every offending field."""


def _read_version_1(data: Mapping[str, Any]) -> Manifest:
    """Upgrade a version-1 manifest: its one ``output`` (logits) becomes ``outputs``; nothing else changed."""
    upgraded = {key: value for key, value in data.items() if key != "output"}
    upgraded["format_version"] = FORMAT_VERSION
    upgraded["outputs"] = [data["output"]] if "output" in data else []
    return Manifest.model_validate(upgraded)


# One reader per supported format_version; older versions are upgraded to the current model.
# Version 2 (frame path in the graph): optional ``frame`` input, a list of ``outputs`` replacing ``output``.
READERS: dict[int, Callable[[Mapping[str, Any]], Manifest]] = {1: _read_version_1, 2: Manifest.model_validate}


def _field_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors()[:10]:
        where = ".".join(str(part) for part in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    more = error.error_count() - len(lines)
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def parse_manifest(data: Mapping[str, Any], where: str = MANIFEST) -> Manifest:
    """Validate a decoded manifest against the schema of its ``format_version``."""
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ManifestError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("format_version")
    reader = READERS.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
    if reader is None:
        raise ManifestError(
            f"{where}: format_version {version!r} is not supported by this edgeseg (supports "
            f"{', '.join(map(str, READERS))}); re-export the bundle with this version"
        )
    try:
        return reader(data)
    except ValidationError as error:
        raise ManifestError(f"{where} is invalid: {_field_errors(error)}; re-export the bundle") from None


def decode_manifest(text: bytes | str, where: str = MANIFEST) -> Manifest:
    """Parse and validate ``manifest.json`` text (bounded size; NaN and Infinity are refused)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where} is {len(text)} bytes, over the {MAX_MANIFEST_BYTES} byte limit")

    def refuse(constant: str) -> float:
        raise ManifestError(f"{where}: {constant} is not a JSON number; re-export the bundle")

    try:
        data = json.loads(text, parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ManifestError(f"{where} is not valid JSON ({error}); re-export the bundle") from None
    return parse_manifest(data, where)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the current format version (what ``edgeseg/schemas/`` ships)."""
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://edgeseg.invalid/{SCHEMA_FILE}"
    return schema


def check_precision(target: str, precision: str) -> None:
    """Raise ValueError, saying why and what to use instead, when ``target`` cannot take ``precision``."""
    if target not in SUPPORTED_PRECISIONS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in SUPPORTED_PRECISIONS[target]:
        raise ValueError(f"--target {target} does not support --precision {precision}: {UNSUPPORTED_BECAUSE[target]}")


if __name__ == "__main__":
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
