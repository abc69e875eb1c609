"""Fixtures for tests that run in real network namespaces (see harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import pytest

from tests.netns.harness import WIREGUARD_GO, Netns, require_netns
from tests.outcome import call_failed


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Generator[Callable[[], Netns]]:
    """Make namespaces (`netns_factory()`); all are closed at teardown, which stops the daemons
    and processes started in them. Fails the test loudly if netns tests cannot run here
    (WGPY_SKIP_NETNS=1 turns that into a skip). On test failure the daemons' logs are printed.
    """
    require_netns()
    made: list[Netns] = []

    def make() -> Netns:
        ns = Netns()
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        failed = call_failed(request)
        errors: list[Exception] = []
        for ns in reversed(made):
            try:
                ns.close(remove_workdir=False)
            except Exception as exc:
                errors.append(exc)
        for ns in made:
            if failed:
                for log in ns.log_files():
                    print(f"----- {ns.name}: {log.name} -----")
                    print(log.read_text(errors="replace"))
            ns.remove_workdir()
        if errors:
            raise errors[0]


@pytest.fixture
def wg_daemon_command() -> Sequence[str]:
    """The userspace WireGuard daemon under test, without the interface name.

    Defaults to wireguard-go; override this fixture (or parametrize it indirectly) to run the
    same tests against wgpyd, e.g. ``(sys.executable, "-m", "wgpy.daemon", "-f")``.
    """
    return WIREGUARD_GO
