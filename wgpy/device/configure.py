"""Configuration of a device, as UAPI ``set`` applies it: keys, peers, endpoints, keepalives,
and the link going up and down.
"""

from __future__ import annotations

from wgpy import crypto
from wgpy.device.state import (
    PERSISTENT,
    DeviceState,
)
from wgpy.events import (
    DropReason,
)
from wgpy.peer import NO_PRESHARED_KEY, Endpoint, Peer
from wgpy.timers import (
    Timer,
)


class Configuration(DeviceState):
    """The configuration calls."""

    def set_private_key(self, private_key: bytes | None, now: float) -> None:
        """Set (clamped) or remove the interface key; as in wireguard-go, a peer holding the
        new public key is removed and every session is expired."""
        if private_key is not None and private_key == bytes(32):
            private_key = None
        if private_key is not None:
            private_key = crypto.clamp(private_key)
        if private_key == self.private_key:
            return
        # as the kernel (since 6.2): what waited for a first key (a persistent keepalive
        # queued when the interface came up, data) goes out once there is one
        first_key = self.private_key is None and private_key is not None and self.is_up
        self.private_key = private_key
        self.public_key = None if private_key is None else crypto.public_key(private_key)
        self.cookie_checker.set_public_key(self.public_key)
        if self.public_key is not None and self.public_key in self.peers:
            self.remove_peer(self.peers[self.public_key], now)
        for peer in list(self.peers.values()):
            peer.compute_static_static(private_key)
            self._expire_sessions(peer)
            if first_key and peer.staged:
                self._send_staged(peer, now)

    def _expire_sessions(self, peer: Peer) -> None:
        self._clear_handshake(peer)
        for keypair in (peer.current, peer.next):
            if keypair is not None:
                keypair.can_send = False
        peer.last_sent_handshake = float("-inf")

    def add_peer(self, public_key: bytes) -> Peer | None:
        """Create a peer (or return the existing one). None for our own public key."""
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        if public_key == self.public_key:
            return None
        peer = self.peers.get(public_key)
        if peer is None:
            peer = Peer(public_key)
            peer.compute_static_static(self.private_key)
            self.peers[public_key] = peer
        return peer

    def remove_peer(self, peer: Peer, now: float) -> None:
        if self.peers.get(peer.public_key) is not peer:
            return
        del self.peers[peer.public_key]
        self.allowed_ips.remove_by_peer(peer)
        self._purge_staged(peer, DropReason.INTERFACE_DOWN, detail="peer removed")
        self._clear_keypairs(peer)
        self._clear_handshake(peer)
        for timer in Timer:
            self.timers.cancel(peer, timer)

    def remove_all_peers(self, now: float) -> None:
        for peer in list(self.peers.values()):
            self.remove_peer(peer, now)

    def set_preshared_key(self, peer: Peer, key: bytes | None) -> None:
        peer.preshared_key = NO_PRESHARED_KEY if key is None else key

    def set_endpoint(self, peer: Peer, endpoint: Endpoint | None) -> None:
        peer.endpoint = endpoint

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float) -> None:
        """Set the interval; enabling it while up sends a keepalive at once (as wg-go does)."""
        was = peer.persistent_keepalive
        peer.persistent_keepalive = interval
        if interval == 0:
            self.timers.cancel(peer, PERSISTENT)
        elif was == 0 and self.is_up:
            self._send_keepalive(peer, now)

    def peer_configured(self, peer: Peer, now: float) -> None:
        """End of a configuration section for ``peer``: flush what waits, as wg-go does."""
        if self.is_up and peer.staged:
            self._send_staged(peer, now)

    def up(self, now: float) -> None:
        if self.is_up:
            return
        self.is_up = True
        for peer in self.peers.values():
            if peer.persistent_keepalive:
                self._send_keepalive(peer, now)
            elif peer.staged:
                self._send_staged(peer, now)

    def down(self, now: float) -> None:
        if not self.is_up:
            return
        self.is_up = False
        for peer in self.peers.values():
            self._purge_staged(peer, DropReason.INTERFACE_DOWN)
            self._clear_keypairs(peer)
            self._clear_handshake(peer)
            peer.last_sent_handshake = float("-inf")
            peer.handshake_attempts = 0
        self.timers.clear()
        self._under_load_until = float("-inf")
