"""Packaging: the wheel built from this tree, installed alone into a fresh venv, is a working
wgpy — `wgpy --version`, `wgpyd --version`, `import wgpy` and every module of the package —
with every subpackage and every data file of wgpy/ inside it.

Marked `packaging` (``pytest -m packaging``). Needs pip's build backend (setuptools, from the
package index pip is configured with, as ``pip wheel`` does for users); the fresh venv gets no
dependencies from the network: it sees this venv's site-packages through a ``.pth`` line, which
adds them as a plain path (their own ``.pth`` files, such as the editable install of the tree,
are not run), so `wgpy` can only come from the wheel. About 5 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import wgpy

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "wgpy"


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    )
    return result


#: in the tree but not shipped as they are: the C source is compiled into the wheel's own
#: extension, and the editable install's built extension is this machine's build artefact
_NOT_SHIPPED = (".pyc", ".so", ".c")


def _package_files() -> set[str]:
    """Every file of the wgpy package in the tree, as a path in the wheel (no caches, no
    build artefacts, no C source)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in _NOT_SHIPPED
    }


def test_wheel_installs_alone_and_runs(tmp_path: Path) -> None:
    # build from a copy, so the tree gets no build/ or *.egg-info
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(SOURCE, src / "wgpy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], src)
    (wheel,) = dist.glob("wgpy-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _package_files() - names
    assert not missing, f"not in {wheel.name}: {sorted(missing)}"
    for subpackage in ("wgpy/io/__init__.py", "wgpy/tools/__init__.py"):
        assert subpackage in names
    # the C batch accelerator is compiled into the wheel (CI has the compiler and libssl-dev)
    assert [n for n in names if n.startswith("wgpy/_batch.") and n.endswith(".so")], names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"wgpy = wgpy.cli:main" in entry_points and b"wgpyd = wgpy.daemon:main" in entry_points

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
          "--no-deps", "--no-index", str(wheel)], tmp_path)  # fmt: skip
    # the dependencies: this venv's site-packages as a plain path, after the fresh venv's own
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).stdout.strip())  # fmt: skip
    (site / "wgpy-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    where = _run([str(python), "-I", "-c", "import wgpy; print(wgpy.__file__)"], tmp_path).stdout
    assert Path(where.strip()).is_relative_to(venv), f"wgpy imported from {where.strip()}"
    assert not Path(where.strip()).is_relative_to(ROOT)

    version = _run([str(venv / "bin" / "wgpy"), "--version"], tmp_path).stdout
    assert wgpy.__version__ in version, version
    assert "C batch path: wgpy._batch" in version, version  # the wheel's own extension
    version = _run([str(venv / "bin" / "wgpyd"), "--version"], tmp_path).stdout
    assert version.startswith(f"wgpyd v{wgpy.__version__}"), version
    _run([str(venv / "bin" / "wgpy"), "--help"], tmp_path)
    # the distribution's version (pyproject.toml) is the library's
    metadata = "import importlib.metadata as m; print(m.version('wgpy'))"
    assert _run([str(python), "-I", "-c", metadata], tmp_path).stdout.strip() == wgpy.__version__

    # every module imports from the installed copy (nothing reaches back into the tree)
    import_all = (
        "import importlib, pkgutil, wgpy\n"
        "names = [m.name for m in pkgutil.walk_packages(wgpy.__path__, 'wgpy.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    count = int(_run([str(python), "-I", "-c", import_all], tmp_path).stdout)
    # every .py module but wgpy/__init__, and the compiled wgpy._batch
    assert count == sum(1 for n in _package_files() if n.endswith(".py")) - 1 + 1
