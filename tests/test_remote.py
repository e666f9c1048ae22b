"""Benchmarks on remote devices over SSH, against real asyncssh servers on 127.0.0.1 (tests/loopback_ssh.py).

Each "device" is a temporary home folder; its commands run on this machine. Only loopback devices are tested.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import numpy as np
import pytest
from PIL import Image

from edgeseg.bench import benchmark
from edgeseg.bundle import MANIFEST, sha256_of
from edgeseg.cli import main
from edgeseg.data import open_dataset
from edgeseg.evaluate import evaluate
from edgeseg.remote.device import DeviceAddress
from edgeseg.remote.fleet import load_devices
from tests.loopback_ssh import LoopbackSSH, ServerKeys

WORKTREE = Path(__file__).resolve().parents[1]
FAST = ["--warmup", "1", "--iters", "3"]
# Hides ONNX Runtime from a Python that otherwise has edgeseg: a device without the bundle's backend.
NO_ONNXRUNTIME = """\
import sys

class _NoOnnxRuntime:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoOnnxRuntime())
"""


@dataclass(frozen=True)
class Loopback:
    """Devices: ``port`` behaves, ``drop_port`` drops the connection during a benchmark (both share one home),
    ``bare_port`` has a home of its own, no edgeseg on its PYTHONPATH and no package index (for --install-wheel).
    """

    home: Path
    port: int
    drop_port: int
    bare_port: int
    bare_home: Path
    key: Path
    other_key: Path  # a key the devices do not accept
    known_hosts: Path

    def address(self, port: int | None = None) -> str:
        return f"ssh://tester@127.0.0.1:{port or self.port}"

    def options(self, port: int | None = None) -> list[str]:
        return ["--device", self.address(port), "--key", str(self.key), "--known-hosts", str(self.known_hosts)]

    @property
    def bundle_cache(self) -> Path:
        return self.home / ".cache" / "edgeseg" / "bundles"


def _wrapper(path: Path, line: str) -> None:
    path.write_text(f"#!/bin/sh\n{line}\n")
    path.chmod(0o755)


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    root = tmp_path_factory.mktemp("loopback")
    home, bin_dir, blocker = root / "home", root / "home" / "bin", root / "no-onnxruntime"
    bin_dir.mkdir(parents=True)
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_ONNXRUNTIME)
    _wrapper(bin_dir / "python3", f'exec {sys.executable} "$@"')
    _wrapper(bin_dir / "python-no-edgeseg", f'exec {sys._base_executable} -E -s "$@"')
    _wrapper(bin_dir / "python-no-onnxruntime", f'PYTHONPATH={blocker}:{WORKTREE} exec {sys.executable} "$@"')
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key, other_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    for name, key in (("id_client", client_key), ("id_other", other_key)):
        key.write_private_key(str(root / name))
        (root / name).chmod(0o600)
    (root / "authorized_keys").write_bytes(client_key.export_public_key())
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(WORKTREE), "LANG": "C.UTF-8"}
    keys = ServerKeys(host_key, root / "authorized_keys")
    ssh = LoopbackSSH()
    try:
        port = ssh.start(keys, home, env)
        drop_port = ssh.start(keys, home, env, drop_on="benchmark(")
        bare_home = root / "bare-home"
        bare_home.mkdir()
        bare_env = {"HOME": str(bare_home), "PATH": f"{bin_dir}:/usr/bin:/bin", "PIP_NO_INDEX": "1", "LANG": "C.UTF-8"}
        bare_port = ssh.start(keys, bare_home, bare_env)
        public = host_key.export_public_key().decode()
        known = "".join(f"[127.0.0.1]:{p} {public}" for p in (port, drop_port, bare_port))
        (root / "known_hosts").write_text(known)
        yield Loopback(
            home, port, drop_port, bare_port, bare_home, root / "id_client", root / "id_other", root / "known_hosts"
        )
    finally:
        ssh.close()


def _bench(tmp_path: Path, bundle: Path, options: list[str]) -> tuple[int, Path]:
    """Run `edgeseg bench` with ``options``; return its exit status and the --json path."""
    out = tmp_path / "result.json"
    return main(["bench", str(bundle), *FAST, "--json", str(out), *options]), out


def test_remote_record_has_the_local_keys_and_the_copy_is_cached(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_bundle()
    shutil.rmtree(loopback.bundle_cache, ignore_errors=True)
    rc, out = _bench(tmp_path, bundle, loopback.options())
    assert rc == 0, capsys.readouterr().err
    [record] = json.loads(out.read_text())
    local = benchmark(bundle, warmup=1, iters=3)
    assert set(record) == set(local) | {"device"}
    assert record["bundle"] == str(bundle) and record["backend"] == "onnxruntime" and not record["torch_imported"]
    assert record["latency_ms"]["n"] == 3 and record["model"] == local["model"]
    device = record["device"]
    assert device["name"] == "127.0.0.1" and device["address"] == loopback.address()
    assert device["packages"]["onnxruntime"] and device["edgeseg_version"] and device["cpu_model"]
    assert device["bundle_copied"] is True
    cached = loopback.bundle_cache / sha256_of(bundle / MANIFEST)
    assert device["bundle_cache"] == "~/" + str(cached.relative_to(loopback.home))
    assert sorted(p.name for p in cached.iterdir()) == sorted(p.name for p in bundle.iterdir())
    assert "Device ssh://" in capsys.readouterr().out

    rc, out = _bench(tmp_path, bundle, loopback.options())
    assert rc == 0
    [again] = json.loads(out.read_text())
    assert again["device"]["bundle_copied"] is False
    assert [p.name for p in loopback.bundle_cache.iterdir()] == [cached.name]  # no staging folder left


def _expect_failure(tmp_path: Path, bundle: Path, options: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc, _ = _bench(tmp_path, bundle, options)
    assert rc == 2
    assert list(tmp_path.iterdir()) == []  # no result file, not even a partial one
    return capsys.readouterr().err


def test_wrong_key_is_refused(loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys) -> None:
    options = loopback.options()
    options[options.index("--key") + 1] = str(loopback.other_key)
    err = _expect_failure(tmp_path, tiny_bundle(), options, capsys)
    assert "refused the key" in err and "authorized_keys" in err


def test_key_with_a_passphrase_points_to_the_agent(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys
) -> None:
    locked = tmp_path.parent / f"{tmp_path.name}-locked_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(locked), "pkcs8-pem", passphrase="secret")
    options = loopback.options()
    options[options.index("--key") + 1] = str(locked)
    err = _expect_failure(tmp_path, tiny_bundle(), options, capsys)
    assert f"the private key {locked} cannot be read" in err and "ssh-agent" in err


def test_unknown_host_key_is_refused(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys
) -> None:
    empty = tmp_path.parent / f"{tmp_path.name}-known_hosts"
    empty.write_text("")
    options = loopback.options()
    options[options.index("--known-hosts") + 1] = str(empty)
    err = _expect_failure(tmp_path, tiny_bundle(), options, capsys)
    assert "host key is not trusted" in err and f"ssh-keyscan -p {loopback.port} 127.0.0.1 >> {empty}" in err


def test_refused_port(loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys) -> None:
    err = _expect_failure(tmp_path, tiny_bundle(), loopback.options(_free_port()), capsys)
    assert "refused the connection" in err and "sshd" in err


@pytest.mark.parametrize(
    ("python", "message"),
    [
        ("python-no-edgeseg", "no edgeseg; run on the device: python-no-edgeseg -m pip install 'edgeseg[onnxruntime]'"),
        ("python-no-onnxruntime", "but not onnxruntime (needed: the onnxruntime backend); run on the device: "),
        ("no-such-python", "there is no Python at 'no-such-python'"),
    ],
)
def test_device_without_edgeseg_or_backend(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys, python: str, message: str
) -> None:
    err = _expect_failure(tmp_path, tiny_bundle(), [*loopback.options(), "--python", python], capsys)
    assert message in err


def test_connection_dropped_mid_run(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys
) -> None:
    err = _expect_failure(tmp_path, tiny_bundle(), loopback.options(loopback.drop_port), capsys)
    assert "did not finish (the SSH connection was lost); nothing was recorded" in err


@pytest.mark.slow
def test_install_wheel_puts_this_checkout_into_a_venv_on_the_device(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys
) -> None:
    """The base Python has numpy and pydantic but no edgeseg; no package index is reachable, so the venv (which
    sees the system packages) gets edgeseg from the wheel alone. TensorRT is missing there: the check says so."""
    options = [*loopback.options(loopback.bare_port), "--python", "python-no-edgeseg", "--install-wheel"]
    err = _expect_failure(tmp_path, tiny_bundle(), [*options, "--backend", "tensorrt"], capsys)
    venv_python = "~/.cache/edgeseg/venv/bin/python"
    assert f"({venv_python}, Python" in err and "has edgeseg 0.1.0 but not tensorrt" in err
    [wheel] = (loopback.bare_home / ".cache" / "edgeseg" / "wheels").glob("*/edgeseg-*.whl")
    installed = subprocess.run(
        [str(loopback.bare_home / venv_python[2:]), "-c", "import edgeseg.remote; print(edgeseg.remote.__file__)"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=loopback.bare_home, check=True,
    ).stdout  # fmt: skip
    assert str(loopback.bare_home / ".cache" / "edgeseg" / "venv") in installed and wheel.stat().st_size > 0


def test_fleet_reports_the_dead_device_and_completes_the_live_one(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        f'[[device]]\nname = "live"\naddress = "{loopback.address()}"\nkey = "{loopback.key}"\ntags = ["x86"]\n\n'
        f'[[device]]\nname = "dead"\naddress = "{loopback.address(_free_port())}"\nkey = "{loopback.key}"\n'
    )
    out, plot = tmp_path / "fleet.json", tmp_path / "fleet.png"
    options = ["--devices", str(devices), "--known-hosts", str(loopback.known_hosts), "--plot", str(plot)]
    rc = main(["bench", str(tiny_bundle()), *FAST, "--json", str(out), *options])
    assert rc == 1  # a device failed
    result = json.loads(out.read_text())
    [record] = result["records"]
    assert record["device"]["name"] == "live" and record["device"]["tags"] == ["x86"]
    [failure] = result["failures"]
    assert failure["device"] == "dead" and "refused the connection" in failure["error"]
    table = capsys.readouterr().out
    assert "| live | tiny-conv |" in table and "| dead | (all) |" in table and "FAILED: device dead" in table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _labelled_set(root: Path, stems: list[str]) -> Path:
    """A dataset of the tiny bundle's 5 classes: random 64x96 images and labels, all in split val."""
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(rng.integers(0, 5, (64, 96), dtype=np.uint8), mode="L").save(root / "labels" / f"{stem}.png")
    index = {"format": "edgeseg-segmentation-set", "version": 1, "classes": list("vwxyz"), "splits": {"val": stems}}
    (root / "dataset.json").write_text(json.dumps(index))
    return root


def test_eval_on_device_matches_a_local_eval(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_bundle()
    data = _labelled_set(tmp_path / "data", ["a", "b", "c"])
    out = tmp_path / "eval.json"
    rc = main(["eval", str(bundle), "--data", str(data), "--limit", "2", "--json", str(out), *loopback.options()])
    assert rc == 0, capsys.readouterr().err
    remote = json.loads(out.read_text())
    local = evaluate(bundle, data, limit=2)
    assert set(remote) == set(local) | {"device"}
    assert remote["bundle"] == str(bundle) and remote["dataset"] == str(data) and remote["images"] == 2
    assert remote["miou"] == local["miou"] and remote["per_class_iou"] == local["per_class_iou"]
    cached = loopback.home / remote["device"]["dataset_cache"].removeprefix("~/")
    assert sorted(str(p.relative_to(cached)) for p in cached.rglob("*.png")) == [
        f"{folder}/{stem}.png" for folder in ("images", "labels") for stem in open_dataset(data).splits["val"][:2]
    ]
    assert "mIoU" in capsys.readouterr().out


# ---- addresses and devices.toml ------------------------------------------------------------------


def test_device_addresses() -> None:
    assert DeviceAddress.parse("ssh://pi@raspberrypi.local") == DeviceAddress("pi", "raspberrypi.local", 22)
    assert DeviceAddress.parse("ssh://root@[fe80::1]:2222") == DeviceAddress("root", "fe80::1", 2222)
    assert str(DeviceAddress("a", "::1", 22)) == "ssh://a@[::1]:22"
    for bad in ("pi@host", "ssh://host", "ssh://pi@host:0", "ssh://pi@host:99999", "ssh://p i@host", "ssh://pi@-x"):
        with pytest.raises(ValueError, match="ssh://user@host"):
            DeviceAddress.parse(bad)


def test_devices_toml(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(
        '[[device]]\nname = "jetson"\naddress = "ssh://nv@10.0.0.5:2200"\nkey = "keys/jetson"\n'
        'python = "~/venv/bin/python"\ntags = ["arm64", "orin"]\n\n[[device]]\nname = "pi"\naddress = "ssh://pi@pi"\n'
    )
    jetson, pi = load_devices(path)
    assert jetson.address == DeviceAddress("nv", "10.0.0.5", 2200) and jetson.key == tmp_path / "keys" / "jetson"
    assert jetson.python == "~/venv/bin/python" and jetson.tags == ("arm64", "orin")
    assert pi.key is None and pi.python == "python3" and pi.tags == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[device]]\nname = "a"\naddress = "ssh://u@h"\nport = 22\n', "device.0.port: Extra inputs"),
        ('[[device]]\nname = "a"\n', "device.0.address: Field required"),
        ('[[device]]\nname = "a"\naddress = "u@h"\n', "device a: device address 'u@h' is not of the form"),
        ('[[device]]\nname = "a"\naddress = "ssh://u@h"\ntags = "x"\n', "device.0.tags"),
        ('[[device]]\nname = "a b"\naddress = "ssh://u@h"\n', "device.0.name"),
        ('[[device]]\nname = "a"\naddress = "ssh://u@h"\n[[device]]\nname = "a"\naddress = "ssh://u@g"\n', "unique"),
        ("device = [", "not valid TOML"),
        ("", "device: Field required"),
    ],
)
def test_devices_toml_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_devices(path)


def test_options_of_remote_runs(tiny_bundle: Callable[..., Path], tmp_path: Path, capsys) -> None:
    bundle = str(tiny_bundle())
    assert main(["bench", bundle, "--key", "k"]) == 2
    assert "--key only apply to remote runs" in capsys.readouterr().err
    assert main(["bench", bundle, "--device", "ssh://u@h", "--duration", "5"]) == 2
    assert "--scenario and --duration run on this machine only for now" in capsys.readouterr().err
    devices = tmp_path / "devices.toml"
    devices.write_text('[[device]]\nname = "a"\naddress = "ssh://u@h"\n')
    assert main(["bench", bundle, "--devices", str(devices), "--python", "python3.12"]) == 2
    assert "set key and python per device in devices.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", bundle, "--device", "ssh://u@h", "--devices", str(devices)])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", bundle, "--device", "u@h"])
    assert "is not of the form ssh://user@host[:port]" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [devices]


def test_remote_benchmarks_import_no_torch() -> None:
    script = "import sys, edgeseg.remote.command; assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_predict_on_device_writes_what_a_local_predict_writes(
    loopback: Loopback, tiny_bundle: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_bundle()
    images = _labelled_set(tmp_path / "data", ["a", "b", "c"]) / "images"
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    assert main(["predict", str(bundle), str(images), "--out", str(tmp_path / "local")]) == 0
    report_path = tmp_path / "predict.json"
    options = [*loopback.options(), "--json", str(report_path)]
    assert main(["predict", str(bundle), str(images), "--out", str(tmp_path / "remote"), *options]) == 0
    local = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
    assert sorted(local) == ["a.png", "b.png", "c.png"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "remote").iterdir()} == local  # nothing else, no stage
    report = json.loads(report_path.read_text())
    assert report["frames"] == 3 and report["device"]["address"] == loopback.address()
    assert "3 label PNGs in" in capsys.readouterr().out
    assert list((loopback.home / ".cache" / "edgeseg" / "runs").iterdir()) == []  # the scratch folder is gone

    single = tmp_path / "single.png"
    assert main(["predict", str(bundle), str(images / "b.png"), "--out", str(single), *loopback.options()]) == 0
    assert single.read_bytes() == local["b.png"]
    assert main(["predict", str(bundle), str(images / "zz.png"), "--out", str(tmp_path / "x.png"), *loopback.options()])
    assert "zz.png does not exist" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
