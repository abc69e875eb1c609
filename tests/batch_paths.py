"""Run a test on each batch path (wgpy.batch): the C extension and its pure-Python twin.

The C path must be built for these tests (``pip install -e .`` with libssl-dev, as
scripts/setup.sh does): a missing extension fails them rather than skipping.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from wgpy import batch

PATHS = ("c", "pure")


def c_module() -> object:
    """wgpy._batch, whatever WGPY_PURE says (an ImportError here means: not built)."""
    return importlib.import_module("wgpy._batch")


def names() -> list[str]:
    """The calls wgpy.batch switches between the paths: each ``name`` with a ``pure_name``."""
    return [name[5:] for name in vars(batch) if name.startswith("pure_")]


@contextlib.contextmanager
def on_path(path: str) -> Iterator[None]:
    """wgpy.batch's calls are ``path``'s while inside."""
    module = c_module() if path == "c" else None
    chosen = {
        name: getattr(batch, f"pure_{name}") if module is None else getattr(module, name)
        for name in names()
    }
    saved = {name: getattr(batch, name) for name in chosen}
    for name, call in chosen.items():
        setattr(batch, name, call)
    try:
        yield
    finally:
        for name, call in saved.items():
            setattr(batch, name, call)
