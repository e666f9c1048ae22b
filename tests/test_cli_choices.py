"""The CLI's ``--target`` and ``--backend`` choices come from the registries; fast, in-process."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.bundle import TARGETS
from edgeseg.cli import build_parser, main
from edgeseg.runtimes import BACKENDS

MakeBundle = Callable[..., Path]


def choices(command: str, option: str) -> tuple[str, ...]:
    """The choices of ``option`` of the sub-command ``command``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices or ())


def test_choices_come_from_the_registries() -> None:
    assert choices("export", "--target") == TARGETS
    assert choices("lint", "--target") == BACKENDS
    for command in ("predict", "eval", "bench"):
        assert choices(command, "--backend") == BACKENDS
    assert "tensorrt" in BACKENDS


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_predict_on_tensorrt_explains_how_to_install_it(
    tiny_bundle: MakeBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(image)
    code = main(["predict", str(tiny_bundle()), str(image), "--out", str(tmp_path / "m.png"), "--backend", "tensorrt"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("edgeseg predict: error: TensorRT is not installed") and "pip install tensorrt" in error
    assert not (tmp_path / "m.png").exists()


def test_cli_imports_without_torch() -> None:
    script = "import sys, edgeseg.cli; edgeseg.cli.build_parser(); assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    """(command path, action) of every option of ``parser`` and its subcommands."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _options(child, f"{path} {name}")
        elif action.option_strings and action.dest != "help":
            found.append((path, action))
    return found


def test_every_option_says_what_it_is_and_help_shows_defaults() -> None:
    parser = build_parser()
    undocumented = [f"{path} {a.option_strings[0]}" for path, a in _options(parser, "edgeseg") if not a.help]
    assert not undocumented
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["export"].format_help().split())
    assert "the runtime the bundle is built for (default: onnxruntime)" in text and "(default: fp32)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("full_resolution", "give KEY=VALUE"),
        ("__import__('os')=1", "give KEY=VALUE"),
        ("x=[1, 2]", "a boolean, a number or a string"),
        ('x={"a": 1}', "a boolean, a number or a string"),
    ],
)
def test_model_options_are_parsed_never_evaluated(text: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--model", "setr-naive-tiny", "--out", "b", "--model-option", text])
    assert message in capsys.readouterr().err


def test_model_option_values_are_json_literals_or_plain_strings() -> None:
    args = build_parser().parse_args(
        ["export", "--model", "m", "--out", "b", "--model-option", "a=false", "--model-option", "b=os.system"]
    )
    assert args.model_option == [("a", False), ("b", "os.system")]
