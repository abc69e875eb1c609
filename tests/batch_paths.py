"""Run a test on each batch path (wgpy.batch): the C extension and its pure-Python twin.

The C path must be built for these tests (``pip install -e .`` with libssl-dev, as
scripts/setup.sh does): a missing extension fails them rather than skipping.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from wgpy import batch

PATHS = ("c", "pure")


def c_module() -> object:
    """wgpy._batch, whatever WGPY_PURE says (an ImportError here means: not built)."""
    return importlib.import_module("wgpy._batch")


@contextlib.contextmanager
def on_path(path: str) -> Iterator[None]:
    """wgpy.batch's calls are ``path``'s while inside."""
    if path == "c":
        module: Any = c_module()
        calls = module.seal_run, module.open_batch, module.seal_super
    else:
        calls = batch.pure_seal_run, batch.pure_open_batch, batch.pure_seal_super
    saved = batch.seal_run, batch.open_batch, batch.seal_super
    batch.seal_run, batch.open_batch, batch.seal_super = calls
    try:
        yield
    finally:
        batch.seal_run, batch.open_batch, batch.seal_super = saved
