"""Hooks for every test: record whether the call phase failed (tests/outcome.py), so that the
netns and kernel fixtures print daemon logs and guest state only for failed tests; and
Hypothesis without its per-example deadline (a timing, which a loaded CI machine breaks; speed
lives in bench/)."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from hypothesis import settings

from tests.outcome import CALL_FAILED

settings.register_profile("wgpy", deadline=None)
settings.load_profile("wgpy")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
