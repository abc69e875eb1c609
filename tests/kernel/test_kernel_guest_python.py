"""The host's Python and wgpy run inside the guest: the host's root file system is shared
read-only over virtio-9p and mounted at /host, and commands run chrooted there, on the guest's
kernel. The first step towards running wgpy itself against the guest kernel's devices.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import pytest

from tests.kernel.image import REPO_ROOT
from tests.kernel.lab import KernelLab

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

VENV_PYTHON: Final = REPO_ROOT / ".venv" / "bin" / "python"


def test_import_wgpy_in_guest(kernel_lab: KernelLab) -> None:
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    script = f"{python} -c 'import platform, wgpy; print(wgpy.__file__, platform.release())'"
    result = kernel_lab.guest.run_in_host_root(script, timeout=120)
    path, release = result.stdout.split()
    assert path == str(REPO_ROOT / "wgpy" / "__init__.py")
    assert release == kernel_lab.guest.run("uname -r").stdout.strip()
    assert release != kernel_lab.ns.run("uname", "-r").stdout.strip()
