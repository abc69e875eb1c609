"""Every cryptographic primitive WireGuard uses, in one place (behaviour spec §0.1, §3.1).

Sans-I/O: no clocks and no sockets here.  Time comes in as an argument (:func:`tai64n`) and
randomness through an injectable callable (:func:`generate_private_key`).

Backends: BLAKE2s from :mod:`hashlib`; X25519 and ChaCha20-Poly1305 from ``cryptography``.
XChaCha20-Poly1305 is not offered by ``cryptography``; its HChaCha20 subkey derivation is built
here from ``cryptography``'s raw ChaCha20 stream cipher (see :func:`hchacha20`).

Hot path: the per-packet transport AEAD should not go through :func:`aead_encrypt` /
:func:`aead_decrypt` (they build a cipher object per call).  Build one cipher per keypair with
:func:`aead_cipher` and call it directly::

    cipher = aead_cipher(key)
    sealed = cipher.encrypt(nonce(counter), padded_plaintext, None)
    try:
        opened = cipher.decrypt(nonce(counter), sealed, None)
    except InvalidTag:
        ...  # authentication failure (InvalidTag is re-exported from this module)
"""

from __future__ import annotations

import functools
import hashlib
import hmac as _hmac
import math
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "CONSTRUCTION",
    "HASH_LEN",
    "IDENTIFIER",
    "INITIAL_CHAIN_KEY",
    "INITIAL_HASH",
    "KEY_LEN",
    "LABEL_COOKIE",
    "LABEL_MAC1",
    "MAC_LEN",
    "TAG_LEN",
    "TAI64N_LEN",
    "ChaCha20Poly1305",
    "InvalidTag",
    "aead_cipher",
    "aead_decrypt",
    "aead_encrypt",
    "clamp",
    "dh",
    "generate_private_key",
    "hash_",
    "hchacha20",
    "hmac",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "nonce",
    "public_key",
    "tai64n",
    "xaead_decrypt",
    "xaead_encrypt",
]

KEY_LEN = 32
HASH_LEN = 32
MAC_LEN = 16
TAG_LEN = 16
TAI64N_LEN = 12

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

_blake2s = hashlib.blake2s
_hmac_digest = _hmac.digest
_ZERO_KEY = bytes(KEY_LEN)


# --- BLAKE2s: HASH, MAC, HMAC, KDF ------------------------------------------------------------


def hash_(*parts: bytes) -> bytes:
    """HASH(x): unkeyed BLAKE2s-256 of the concatenation of ``parts``."""
    return _blake2s(b"".join(parts)).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(k, x): BLAKE2s in keyed mode with a 16-byte digest (not a truncated 32-byte hash)."""
    return _blake2s(data, digest_size=MAC_LEN, key=key).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC(k, x): RFC 2104 HMAC over BLAKE2s-256 (block size 64)."""
    return _hmac_digest(key, data, _blake2s)


def kdf1(ck: bytes, data: bytes) -> bytes:
    """KDF1(ck, input): the first HKDF output (T1)."""
    return _hmac_digest(_hmac_digest(ck, data, _blake2s), b"\x01", _blake2s)


def kdf2(ck: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2(ck, input): (T1, T2)."""
    prk = _hmac_digest(ck, data, _blake2s)
    t1 = _hmac_digest(prk, b"\x01", _blake2s)
    t2 = _hmac_digest(prk, t1 + b"\x02", _blake2s)
    return t1, t2


def kdf3(ck: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3(ck, input): (T1, T2, T3)."""
    prk = _hmac_digest(ck, data, _blake2s)
    t1 = _hmac_digest(prk, b"\x01", _blake2s)
    t2 = _hmac_digest(prk, t1 + b"\x02", _blake2s)
    t3 = _hmac_digest(prk, t2 + b"\x03", _blake2s)
    return t1, t2, t3


INITIAL_CHAIN_KEY: bytes = hash_(CONSTRUCTION)
INITIAL_HASH: bytes = hash_(INITIAL_CHAIN_KEY, IDENTIFIER)


# --- ChaCha20-Poly1305 ------------------------------------------------------------------------

# 4 zero bytes followed by the little-endian 64-bit counter.
_pack_nonce = struct.Struct("<4xQ").pack


def nonce(counter: int) -> bytes:
    """The 12-byte AEAD nonce for a 64-bit message counter: 4 zero bytes || LE64(counter)."""
    return _pack_nonce(counter)


def aead_cipher(key: bytes) -> ChaCha20Poly1305:
    """A reusable ChaCha20-Poly1305 cipher for ``key`` (build one per keypair direction)."""
    return ChaCha20Poly1305(key)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD(k, n, p, ad): ChaCha20-Poly1305; returns ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(_pack_nonce(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes | None:
    """Open an AEAD(k, n, p, ad) box; ``None`` if authentication fails or the input is malformed."""
    try:
        return ChaCha20Poly1305(key).decrypt(_pack_nonce(counter), ciphertext, ad)
    except (InvalidTag, ValueError, OverflowError, struct.error):
        return None


# --- HChaCha20 and XChaCha20-Poly1305 ---------------------------------------------------------

_unpack16 = struct.Struct("<16I").unpack
_unpack4 = struct.Struct("<4I").unpack
_pack8 = struct.Struct("<8I").pack
_SIGMA = _unpack4(b"expand 32-byte k")
_ZERO_BLOCK = bytes(64)
_M32 = 0xFFFFFFFF


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, nonce16) -> 32-byte subkey (draft-irtf-cfrg-xchacha §2.2).

    ``cryptography``'s ChaCha20 takes a 16-byte "nonce" that is placed verbatim in state words
    12..15, exactly where HChaCha20 puts its 16-byte input.  One keystream block is
    ``rounds(state) + state`` word by word; subtracting the known input words (the constants in
    words 0..3 and the nonce in words 12..15, mod 2**32) recovers ``rounds(state)`` there, and
    HChaCha20's output is those eight words.  (The key words 4..11 are not needed.)
    """
    if len(key) != KEY_LEN or len(nonce16) != 16:
        raise ValueError("hchacha20 needs a 32-byte key and a 16-byte nonce")
    encryptor = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    w = _unpack16(encryptor.update(_ZERO_BLOCK))
    n = _unpack4(nonce16)
    s = _SIGMA
    return _pack8(
        (w[0] - s[0]) & _M32,
        (w[1] - s[1]) & _M32,
        (w[2] - s[2]) & _M32,
        (w[3] - s[3]) & _M32,
        (w[12] - n[0]) & _M32,
        (w[13] - n[1]) & _M32,
        (w[14] - n[2]) & _M32,
        (w[15] - n[3]) & _M32,
    )


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XAEAD(k, n24, p, ad): XChaCha20-Poly1305; returns ciphertext || 16-byte tag."""
    if len(nonce24) != 24:
        raise ValueError("xaead needs a 24-byte nonce")
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\x00\x00\x00\x00" + nonce24[16:], plaintext, ad)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    """Open an XAEAD box; ``None`` if authentication fails or the input is malformed."""
    if len(nonce24) != 24 or len(key) != KEY_LEN:
        return None
    subkey = hchacha20(key, nonce24[:16])
    try:
        return ChaCha20Poly1305(subkey).decrypt(b"\x00\x00\x00\x00" + nonce24[16:], ciphertext, ad)
    except (InvalidTag, ValueError):
        return None


# --- X25519 -----------------------------------------------------------------------------------


def clamp(private: bytes) -> bytes:
    """Curve25519 scalar clamping: byte0 &= 248, byte31 &= 127, byte31 |= 64."""
    if len(private) != KEY_LEN:
        raise ValueError("private key must be 32 bytes")
    b = bytearray(private)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key(random: Callable[[int], bytes] = os.urandom) -> bytes:
    """DH_GENERATE(): 32 bytes from ``random``, clamped."""
    return clamp(random(KEY_LEN))


@functools.lru_cache(maxsize=16)
def _private_key_object(private: bytes) -> X25519PrivateKey:
    """Loading a scalar costs as much as a DH here (it derives the public point); the static key
    and each fresh ephemeral are used several times in a row, so keep the last few loaded. The
    cache is small so that ephemeral scalars do not outlive their handshake by much."""
    return X25519PrivateKey.from_private_bytes(private)


def public_key(private: bytes) -> bytes:
    """The X25519 public key for ``private`` (X25519 clamps the scalar itself)."""
    return _private_key_object(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes | None:
    """DH(priv, pub): X25519.  ``None`` when the result is all zeros (a small-order public key)
    or a key is not 32 bytes; this must be treated as a hard failure by the caller."""
    try:
        shared = _private_key_object(private).exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # cryptography raises on an all-zero result and on bad key lengths
        return None
    if _hmac.compare_digest(shared, _ZERO_KEY):  # belt and braces; constant time
        return None
    return shared


# --- TAI64N -----------------------------------------------------------------------------------

_TAI64_BASE = 0x400000000000000A
_pack_tai64n = struct.Struct(">QI").pack
# The kernel rounds nanoseconds down to a multiple of 2**24 (the largest power of two not above
# 1e9 / INITIATIONS_PER_SECOND); wireguard-go clears the low 24 bits.  Same result.
_NS_MASK = ~((1 << 24) - 1)


def tai64n(unix_time: float) -> bytes:
    """TAI64N timestamp (12 bytes) for a Unix time in seconds.

    BE64(0x400000000000000a + whole seconds) || BE32(nanoseconds rounded down to a multiple of
    2**24).  Monotonic in ``unix_time`` (non-decreasing; equal within one 16.8 ms step).
    """
    seconds = math.floor(unix_time)
    nanoseconds = min(int((unix_time - seconds) * 1e9), 999_999_999) & _NS_MASK
    return _pack_tai64n(_TAI64_BASE + seconds, nanoseconds)
