"""WireGuard keys as ``wg`` prints them: 32 bytes, base64 with padding (44 characters).

The text functions are the library equivalents of ``wg genkey``, ``wg pubkey`` and
``wg genpsk``; their output is interchangeable with those commands':

```python
from wgpy.keys import genkey, genpsk, pubkey

private = genkey()  # like `wg genkey`
public = pubkey(private)  # like `wg genkey | wg pubkey`
psk = genpsk()  # like `wg genpsk`
```

`decode_key` and `encode_key` convert between that text and the raw 32 bytes that
`wgpy.device.Device` takes.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from typing import Final

from wgpy import crypto

__all__ = [
    "KEY_LEN",
    "decode_key",
    "encode_key",
    "genkey",
    "genpsk",
    "private_key_bytes",
    "pubkey",
    "public_key_bytes",
]

KEY_LEN: Final = 32
"""Every WireGuard key (private, public, preshared) is 32 bytes."""


def encode_key(key: bytes) -> str:
    """The base64 text of a 32-byte key, as ``wg`` prints it.

    Raises:
        ValueError: if ``key`` is not 32 bytes.
    """
    if len(key) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, not {len(key)}")
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str | bytes) -> bytes:
    """The 32 bytes of a base64 key; surrounding whitespace (a trailing newline) is ignored.

    Raises:
        ValueError: if ``text`` is not the base64 of exactly 32 bytes (``wg``'s "Key is not
            the correct length or format").
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    text = text.strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_LEN or len(text) != 44:
        raise ValueError("Key is not the correct length or format")
    return key


def private_key_bytes(random: Callable[[int], bytes] = os.urandom) -> bytes:
    """A new private key as 32 raw bytes, clamped as ``wg genkey`` clamps it."""
    return crypto.generate_private_key(random)


def public_key_bytes(private_key: bytes) -> bytes:
    """The 32-byte public key (X25519) of a raw private key."""
    if len(private_key) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, not {len(private_key)}")
    return crypto.public_key(private_key)


def genkey(random: Callable[[int], bytes] = os.urandom) -> str:
    """A new private key in base64, like ``wg genkey``."""
    return encode_key(private_key_bytes(random))


def pubkey(private_key: str | bytes) -> str:
    """The base64 public key of a base64 private key, like ``wg pubkey``.

    Raises:
        ValueError: if ``private_key`` is not a base64 key.
    """
    return encode_key(public_key_bytes(decode_key(private_key)))


def genpsk(random: Callable[[int], bytes] = os.urandom) -> str:
    """A new preshared key in base64, like ``wg genpsk`` (32 random bytes, not clamped)."""
    return encode_key(random(KEY_LEN))
