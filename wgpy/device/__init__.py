"""The sans-I/O WireGuard device: peers, cryptokey routing, handshakes, transport and timers.

Inputs: :meth:`Device.receive_datagram` (from the UDP socket), :meth:`Device.send_packet` (from
the TUN), :meth:`Device.handle_timer` (when :meth:`Device.get_timer` says so), and the batched
:meth:`Device.receive_datagrams` and :meth:`Device.send_packets` (same outcome, less Python per
packet). Each takes ``now``, a monotonic time in seconds. Outputs are drained by the adapter:
:meth:`Device.datagrams_to_send`, :meth:`Device.packets_to_deliver` and :meth:`Device.events`.
Nothing here touches a socket, a file or the clock; randomness comes from ``random``.

One class, written in parts, one file each, the way the kernel splits ``send.c``,
``receive.c``, ``noise.c`` and ``timers.c``:

* ``state`` — the fields, the output queues, drop accounting;
* ``configure`` — keys, peers, endpoints, keepalives, up/down;
* ``send`` — a packet from the TUN to a datagram;
* ``receive`` — a datagram to a packet for the TUN;
* ``handshake`` — the handshake messages both ways, cookies under load;
* ``timer_events`` — what each timer does when it fires.
"""

from __future__ import annotations

from wgpy.device.configure import Configuration
from wgpy.device.handshake import UNDER_LOAD_HANDSHAKES_PER_SECOND, Handshakes
from wgpy.device.receive import Receiving
from wgpy.device.send import Sending
from wgpy.device.state import DEFAULT_MTU, ICMP_BURST, ICMP_PER_SECOND, PacketTap
from wgpy.device.timer_events import TimerEvents


class Device(Configuration, Sending, Receiving, Handshakes, TimerEvents):
    """One WireGuard interface without its I/O."""


__all__ = [
    "DEFAULT_MTU",
    "ICMP_BURST",
    "ICMP_PER_SECOND",
    "UNDER_LOAD_HANDSHAKES_PER_SECOND",
    "Device",
    "PacketTap",
]
