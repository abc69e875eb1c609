"""The optional C batch accelerator, wgpy._batch (the rest of the build is pyproject.toml).

Optional: without a compiler, Python headers or OpenSSL's libcrypto headers, the package still
builds and installs, says so in one line, and wgpy uses its pure-Python twin (wgpy.batch).
``WGPY_CFLAGS`` adds compiler flags (CI: ``-Wall -Wextra -Werror``; the sanitizer build).
"""

from __future__ import annotations

import os
import sys
from glob import glob
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed build of wgpy._batch into one line on stderr.

    ``WGPY_REQUIRE_EXTENSION=1`` makes the failure fatal instead (CI's warning build)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler at all: distutils' own errors
            self._fall_back(error)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            self._fall_back(error)

    def _fall_back(self, error: Exception) -> None:
        if os.environ.get("WGPY_REQUIRE_EXTENSION") == "1":
            raise error
        print(
            f"wgpy: C batch accelerator not built ({type(error).__name__}, see above);"
            " the pure-Python path will be used",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "wgpy._batch",
            sources=sorted(glob("wgpy/_batch*.c")),
            depends=["wgpy/_batch.h"],
            libraries=["crypto"],
            extra_compile_args=os.environ.get("WGPY_CFLAGS", "").split(),
            extra_link_args=os.environ.get("WGPY_LDFLAGS", "").split(),
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
