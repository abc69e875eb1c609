"""What the device does when a timer fires: retransmit a handshake, send a keepalive, start a
new handshake, zero the keys.
"""

from __future__ import annotations

from wgpy.device.state import (
    NEW_HANDSHAKE,
    PERSISTENT,
    RETRANSMIT,
    SEND_KEEPALIVE,
    ZERO_KEYS,
    DeviceState,
)
from wgpy.events import (
    DropReason,
    HandshakeGaveUp,
    KeysZeroed,
)
from wgpy.peer import Peer
from wgpy.timers import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    ZERO_KEYS_AFTER,
)


class TimerEvents(DeviceState):
    """Timers firing."""

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        for peer, timer in self.timers.pop_due(now):
            if self.peers.get(peer.public_key) is not peer or not self.is_up:
                continue
            if timer == RETRANSMIT:
                self._retransmit_expired(peer, now)
            elif timer == SEND_KEEPALIVE:
                self._send_keepalive(peer, now)
                if peer.need_another_keepalive:
                    peer.need_another_keepalive = False
                    self.timers.arm(peer, SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
            elif timer == NEW_HANDSHAKE:
                self._send_initiation(peer, now, is_retry=False)
            elif timer == ZERO_KEYS:
                self._clear_keypairs(peer)
                self._clear_handshake(peer)
                self._emit(KeysZeroed(peer.public_key))
            elif timer == PERSISTENT and peer.persistent_keepalive:
                self._send_keepalive(peer, now)

    def _retransmit_expired(self, peer: Peer, now: float) -> None:
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            self._emit(HandshakeGaveUp(peer.public_key, peer.handshake_attempts + 2))
            self.timers.cancel(peer, SEND_KEEPALIVE)
            reason = (
                DropReason.NO_ENDPOINT if peer.endpoint is None else DropReason.HANDSHAKE_TIMEOUT
            )
            self._purge_staged(peer, reason)
            if not self.timers.pending(peer, ZERO_KEYS):
                self.timers.arm(peer, ZERO_KEYS, now + ZERO_KEYS_AFTER)
            return
        peer.handshake_attempts += 1
        self._send_initiation(peer, now, is_retry=True)
