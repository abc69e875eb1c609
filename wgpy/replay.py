"""The transport-data replay window (behaviour spec §5.3; RFC 6479 style, kernel semantics).

A ring of 8192 bits, handled in 64-bit "words" exactly like the kernel on a 64-bit machine
(``COUNTER_BITS_TOTAL = 8192``, ``BITS_PER_LONG = 64``), so the usable window is
8192 - 64 = 8128 counters.  ``top`` is the highest accepted counter plus one.  A counter ``n``
maps to ``m = n + 1``; it is rejected when ``m + WINDOW_SIZE < top``; when ``m > top`` the words
strictly after top's word up to m's word are cleared (at most all of them) and ``top = m``; then
bit ``m mod 8192`` is tested and set.

The bitmap is stored as a 1024-byte ``bytearray`` (8 bytes per 64-bit word) so a test-and-set
works on a small int and word clearing is a slice assignment.  Call :meth:`ReplayWindow.accept`
only after the packet has authenticated (§5.3), or an attacker could advance the window.
"""

from __future__ import annotations

__all__ = ["REJECT_AFTER_MESSAGES", "WINDOW_SIZE", "ReplayWindow"]

_BITS_TOTAL = 8192
_WORD_BITS = 64
_WORDS = _BITS_TOTAL // _WORD_BITS  # 128
_WORD_SHIFT = 6  # log2(_WORD_BITS)
_WORD_BYTES = _WORD_BITS // 8  # 8
_BYTES = _BITS_TOTAL // 8  # 1024

WINDOW_SIZE = _BITS_TOTAL - _WORD_BITS  # 8128

# The kernel's REJECT_AFTER_MESSAGES: U64_MAX - COUNTER_WINDOW_SIZE - 1 = 2**64 - 8130.
# wireguard-go's RejectAfterMessages (2**64 - 2**13 - 1) is 63 lower; the kernel is the judge
# (its counter self-test accepts R - 1, R - 2 and R - 3, which go's limit refuses).  No counter
# at or above it is sent or accepted, and a keypair whose window has reached it (``top`` ==
# REJECT_AFTER_MESSAGES) receives nothing more: see :attr:`ReplayWindow.exhausted`.
REJECT_AFTER_MESSAGES = 2**64 - 1 - WINDOW_SIZE - 1

_ZEROS = memoryview(bytes(_BYTES))


class ReplayWindow:
    """Sliding anti-replay window for one keypair's receive direction."""

    __slots__ = ("_bits", "_top")

    def __init__(self) -> None:
        self._bits = bytearray(_BYTES)
        self._top = 0  # highest accepted counter + 1; 0 while nothing was accepted

    @property
    def top(self) -> int:
        """Highest accepted counter plus one (0 when fresh).

        The kernel also refuses to decrypt on a keypair whose ``top`` has reached
        :data:`REJECT_AFTER_MESSAGES` (§5.3, :attr:`exhausted`); ``top`` never exceeds it.
        """
        return self._top

    @property
    def exhausted(self) -> bool:
        """Whether the window has reached :data:`REJECT_AFTER_MESSAGES`: the kernel then
        refuses to decrypt anything more on the keypair (``decrypt_packet``), although
        :meth:`accept` alone would still take an unseen counter inside the window."""
        return self._top >= REJECT_AFTER_MESSAGES

    def reset(self) -> None:
        """Forget everything (a fresh window)."""
        self._bits[:] = _ZEROS
        self._top = 0

    def accept(self, counter: int) -> bool:
        """Test-and-set ``counter``: True the first time a counter inside the window is seen.

        False for a replay, for a counter older than the window, and for any counter
        ``>= REJECT_AFTER_MESSAGES`` (or negative).
        """
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            return False
        m = counter + 1
        top = self._top
        if m + WINDOW_SIZE < top:
            return False
        if m > top:
            current_word = top >> _WORD_SHIFT
            new_word = m >> _WORD_SHIFT
            if new_word != current_word:
                self._clear_words(current_word, new_word - current_word)
            self._top = m
        bits = self._bits
        index = (m >> 3) & (_BYTES - 1)
        byte = bits[index]
        mask = 1 << (m & 7)
        if byte & mask:
            return False
        bits[index] = byte | mask
        return True

    def _clear_words(self, current_word: int, count: int) -> None:
        """Zero the ``count`` words following ``current_word`` in the ring (all when >= 128)."""
        bits = self._bits
        if count >= _WORDS:
            bits[:] = _ZEROS
            return
        start = (current_word + 1) & (_WORDS - 1)
        end = start + count
        if end <= _WORDS:
            bits[start * _WORD_BYTES : end * _WORD_BYTES] = _ZEROS[: count * _WORD_BYTES]
        else:
            head = (_WORDS - start) * _WORD_BYTES
            bits[start * _WORD_BYTES :] = _ZEROS[:head]
            tail = (end - _WORDS) * _WORD_BYTES
            bits[:tail] = _ZEROS[:tail]
