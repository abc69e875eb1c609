"""Hooks for every test: record whether the call phase failed (tests/outcome.py), so that the
netns and kernel fixtures print daemon logs and guest state only for failed tests."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.outcome import CALL_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
