"""Shared pytest fixtures. Each section below belongs to one group of tests; keep them delimited."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.bundle import describe_files, write_manifest

# ==== tiny_bundle: small real bundles (one strided Conv) for runtime tests ==========================
# A bundle is built once per target and session; treat it as read-only (copy it before tampering).

TINY_INPUT_SHAPE = (1, 3, 64, 96)
TINY_CLASSES = 5
TINY_STRIDE = 8
TINY_OUTPUT_SHAPE = (1, TINY_CLASSES, 64 // TINY_STRIDE, 96 // TINY_STRIDE)
TINY_MEAN = [123.675, 116.28, 103.53]
TINY_STD = [58.395, 57.12, 57.375]


@dataclass(frozen=True)
class TinyConv:
    """The weights of the tiny bundle's Conv (kernel = stride = 8) and a numpy reference of it."""

    weight: np.ndarray  # classes × 3 × 8 × 8
    bias: np.ndarray  # classes

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """1×3×64×96 input → 1×5×8×12 logits, in float64."""
        n, c, h, w = x.shape
        s = TINY_STRIDE
        patches = x.astype(np.float64).reshape(n, c, h // s, s, w // s, s)
        out = np.einsum("nciajb,kcab->nkij", patches, self.weight.astype(np.float64))
        return out + self.bias.astype(np.float64)[None, :, None, None]


@pytest.fixture(scope="session")
def tiny_conv() -> TinyConv:
    """Fixed random weights of the tiny bundle's model."""
    rng = np.random.default_rng(1234)
    weight = (rng.standard_normal((TINY_CLASSES, 3, TINY_STRIDE, TINY_STRIDE)) * 0.1).astype(np.float32)
    bias = (rng.standard_normal(TINY_CLASSES) * 0.1).astype(np.float32)
    return TinyConv(weight, bias)


def _tiny_onnx(conv: TinyConv, path: Path, dynamic: bool) -> None:
    """Save the one-Conv graph (opset 18, input ``input``, output ``logits``) to ``path``.

    With ``dynamic`` the height and width are symbolic.
    """
    node = helper.make_node("Conv", ["input", "weight", "bias"], ["logits"], kernel_shape=[8, 8], strides=[8, 8])
    input_shape, output_shape = list(TINY_INPUT_SHAPE), list(TINY_OUTPUT_SHAPE)
    if dynamic:
        input_shape[2:], output_shape[2:] = ["h", "w"], ["h8", "w8"]
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(conv.weight, "weight"), numpy_helper.from_array(conv.bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _build_tiny_bundle(conv: TinyConv, folder: Path, target: str, dynamic: bool) -> Path:
    """Write model.onnx (plus OpenVINO IR for target openvino) and the manifest into ``folder``."""
    folder.mkdir(parents=True)
    _tiny_onnx(conv, folder / "model.onnx", dynamic)
    artifacts = {"onnx": "model.onnx"}
    runtime_config: dict[str, dict[str, str]] = {}
    if target == "openvino":
        import openvino as ov

        ov.save_model(ov.convert_model(folder / "model.onnx"), folder / "model.xml", compress_to_fp16=False)
        artifacts["openvino"] = "model.xml"
        runtime_config["openvino"] = {"INFERENCE_PRECISION_HINT": "f32"}
    names = [p.name for p in folder.iterdir()]
    manifest = {
        "format": "edgeseg-bundle",
        "format_version": 2,
        "model": {
            "name": "tiny-conv",
            "num_classes": TINY_CLASSES,
            "weights": "random",
            "params": int(conv.weight.size + conv.bias.size),
            "macs": int(conv.weight.size * TINY_OUTPUT_SHAPE[2] * TINY_OUTPUT_SHAPE[3]),
        },
        "input": {
            "name": "input",
            "shape": [1, 3, None, None] if dynamic else list(TINY_INPUT_SHAPE),
            "example_size": list(TINY_INPUT_SHAPE[2:]),
            "size_multiple": TINY_STRIDE,
            "resize": (
                {"mode": "keep_ratio", "short_side": 64, "max_long_side": 256, "multiple": TINY_STRIDE}
                if dynamic
                else {"mode": "stretch", "size": list(TINY_INPUT_SHAPE[2:])}
            ),
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "mean": TINY_MEAN,
            "std": TINY_STD,
            "pixel_range": [0, 255],
        },
        "outputs": [
            {
                "name": "logits",
                "shape": [1, TINY_CLASSES, None, None] if dynamic else list(TINY_OUTPUT_SHAPE),
                "layout": "NCHW",
                "dtype": "float32",
                "stride": TINY_STRIDE,
                "kind": "logits",
            }
        ],
        "target": target,
        "precision": "fp32",
        "artifacts": artifacts,
        "runtime_config": runtime_config,
        "files": describe_files(folder, names),
        "tools": {},
        "export": {},
        "parity": {},
    }
    write_manifest(folder, manifest)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_conv: TinyConv) -> Callable[..., Path]:
    """Factory: ``tiny_bundle(target="onnx", dynamic=False)`` → path of a real bundle (target onnx or openvino).

    Model: input ``input`` 1×3×64×96 → Conv 3→5, kernel 8, stride 8 (weights: ``tiny_conv``) → output
    ``logits`` 1×5×8×12; fp32, ImageNet mean/std. With ``dynamic`` the graph takes any multiple of 8 and the
    manifest asks for aspect-preserving resizing (short side 64). Bundles are cached: do not modify them.
    """
    built: dict[tuple[str, bool], Path] = {}

    def make(target: str = "onnx", dynamic: bool = False) -> Path:
        if target not in ("onnx", "openvino"):
            raise ValueError(f"tiny_bundle builds targets onnx and openvino, not {target!r}")
        if (target, dynamic) not in built:
            folder = tmp_path_factory.mktemp("tiny") / f"{target}{'-dynamic' if dynamic else ''}"
            built[target, dynamic] = _build_tiny_bundle(tiny_conv, folder, target, dynamic)
        return built[target, dynamic]

    return make


# ==== end of tiny_bundle ============================================================================


# ==== afformer_bundle: real AFFormer-tiny bundles, exported once per session ====


@pytest.fixture(scope="session")
def afformer_bundle(tmp_path_factory):
    """``afformer_bundle(target, (H, W))`` → path of an AFFormer-tiny bundle (golden weights when present)."""
    from edgeseg.export import ExportRequest, export_bundle
    from tests.golden import GOLDEN_ROOT

    checkpoint = GOLDEN_ROOT / "afformer_tiny" / "checkpoint.pth"
    root = tmp_path_factory.mktemp("afformer_bundles")
    made: dict[tuple[str, tuple[int, int]], Path] = {}

    def make(target: str, size: tuple[int, int]) -> Path:
        key = (target, tuple(size))
        if key not in made:
            request = ExportRequest(
                model="afformer-tiny",
                out=root / f"{target}-{size[0]}x{size[1]}",
                target=target,
                input_size=tuple(size),
                checkpoint=checkpoint if checkpoint.is_file() else None,
            )
            made[key] = export_bundle(request)
        return made[key]

    return make


# ==== one_torch_thread: small PyTorch forwards on one intra-op thread ====


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small forwards run fastest on one intra-op thread, and do not stall when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ==== trained_afformer: AFFormer-tiny briefly trained on a small synthetic set, once per session ====


@pytest.fixture(scope="session")
def trained_afformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """``(checkpoint, dataset folder, val mIoU)`` of AFFormer-tiny trained on 128×128 synthetic images.

    100 images (80 train, 20 val; classes ``edgeseg.data.CLASSES``), 250 steps of batch 8 on one intra-op
    thread (robust when the cores are shared): about 50 s, val mIoU about 0.6, so the logits are spatially
    meaningful for precision and int8 checks. Read-only: copy the files before changing them.
    """
    from edgeseg.data import generate_synthetic
    from edgeseg.train import TrainConfig, train

    root = tmp_path_factory.mktemp("trained_afformer")
    data = generate_synthetic(root / "data", 100, (128, 128), seed=0).root
    config = TrainConfig(
        model="afformer-tiny",
        data=data,
        out=root / "afformer-tiny.pth",
        steps=250,
        batch_size=8,
        crop=(128, 128),
        lr=3e-3,
        threads=1,
    )
    result = train(config, log=lambda line: None)
    return result.checkpoint, data, result.val_miou


# ==== end of trained_afformer ====
