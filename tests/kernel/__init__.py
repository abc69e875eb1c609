"""Tests against a real kernel WireGuard: Debian's kernel booted in QEMU (see conftest.py)."""
