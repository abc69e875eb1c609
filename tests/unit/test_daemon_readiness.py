"""wgpyd's readiness pipe: the background copy reports ready, or why it could not start, to the
waiting parent, which prints the reason (the background copy's stderr may be /dev/null)."""

from __future__ import annotations

import os

import pytest

from wgpy import daemon


def _child_side(monkeypatch: pytest.MonkeyPatch) -> tuple[int, daemon.Readiness]:
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv(daemon.ENV_READY_FD, str(write_fd))
    readiness = daemon.Readiness()
    assert daemon.ENV_READY_FD not in os.environ  # not passed on to anything it starts
    return read_fd, readiness


def test_ready(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    read_fd, readiness = _child_side(monkeypatch)
    readiness.ready()
    readiness.ready()  # once only; the pipe is closed after the first report
    assert daemon._wait_ready(read_fd) is True
    assert capsys.readouterr().err == ""
    os.close(read_fd)


def test_failure_is_told_to_the_parent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read_fd, readiness = _child_side(monkeypatch)
    readiness.failed("wgpyd: metrics endpoint 127.0.0.1:9586: [Errno 98] Address already in use")
    assert capsys.readouterr().err == ""  # the child says it through the pipe only
    assert daemon._wait_ready(read_fd) is False
    assert "Address already in use" in capsys.readouterr().err
    os.close(read_fd)


def test_child_gone_without_a_word(capsys: pytest.CaptureFixture[str]) -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    assert daemon._wait_ready(read_fd) is False
    assert "exited during startup" in capsys.readouterr().err
    os.close(read_fd)


def test_failure_without_a_parent_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(daemon.ENV_READY_FD, raising=False)
    daemon.Readiness().failed("wgpyd: it broke")
    assert capsys.readouterr().err == "wgpyd: it broke\n"


def test_background_argv0_is_named_wgpyd_beside_the_interpreter() -> None:
    path = daemon._background_argv0()
    assert os.path.basename(path) == "wgpyd"
    assert os.path.isabs(path)
