"""Whether a test's call phase failed, for fixtures that print diagnostics at teardown
(recorded by the hook in tests/conftest.py)."""

from __future__ import annotations

import pytest

CALL_FAILED = pytest.StashKey[bool]()


def call_failed(request: pytest.FixtureRequest) -> bool:
    """True when the test using this fixture failed in its call phase."""
    return bool(request.node.stash.get(CALL_FAILED, False))
