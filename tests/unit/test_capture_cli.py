"""wgpy capture on an interface without a wgpyd socket: one line naming the interface."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from wgpy.cli import main


def test_capture_names_the_missing_interface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"nosuch{secrets.token_hex(3)}"
    out = tmp_path / "out.pcapng"
    assert main(["capture", name, "-w", str(out)]) == 2  # could not read its input
    err = capsys.readouterr().err
    assert err.startswith(f"wgpy: Unable to access interface {name}: no wgpyd socket "), err
    assert f"/{name}.sock" in err and "No such file or directory" not in err
    assert err.count("\n") == 1
    assert not out.exists()  # nothing written for an interface that is not there
