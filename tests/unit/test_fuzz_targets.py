"""Each fuzz target (fuzz/) runs briefly: its seed corpus, then a few seconds of mutations.

The long campaigns (10^6 inputs per target) are run by hand: ``python -m fuzz TARGET -n N``.
"""

from __future__ import annotations

import collections
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import driver, target_device
from fuzz.world import World, receive_checked

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", driver.available_targets())
def test_target_runs_briefly(name: str) -> None:
    module = importlib.import_module(driver.TARGETS[name])
    corpus = driver._load_corpus(name)
    assert corpus, f"fuzz/corpus/{name} is empty"
    # The whole corpus, however slow the machine is today; then two seconds of mutations.
    done = driver.run_random(module.test_one_input, corpus, runs=len(corpus), seconds=0, seed=8)
    assert done == len(corpus)
    assert driver.run_random(module.test_one_input, corpus, runs=-1, seconds=2.0, seed=8) > 0


@pytest.mark.skipif(not driver.have_atheris(), reason="atheris not installed (extra 'fuzz')")
@pytest.mark.parametrize("name", driver.available_targets())
def test_target_under_atheris(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", name, "-n", "3000", "-t", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 3000 runs" in proc.stderr + proc.stdout


def test_seeds_are_current() -> None:
    """The committed seed corpus is what ``python -m fuzz --write-seeds`` makes."""
    for name in driver.available_targets():
        seeds = importlib.import_module(driver.TARGETS[name]).seeds()
        folder = driver.CORPUS / name
        assert [(folder / f"seed-{i:02d}").read_bytes() for i in range(len(seeds))] == seeds


def test_device_world_reaches_deep_paths() -> None:
    """The device target's mutations get past the cheap checks: its samples, replayed and
    corrupted, produce acceptances and drops deep in the handshake and data paths."""
    module = target_device
    module._world, module._inputs = None, 0  # a fresh world, whatever ran before
    for seed in module.seeds():
        module.test_one_input(seed)
    world = module._world
    assert world is not None
    reasons = collections.Counter(reason for (_, reason) in world.a.drop_counts.elements())
    for deep in ("handshake_failed", "replayed_counter", "decryption_failed", "cookie_required"):
        assert reasons[deep] > 0, reasons


def test_fresh_world_accepts_its_own_traffic() -> None:
    world = World(seed=5)
    before = world.a.drop_counts.copy()
    datagram = world.seal(b"\x45" + bytes(3) + bytes(16))  # IP length 0: dropped, counted
    receive_checked(world.a, datagram, ("198.51.100.2", 40000), world.now)
    assert [reason for _, reason in (world.a.drop_counts - before)] == ["bad_length"]


def test_device_batch_mode_takes_the_short_path() -> None:
    """Mode 8 batches data messages: most take receive_datagrams' short path (fewer full-path
    calls than datagrams), and its flipped and replayed ones are dropped, each counted."""
    module = target_device
    module._world, module._inputs = None, 0
    module.test_one_input(b"")  # builds the world
    world = module._world
    assert world is not None
    full_path = world.a.receive_datagram
    calls: list[int] = []

    def counted(datagram: bytes, endpoint: tuple[str, int], now: float) -> None:
        calls.append(len(datagram))
        full_path(datagram, endpoint, now)

    world.a.receive_datagram = counted
    before = world.a.drop_counts.copy()
    module.test_one_input(bytes([8, 0, 4, 8, 12, 16, 2, 33, 20, 24, 2]))
    reasons = collections.Counter(reason for _, reason in (world.a.drop_counts - before).elements())
    assert reasons["replayed_counter"] == 2 and reasons["decryption_failed"] == 1, reasons
    assert 0 < len(calls) < 10, calls
