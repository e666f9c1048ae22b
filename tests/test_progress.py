"""Progress display and quiet third-party logs (edgeseg.progress)."""

from __future__ import annotations

import logging

import pytest

from edgeseg import progress


@pytest.fixture(autouse=True)
def default_settings():
    yield
    progress.configure()


def test_stage_lines_show_unless_quiet(capsys) -> None:
    with progress.stage("exporting"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "exporting …" and err[1].startswith("exporting: ") and err[1].endswith(" s")
    progress.configure(quiet=True)
    with progress.stage("exporting"):
        pass
    assert capsys.readouterr().err == ""


def test_bars_follow_the_terminal_unless_configured(capsys) -> None:
    assert not progress.bars_enabled()  # pytest captures stderr: not a terminal
    progress.configure(bars=True)
    with progress.bar(3, "frames", "frame") as shown:
        shown.update(3)
    assert "frames: 100%" in capsys.readouterr().err
    progress.configure(bars=True, quiet=True)
    assert not progress.bars_enabled()


def test_third_party_logs_and_stdout_are_quiet_unless_verbose(capsys, caplog) -> None:
    nncf = logging.getLogger("nncf")
    with caplog.at_level(logging.INFO, logger="nncf"):
        with progress.quiet_third_party():
            nncf.info("Statistics collection")  # NNCF's INFO lines
            print("NNCF's rich progress bar")
        assert nncf.level == logging.INFO  # restored
    assert "Statistics collection" not in caplog.text and capsys.readouterr().out == ""
    progress.configure(verbose=True)
    with caplog.at_level(logging.INFO, logger="nncf"), progress.quiet_third_party():
        nncf.info("Statistics collection")
        print("shown")
    assert "Statistics collection" in caplog.text and capsys.readouterr().out == "shown\n"


def test_without_tqdm_there_are_stage_lines_and_no_bars(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress, "tqdm", None)  # as in the runtime-only install
    progress.configure(bars=True)
    with progress.stage("exporting"), progress.bar(3, "frames") as shown:
        shown.update(2)
        assert shown.n == 2
    assert capsys.readouterr().err.splitlines()[0] == "exporting …"
