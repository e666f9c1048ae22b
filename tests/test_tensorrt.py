"""TensorRT without a GPU: trtexec command lines per version/precision/shape, and the missing-package paths.

TensorRT cannot be installed on edgeseg's CI machines, so the BackendUnavailableError tests run the real import
and fail there; they skip where tensorrt is installed.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edgeseg.export.tensorrt import build_engine, profile_shapes, trtexec_commands
from edgeseg.runtimes import BACKENDS, BackendUnavailableError, available_backends, create_runner
from edgeseg.runtimes.tensorrt import TensorRTRunner
from edgeseg.runtimes.tensorrt_engine import EngineOptions, cached_engine, cached_engine_path, engine_cache_dir

STATIC = (1, 3, 512, 512)
DYNAMIC = (1, 3, None, None)
RANGE = ((256, 256), (512, 512), (1024, 2048))
VERSIONS = ("tensorrt-11", "tensorrt-10", "tensorrt-10-weakly-typed")
needs_no_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)


def args(command: str) -> list[str]:
    return shlex.split(command)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_strongly_typed_lines_carry_no_precision_flags(precision):
    commands = trtexec_commands("m.onnx", "m.engine", precision, "input", STATIC, (512, 512))
    for version in ("tensorrt-11", "tensorrt-10"):
        line = args(commands[version])
        assert line[:4] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--skipInference"]
        assert not {"--fp16", "--bf16", "--int8", "--best"} & set(line)
        assert "--noTF32" in line
    assert "--stronglyTyped" not in args(commands["tensorrt-11"])  # a deprecated no-op on 11.x
    assert args(commands["tensorrt-10"])[-1] == "--stronglyTyped"


@pytest.mark.parametrize(("precision", "flags"), [("fp32", []), ("fp16", ["--fp16"]), ("int8", ["--int8"])])
def test_weakly_typed_tensorrt_10_line_enables_the_graph_precision(precision, flags):
    line = args(
        trtexec_commands("m.onnx", "m.engine", precision, "input", STATIC, (512, 512))["tensorrt-10-weakly-typed"]
    )
    assert "--stronglyTyped" not in line
    assert [a for a in line if a in ("--fp16", "--bf16", "--int8")] == flags


def test_static_graph_has_no_shape_flags():
    commands = trtexec_commands("m.onnx", "m.engine", "fp16", "input", STATIC, (512, 512))
    assert not any("Shapes=" in a or a.startswith("--shapes") for c in commands.values() for a in args(c))
    assert args(commands["benchmark"]) == ["trtexec", "--loadEngine=m.engine"]


def test_dynamic_graph_gets_a_profile_and_benchmark_shapes():
    commands = trtexec_commands("m.onnx", "m.engine", "int8", "input", DYNAMIC, (384, 640), RANGE)
    expected = ["--minShapes=input:1x3x256x256", "--optShapes=input:1x3x512x512", "--maxShapes=input:1x3x1024x2048"]
    for version in VERSIONS:
        line = args(commands[version])
        assert [a for a in line if "Shapes=" in a] == expected
    assert args(commands["benchmark"]) == ["trtexec", "--loadEngine=m.engine", "--shapes=input:1x3x384x640"]


def test_tf32_and_paths_with_spaces():
    commands = trtexec_commands("my models/m.onnx", "out dir/m.engine", "fp32", "input", STATIC, (512, 512), tf32=True)
    line = args(commands["tensorrt-10"])
    assert "--onnx=my models/m.onnx" in line and "--saveEngine=out dir/m.engine" in line
    assert "--noTF32" not in line


@pytest.mark.parametrize(
    ("shape", "dynamic_range", "says"),
    [
        (DYNAMIC, None, "pass dynamic_range"),
        (STATIC, RANGE, "drop dynamic_range"),
        (DYNAMIC, ((512, 512), (256, 256), (1024, 1024)), "min <= opt <= max"),
        ((1, None, None, None), RANGE, "dynamic channel count"),
        ((1, 3, 512), None, "N×C×H×W"),
    ],
)
def test_bad_shapes_are_refused(shape, dynamic_range, says):
    with pytest.raises(ValueError, match=says):
        trtexec_commands("m.onnx", "m.engine", "fp16", "input", shape, (512, 512), dynamic_range)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        trtexec_commands("m.onnx", "m.engine", "fp8", "input", STATIC, (512, 512))


def test_profile_shapes():
    assert profile_shapes(STATIC, None) is None
    assert profile_shapes((None, 3, 256, 320), None) == ((1, 3, 256, 320),) * 3
    assert profile_shapes((None, 3, None, 320), RANGE) == ((1, 3, 256, 320), (1, 3, 512, 320), (1, 3, 1024, 320))


@needs_no_tensorrt
def test_build_engine_without_tensorrt_says_how_to_install(tmp_path):
    with pytest.raises(BackendUnavailableError) as caught:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    message = str(caught.value)
    assert "TensorRT is not installed" in message and "pip install tensorrt" in message
    assert "pypi.nvidia.com" in message and "trtexec" in message
    assert not (tmp_path / "m.engine").exists()


@needs_no_tensorrt
@pytest.mark.parametrize("suffix", [".onnx", ".engine"])
def test_runner_without_tensorrt_says_how_to_install(tmp_path, suffix):
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        create_runner("tensorrt", tmp_path / f"model{suffix}")


def test_runner_checks_its_arguments_before_importing_tensorrt(tmp_path):
    with pytest.raises(ValueError, match=r"loads \.engine/\.plan files or \.onnx graphs"):
        TensorRTRunner(tmp_path / "model.xml")
    with pytest.raises(ValueError, match="unknown tensorrt config key"):
        TensorRTRunner(tmp_path / "model.onnx", config={"precision": "fp16"})
    with pytest.raises(ValueError, match="threads must be a positive int"):
        TensorRTRunner(tmp_path / "model.onnx", threads=0)


@needs_no_tensorrt
def test_tensorrt_is_registered_but_not_available_here():
    assert "tensorrt" in BACKENDS
    assert "tensorrt" not in available_backends()


SHA = "ab" * 32


def test_engine_cache_defaults_to_edgeseg_home(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESEG_HOME", str(tmp_path / "home"))
    assert engine_cache_dir() == tmp_path / "home" / "engines"
    monkeypatch.delenv("EDGESEG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert engine_cache_dir() == tmp_path / "user" / ".cache" / "edgeseg" / "engines"


def test_engine_cache_name_is_content_version_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESEG_HOME", str(tmp_path))
    path = cached_engine_path(SHA, "10.3.0", "Orin", EngineOptions())
    assert path.parent == tmp_path / "engines"
    assert path.name == f"{SHA}.{EngineOptions().build_digest()}.trt-10.3.0.Orin.engine"
    elsewhere = cached_engine_path(SHA, "11.4.0", "NVIDIA H100 80GB/HBM3", EngineOptions(cache_dir=Path("/cache")))
    assert elsewhere.parent == Path("/cache") and elsewhere.name.endswith(".trt-11.4.0.NVIDIA-H100-80GB-HBM3.engine")
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        cached_engine_path("../../etc/passwd", "10.3.0", "Orin", EngineOptions())


def test_engine_cache_name_changes_with_every_build_option():
    names = {
        cached_engine_path(SHA, "10.3.0", "Orin", options).name
        for options in (
            EngineOptions(),
            EngineOptions(tf32=True),
            EngineOptions(workspace_mb=512),
            EngineOptions(dynamic_range=RANGE),
            EngineOptions(dynamic_range=((256, 256), (512, 512), (1024, 1024))),
        )
    }
    assert len(names) == 5
    assert EngineOptions(cache_dir=Path("/a")).build_digest() == EngineOptions().build_digest()


def test_engine_options_from_a_manifest_config():
    options = EngineOptions.from_config(
        {"dynamic_range": [[256, 256], [512, 512], [1024, 2048]], "workspace_mb": 256, "tf32": True, "cache_dir": "~/e"}
    )
    assert options == EngineOptions(256, RANGE, True, Path("~/e").expanduser())
    assert EngineOptions.from_config(None) == EngineOptions()


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"precision": "fp16"}, "unknown tensorrt config key"),
        ({"workspace_mb": 0}, "workspace_mb must be a positive int"),
        ({"workspace_mb": "512"}, "workspace_mb must be a positive int"),
        ({"tf32": "yes"}, "tf32 must be true or false"),
        ({"cache_dir": 3}, "cache_dir must be a folder path"),
        ({"dynamic_range": [[256, 256], [512, 512]]}, r"dynamic_range must be \[\[min_h"),
        ({"dynamic_range": [[256, 256], [512, -1], [1024, 1024]]}, "positive ints"),
        ({"dynamic_range": [[256, 256], [512, True], [1024, 1024]]}, "positive ints"),
    ],
)
def test_bad_engine_options_are_refused(config, says):
    with pytest.raises(ValueError, match=says):
        EngineOptions.from_config(config)


@needs_no_tensorrt
def test_cached_engine_without_tensorrt_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESEG_HOME", str(tmp_path / "home"))
    onnx_path = tmp_path / "bundle" / "model.onnx"
    onnx_path.parent.mkdir()
    onnx_path.write_bytes(b"not a graph")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        cached_engine(onnx_path, EngineOptions())
    assert [p.name for p in onnx_path.parent.iterdir()] == ["model.onnx"]
    assert not (tmp_path / "home").exists()


def test_engine_builder_and_runner_import_no_torch():
    script = (
        "import sys, edgeseg.runtimes.tensorrt, edgeseg.runtimes.tensorrt_engine; "
        "leaked = [m for m in ('torch', 'edgeseg.models', 'edgeseg.export') if m in sys.modules]; "
        "assert not leaked, leaked"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
