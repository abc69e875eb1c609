"""wgpy.replay against the kernel's counter self-test (src/selftest/counter.c, spec §12.3)."""

from __future__ import annotations

import pytest

from tests.unit.test_counter_limit import KERNEL_SELFTEST
from wgpy.replay import REJECT_AFTER_MESSAGES, WINDOW_SIZE, ReplayWindow

W = WINDOW_SIZE
L = W + 1  # the kernel's T_LIM
R = REJECT_AFTER_MESSAGES


def test_constants() -> None:
    assert WINDOW_SIZE == 8128  # 8192 bits - one 64-bit word
    assert REJECT_AFTER_MESSAGES == 2**64 - 8130  # the kernel's, not wireguard-go's 2**64 - 8193


# selftest/counter.c, all 34 cases, written out with the kernel's own limit (the cases past
# the window's top are where a wrong limit fails)
KERNEL_SEQUENCE = KERNEL_SELFTEST


def test_kernel_selftest_sequence() -> None:
    window = ReplayWindow()
    results = [(n, window.accept(n)) for n, _ in KERNEL_SEQUENCE]
    assert results == KERNEL_SEQUENCE


def _all_accepted(window: ReplayWindow, counters: range) -> bool:
    return all(window.accept(i) for i in counters)


def test_bulk_a_ascending_then_zero() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(1, W + 1))
    assert w.accept(0) is True
    assert w.accept(0) is False


def test_bulk_b_ascending_from_two_then_one_then_zero() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(2, W + 2))
    assert w.accept(1) is True
    assert w.accept(0) is False


@pytest.mark.parametrize("shift", [0, 1], ids=["kernel", "go"])
def test_bulk_c_descending(shift: int) -> None:
    # kernel: W down to 0; the go port: W+1 down to 1
    w = ReplayWindow()
    assert _all_accepted(w, range(W + shift, shift - 1, -1))


@pytest.mark.parametrize("shift", [0, 1], ids=["kernel", "go"])
def test_bulk_d_descending_then_too_old(shift: int) -> None:
    # kernel: W+1 down to 1 then 0 rejected; the go port: W+2 down to 2 then 0 rejected
    w = ReplayWindow()
    assert _all_accepted(w, range(W + 1 + shift, shift, -1))
    assert w.accept(0) is False


def test_bulk_e_descending_then_top_then_zero() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(W, 0, -1))
    assert w.accept(W + 1) is True
    assert w.accept(0) is False


def test_bulk_f_descending_then_zero_then_top() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(W, 0, -1))
    assert w.accept(0) is True
    assert w.accept(W + 1) is True


# --- extra checks beyond the kernel self-test -------------------------------------------------


def test_every_counter_in_window_is_replay_protected() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(0, 3 * W))
    # everything still inside the window is rejected as a replay, everything below it as too old
    assert not any(w.accept(i) for i in range(0, 3 * W))


def test_window_edge() -> None:
    # After accepting n, the oldest acceptable fresh counter is n - WINDOW_SIZE.
    for n in (W + 5, 10 * W + 63, 10 * W + 64, 10 * W + 65):
        w = ReplayWindow()
        assert w.accept(n)
        assert w.accept(n - W - 1) is False
        assert w.accept(n - W) is True
        assert w.accept(n - W) is False


def test_bits_are_cleared_when_the_window_slides() -> None:
    # Counters that share a ring slot (mod 8192) with old ones must be accepted once.
    w = ReplayWindow()
    assert _all_accepted(w, range(0, 200))
    assert _all_accepted(w, range(8192, 8192 + 200))
    assert _all_accepted(w, range(2 * 8192 + 100, 2 * 8192 + 300))
    assert not any(w.accept(i) for i in range(2 * 8192 + 100, 2 * 8192 + 300))


def test_clearing_wraps_around_the_ring() -> None:
    # Ring words are m >> 6 mod 128.  Leave bits in ring words 126, 127 and 0, then make top
    # jump from word 253 (ring 125) to word 257 (ring 1): words 126, 127, 0, 1 must be cleared,
    # which wraps around the end of the ring.
    w = ReplayWindow()
    assert w.accept(8100)  # m = 8101: ring word 126
    assert w.accept(8150)  # m = 8151: ring word 127
    assert w.accept(16195)  # m = 16196: word 253; clears ring words 0..125 only
    assert w.accept(8100) is False  # still inside the window and its bit was kept
    assert w.accept(8199)  # m = 8200: ring word 0, still inside the window
    assert w.accept(16450)  # m = 16451: word 257
    assert w.accept(8100 + 8192) is True  # same ring bit as 8100: cleared (ring word 126)
    assert w.accept(8150 + 8192) is True  # same ring bit as 8150: cleared (ring word 127)
    assert w.accept(8199 + 8192) is True  # same ring bit as 8199: cleared (ring word 0)
    assert w.accept(16195) is False  # ring word 125 was not cleared
    assert w.accept(8199 + 8192) is False


def test_large_jump_clears_everything() -> None:
    w = ReplayWindow()
    assert _all_accepted(w, range(0, 1000))
    assert w.accept(10**12)
    assert w.accept(10**12 - W) is True
    assert w.accept(10**12 - 1) is True
    assert w.accept(10**12 - W - 1) is False


def test_negative_and_out_of_range_counters_rejected() -> None:
    w = ReplayWindow()
    assert w.accept(-1) is False
    assert w.accept(R) is False
    assert w.accept(2**64 - 1) is False
    assert w.accept(2**64) is False
    assert w.top == 0
    assert w.accept(0) is True


def test_top_and_reset() -> None:
    w = ReplayWindow()
    assert w.top == 0
    w.accept(41)
    assert w.top == 42
    w.accept(5)
    assert w.top == 42
    w.reset()
    assert w.top == 0
    assert w.accept(41) is True
