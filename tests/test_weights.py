"""Weights by name: the catalog, the resumable verified download (against a local HTTP server), --weights."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from edgeseg.classes import get_preset
from edgeseg.cli import main
from edgeseg.weights import CATALOG, DownloadError, WeightsEntry, download, find_entry, resolve_weights
from edgeseg.weights.choice import choose_export_weights
from edgeseg.weights.resolve import cached_path

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value, so a misplaced resume shows in the hash


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has its own EDGESEG_HOME: nothing is read from or written to the user's cache."""
    home = tmp_path / "edgeseg-home"
    monkeypatch.setenv("EDGESEG_HOME", str(home))
    return home


@dataclass
class Server:
    """What the test server serves and what it was asked."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path → bytes sent before closing, once
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _handler(state: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            return

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            match = re.match(r"^bytes=(\d+)-$", self.headers.get("Range") or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            cut = state.cut_after.pop(self.path, None)
            self.wfile.write(rest if cut is None else rest[:cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _entry(server: Server, body: bytes, **fields: object) -> WeightsEntry:
    """A catalog entry for afformer-tiny pointing at the test server."""
    server.files["/ckpt/model.pth"] = body
    base = WeightsEntry(
        model="afformer-tiny",
        name="ade20k",
        kind="segmentation",
        num_classes=150,
        file="model.pth",
        source="test server",
        url=f"{server.base}/ckpt/model.pth",
        classes="ade20k",
        sha256=hashlib.sha256(body).hexdigest(),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


# ---- the download ----


def test_download_once_then_the_cache_answers_without_a_request(server: Server, tmp_path: Path) -> None:
    entry = _entry(server, PAYLOAD)
    first = resolve_weights("ade20k", "afformer-tiny", catalog=(entry,), cache=tmp_path)
    second = resolve_weights("ade20k", "afformer-tiny", catalog=(entry,), cache=tmp_path)
    assert first.path == second.path == cached_path(entry, tmp_path)
    assert first.path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    assert not list(tmp_path.rglob("*.part"))


def test_an_interrupted_download_resumes_from_the_part_file(server: Server, tmp_path: Path) -> None:
    server.files["/f.bin"] = PAYLOAD
    server.cut_after["/f.bin"] = 300_000
    destination = tmp_path / "f.bin"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(DownloadError, match=r"300000 bytes are kept in .*f\.bin\.part: run the same command again"):
        download(f"{server.base}/f.bin", destination, sha256=sha, attempts=1)
    assert not destination.exists()
    assert (tmp_path / "f.bin.part").stat().st_size == 300_000

    download(f"{server.base}/f.bin", destination, sha256=sha, attempts=1)
    assert destination.read_bytes() == PAYLOAD
    assert server.requests == [("/f.bin", None), ("/f.bin", "bytes=300000-")]
    assert not (tmp_path / "f.bin.part").exists()


def test_one_call_retries_a_broken_transfer_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.files["/f.bin"] = PAYLOAD
    server.cut_after["/f.bin"] = 123_456
    path = download(f"{server.base}/f.bin", tmp_path / "f.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=123456-"]


def test_a_server_that_ignores_range_is_downloaded_from_the_start(server: Server, tmp_path: Path) -> None:
    server.files["/f.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    path = download(f"{server.base}/f.bin", tmp_path / "f.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path.read_bytes() == PAYLOAD


def test_a_wrong_hash_is_an_error_and_leaves_nothing_in_the_cache(server: Server, tmp_path: Path) -> None:
    entry = _entry(server, PAYLOAD, sha256="0" * 64)
    with pytest.raises(DownloadError, match=r"does not have the published hash .* the file was deleted"):
        resolve_weights("ade20k", "afformer-tiny", catalog=(entry,), cache=tmp_path)
    assert not cached_path(entry, tmp_path).exists()
    assert not list(tmp_path.rglob("*.part"))


def test_a_hash_prefix_from_the_file_name_is_checked(server: Server, tmp_path: Path) -> None:
    server.files["/x.pth"] = PAYLOAD
    good = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    assert download(f"{server.base}/x.pth", tmp_path / "a" / "x.pth", sha256_prefix=good).is_file()
    with pytest.raises(DownloadError, match=f"expected {'0' * 8}\\.\\.\\."):
        download(f"{server.base}/x.pth", tmp_path / "b" / "x.pth", sha256_prefix="0" * 8)
    assert not (tmp_path / "b" / "x.pth").exists()


def test_a_missing_file_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    entry = replace(_entry(server, PAYLOAD), url=f"{server.base}/moved.pth")
    with pytest.raises(DownloadError, match=r"answered HTTP 404 .* download it by hand and pass --weights PATH"):
        resolve_weights("ade20k", "afformer-tiny", catalog=(entry,), cache=tmp_path)
    assert len(server.requests) == 1  # a 404 is final: no retries
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_second_process_downloading_the_same_file_is_refused(server: Server, tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    server.files["/f.bin"] = PAYLOAD
    with (tmp_path / "f.bin.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a concurrent download holds
        with pytest.raises(DownloadError, match="another process is downloading"):
            download(f"{server.base}/f.bin", tmp_path / "f.bin")
    assert server.requests == []
    assert download(f"{server.base}/f.bin", tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download("file:///etc/passwd", tmp_path / "x")


# ---- --weights ----


@pytest.fixture(scope="module")
def afformer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A real AFFormer-tiny state dict (19 classes), as bytes and as a file."""
    import io

    import torch

    from edgeseg.models import create

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(create("afformer-tiny", num_classes=19).state_dict(), buffer)
    path = tmp_path_factory.mktemp("ckpt") / "afformer_city.pth"
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue(), path


def test_a_catalog_name_gives_the_checkpoint_its_classes_and_palette(
    server: Server, tmp_path: Path, afformer_checkpoint: tuple[bytes, Path]
) -> None:
    from edgeseg.models import create

    body, _ = afformer_checkpoint
    entry = _entry(server, body, name="cityscapes", num_classes=19, classes="cityscapes")
    chosen = choose_export_weights("afformer-tiny", weights="cityscapes", catalog=(entry,), cache=tmp_path)
    assert chosen.num_classes == 19
    assert chosen.source == f"afformer-tiny/cityscapes {entry.url}"
    assert chosen.classes is not None
    assert chosen.classes["preset"] == "cityscapes"
    assert chosen.classes["names"][:3] == ["road", "sidewalk", "building"]
    assert chosen.classes["palette"][0] == [128, 64, 128]
    create("afformer-tiny", num_classes=chosen.num_classes, checkpoint=chosen.checkpoint)  # weights-only, strict


def test_a_local_file_gives_its_class_count_from_the_head(afformer_checkpoint: tuple[bytes, Path]) -> None:
    _, path = afformer_checkpoint
    for option in ({"weights": str(path)}, {"checkpoint": str(path)}):
        chosen = choose_export_weights("afformer-tiny", **option)
        assert (chosen.checkpoint, chosen.num_classes, chosen.classes, chosen.source) == (path, 19, None, path.name)
    with_names = choose_export_weights("afformer-tiny", weights=str(path), classes="cityscapes")
    assert with_names.classes is not None and len(with_names.classes["names"]) == 19


def test_contradicting_class_counts_are_refused(afformer_checkpoint: tuple[bytes, Path], server: Server) -> None:
    _, path = afformer_checkpoint
    entry = _entry(server, PAYLOAD)
    with pytest.raises(ValueError, match="--num-classes gives 19, --weights ade20k gives 150"):
        choose_export_weights("afformer-tiny", weights="ade20k", num_classes=19, catalog=(entry,))
    with pytest.raises(ValueError, match=r"--classes ade20k gives 150, the head of afformer_city\.pth gives 19"):
        choose_export_weights("afformer-tiny", weights=str(path), classes="ade20k")
    with pytest.raises(ValueError, match="give one"):
        choose_export_weights("afformer-tiny", weights=str(path), checkpoint=str(path))
    assert server.requests == []  # nothing was downloaded for a refused combination


def test_random_weights_take_the_class_count_of_the_preset() -> None:
    chosen = choose_export_weights("afformer-tiny", classes="voc")
    assert (chosen.checkpoint, chosen.num_classes) == (None, 21)
    assert chosen.classes is not None and chosen.classes["names"][0] == "background"
    assert choose_export_weights("afformer-tiny").num_classes == 150


def _fake_hf_cache(root: Path, repo: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub writes: models--OWNER--NAME/refs/main and snapshots/<commit>/<file>."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_hf_repo_comes_from_the_local_cache_offline(tmp_path: Path) -> None:
    config = {"id2label": {"0": "wall", "1": "building", "2": "sky"}}
    _fake_hf_cache(tmp_path, "nvidia/tiny", {"model.safetensors": b"x", "config.json": json.dumps(config).encode()})
    resolved = resolve_weights("hf:nvidia/tiny", "segformer-b0", hf_cache=tmp_path)
    assert resolved.path.name == "model.safetensors"
    assert (resolved.num_classes, resolved.class_names, resolved.source) == (
        3,
        ("wall", "building", "sky"),
        "hf:nvidia/tiny",
    )
    _fake_hf_cache(tmp_path, "nvidia/segformer-b0-finetuned-ade-512-512", {"pytorch_model.bin": b"x"})
    listed = resolve_weights("hf:nvidia/segformer-b0-finetuned-ade-512-512", "segformer-b0", hf_cache=tmp_path)
    assert (listed.path.name, listed.classes, listed.num_classes) == ("pytorch_model.bin", "ade20k", 150)
    with pytest.raises(FileNotFoundError, match="never downloads from the Hub"):
        resolve_weights("hf:nvidia/absent", "segformer-b0", hf_cache=tmp_path)
    with pytest.raises(ValueError, match="expected hf:OWNER/NAME"):
        resolve_weights("hf:../../etc", "segformer-b0", hf_cache=tmp_path)


def test_entries_that_cannot_be_exported_say_why(server: Server, tmp_path: Path) -> None:
    backbone = _entry(server, PAYLOAD, kind="backbone", name="imagenet")
    with pytest.raises(ValueError, match="without a segmentation head"):
        resolve_weights("imagenet", "afformer-tiny", catalog=(backbone,), cache=tmp_path)
    by_hand = _entry(server, PAYLOAD, url=None, page="https://example.invalid/drive")
    with pytest.raises(ValueError, match=r"get model\.pth from https://example\.invalid/drive and pass --weights PATH"):
        resolve_weights("ade20k", "afformer-tiny", catalog=(by_hand,), cache=tmp_path)
    with pytest.raises(ValueError, match="no released weights called 'voc'; choose one of ade20k"):
        find_entry("afformer-tiny", "voc", (by_hand,))
    with pytest.raises(ValueError, match="no trained CGRSeg weights are released"):
        find_entry("cgrseg-t", "ade20k")
    assert server.requests == []


# ---- the catalog ----


def test_catalog_entries_are_consistent() -> None:
    from edgeseg.models import list_models

    models = set(list_models())
    for entry in CATALOG:
        assert entry.model in models, entry.key
        assert entry.source and entry.file and (entry.url or entry.page), entry.key
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.key
        if entry.sha256_prefix:
            assert entry.file.rsplit(".", 1)[0].endswith("-" + entry.sha256_prefix), entry.key
        if entry.classes:
            assert get_preset(entry.classes).num_classes == entry.num_classes, entry.key
        assert entry.kind == "backbone" or entry.classes, entry.key
    keys = [e.key for e in CATALOG]
    assert len(keys) == len(set(keys))
    b0 = find_entry("segformer-b0", "ade20k")
    assert b0.hf_repo == "nvidia/segformer-b0-finetuned-ade-512-512"
    assert b0.sha256 is None and b0.verification == "unverified: publisher gives no hash"


def test_weights_list_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list", "--model", "segformer-b0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"segformer-b0 +ade20k +segmentation +ade20k +150 +512x512 +37\.4", out)
    assert "nvidia/segformer-b0-finetuned-ade-512-512" in out and "never tested against the real hosts" in out
    assert main(["weights", "list", "--model", "afformer-tiny"]) == 0
    assert "Google Drive" in capsys.readouterr().out


def test_export_refuses_weights_and_checkpoint_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--model", "afformer-tiny", "--out", "x", "--weights", "ade20k", "--checkpoint", "a.pth"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_a_segformer_from_the_hugging_face_cache_exports_with_ade20k_classes(tmp_path: Path) -> None:
    """The README's flow, offline: NVIDIA's Hub repository in the local cache → a bundle with ADE20K's classes."""
    import os
    import subprocess
    import sys

    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from edgeseg.models import create
    from edgeseg.models.hf_segformer import nvlabs_to_hf

    torch.manual_seed(0)
    hf_state, _ = nvlabs_to_hf(create("segformer-b0", num_classes=150).state_dict())
    snapshot = tmp_path / "snapshot.safetensors"
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(snapshot))
    repo = "nvidia/segformer-b0-finetuned-ade-512-512"
    _fake_hf_cache(tmp_path / "hf", repo, {"model.safetensors": snapshot.read_bytes()})
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}

    def edgeseg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, env=env, timeout=600
        )

    bundle = tmp_path / "bundle"
    made = edgeseg(
        "export", "--model", "segformer-b0", "--weights", f"hf:{repo}", "--input-size", "64x64", "--target", "onnx",
        "--out", str(bundle),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["weights"] == "checkpoint"
    assert manifest["model"]["checkpoint"]["source"] == f"hf:{repo}"
    assert manifest["model"]["checkpoint"]["file"] == "model.safetensors"
    assert manifest["classes"]["preset"] == "ade20k" and manifest["classes"]["names"][2] == "sky"

    image, out = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    assert edgeseg("predict", str(bundle), str(image), "--out", str(out), "--color").returncode == 0
    drawn = Image.open(out)
    assert drawn.getpalette()[: 3 * 150] == [v for rgb in get_preset("ade20k").palette for v in rgb]
