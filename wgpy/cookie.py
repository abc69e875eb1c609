"""mac1/mac2 and cookie replies: WireGuard's defence against handshake floods."""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Callable
from typing import Final

from wgpy import crypto
from wgpy.messages import CookieReply

COOKIE_SECRET_MAX_AGE: Final = 120.0
COOKIE_SECRET_LATENCY: Final = 5.0
COOKIE_LEN: Final = 16
_ZERO_MAC: Final = bytes(16)


class CookieChecker:
    """Our side as receiver of handshake messages: verifies macs and issues cookie replies."""

    __slots__ = ("_cookie_key", "_mac1_key", "_secret", "_secret_birth")

    def __init__(self) -> None:
        self._mac1_key = bytes(32)
        self._cookie_key = bytes(32)
        self._secret = bytes(32)
        self._secret_birth: float | None = None

    def __repr__(self) -> str:
        return "CookieChecker(...)"

    def set_public_key(self, public: bytes | None) -> None:
        """Keys derive from our public key; with no identity every mac1 check fails."""
        if public is None:
            self._mac1_key = bytes(32)
            self._cookie_key = bytes(32)
        else:
            self._mac1_key = crypto.hash_(crypto.LABEL_MAC1, public)
            self._cookie_key = crypto.hash_(crypto.LABEL_COOKIE, public)

    def check_mac1(self, message: bytes, mac1_offset: int) -> bool:
        expected = crypto.mac(self._mac1_key, message[:mac1_offset])
        return _hmac.compare_digest(expected, message[mac1_offset : mac1_offset + 16])

    def check_mac2(self, message: bytes, mac2_offset: int, source: bytes, now: float) -> bool:
        if self._secret_birth is None or now - self._secret_birth > COOKIE_SECRET_MAX_AGE:
            return False
        cookie = crypto.mac(self._secret, source)
        expected = crypto.mac(cookie, message[:mac2_offset])
        return _hmac.compare_digest(expected, message[mac2_offset : mac2_offset + 16])

    def create_reply(
        self,
        message: bytes,
        mac1_offset: int,
        receiver_index: int,
        source: bytes,
        now: float,
        random: Callable[[int], bytes],
    ) -> bytes:
        if self._secret_birth is None or now - self._secret_birth > COOKIE_SECRET_MAX_AGE:
            self._secret = random(32)
            self._secret_birth = now
        cookie = crypto.mac(self._secret, source)
        nonce = random(24)
        mac1 = message[mac1_offset : mac1_offset + 16]
        encrypted = crypto.xaead_encrypt(self._cookie_key, nonce, cookie, mac1)
        return CookieReply(receiver_index, nonce, encrypted).pack()


class CookieGenerator:
    """Our side as sender of handshake messages to one peer: adds macs, keeps its cookie."""

    __slots__ = ("_cookie", "_cookie_key", "_cookie_time", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = crypto.hash_(crypto.LABEL_MAC1, peer_public)
        self._cookie_key = crypto.hash_(crypto.LABEL_COOKIE, peer_public)
        self._cookie: bytes | None = None
        self._cookie_time = 0.0
        self._last_mac1: bytes | None = None

    def __repr__(self) -> str:
        return "CookieGenerator(...)"

    @property
    def has_cookie(self) -> bool:
        return self._cookie is not None

    def add_macs(self, message: bytes, now: float) -> bytes:
        """Append mac1 and mac2 (zero unless we hold a cookie younger than 120 s)."""
        mac1 = crypto.mac(self._mac1_key, message)
        self._last_mac1 = mac1
        with_mac1 = message + mac1
        if self._cookie is not None and now - self._cookie_time < COOKIE_SECRET_MAX_AGE:
            return with_mac1 + crypto.mac(self._cookie, with_mac1)
        return with_mac1 + _ZERO_MAC

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Decrypt a cookie reply against the last mac1 we sent. False if it does not open."""
        if self._last_mac1 is None:
            return False
        cookie = crypto.xaead_decrypt(
            self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
        )
        if cookie is None or len(cookie) != COOKIE_LEN:
            return False
        self._cookie = cookie
        self._cookie_time = now
        return True
