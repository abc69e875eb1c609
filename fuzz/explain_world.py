"""``wgpy explain`` held to the data path: one property, shared by a Hypothesis test
(tests/unit/test_explain_property.py) and a fuzz target (fuzz/target_explain.py).

A hub Device has four peers, each a Device of its own with a live session to the hub. A scenario
changes the hub's AllowedIPs the way ``wg set`` does — UAPI ``set`` lines that add prefixes
(moving them from other peers), remove single prefixes (``allowed_ip=-P``), replace a peer's
list, or remove a peer — then reads the table back with UAPI ``get``, as ``wgpy explain IF``
does on a live interface, and asks explain about addresses. Every answer is checked against
what the Device then does with a real packet:

* ``explain to DST`` names peer K  ⇔ the hub encrypts a packet to DST for K, and K decrypts it;
  names nobody                    ⇔ the hub drops it as ``no_peer``;
* ``explain from SRC via K`` says delivered ⇔ the hub delivers K's authenticated packet with
  source SRC; else the hub counts ``disallowed_source`` for K and its event names the owner
  explain names (or none).
"""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Literal

from wgpy import crypto
from wgpy.device import Device
from wgpy.events import DropReason, PacketDropped
from wgpy.peer import Endpoint, Peer
from wgpy.tools.files.explain import Source, explain_from, explain_to
from wgpy.uapi import NullHooks, handle_get, handle_set

PEERS = 4
NOW = 1000.0
HUB_ENDPOINT: Endpoint = ("192.0.2.1", 51820)
#: The clock stands still (sessions never age), so the hub would count every reconnection in
#: the same second and soon ask for cookies (under load at 128/s): start afresh before that.
HANDSHAKES_PER_WORLD = 100

OpKind = Literal["add", "remove", "replace", "remove_peer"]


@dataclass(frozen=True)
class Op:
    """One change of the hub's table, as ``wg set`` would send it."""

    kind: OpKind
    peer: int
    prefix: str = ""  # "" for remove_peer; for replace, the one prefix the peer keeps


@dataclass(frozen=True)
class Probe:
    """One question: ``to`` an address, or ``from`` an address via a peer."""

    direction: Literal["to", "from"]
    address: str
    peer: int = 0


def endpoint_of(index: int) -> Endpoint:
    return (f"198.51.100.{10 + index}", 40000 + index)


def packet(src: str, dst: str, payload: bytes = b"probe") -> bytes:
    """A minimal IPv4 or IPv6 packet (UDP, no checksum: the Device does not look)."""
    source, destination = ip_address(src), ip_address(dst)
    if isinstance(source, IPv4Address) and isinstance(destination, IPv4Address):
        return (
            struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0)
            + source.packed
            + destination.packed
            + payload
        )
    assert isinstance(source, IPv6Address) and isinstance(destination, IPv6Address)
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), 17, 64)
        + source.packed
        + destination.packed
        + payload
    )


def _other_family_address(address: str) -> str:
    """An address of the same family as ``address``, for the other end of a probe packet."""
    return "192.0.2.99" if ":" not in address else "2001:db8::99"


@dataclass
class ExplainWorld:
    seed: int = 7
    hub: Device = field(init=False)
    remotes: list[Device] = field(init=False)
    keys: list[bytes] = field(init=False)  # the remotes' public keys
    checked_to: int = 0
    checked_from: int = 0

    def __post_init__(self) -> None:
        self.build()

    def build(self) -> None:
        rng = random.Random(self.seed)
        self.handshakes = 0
        self.randbytes = rng.randbytes
        self.hub = Device(crypto.generate_private_key(self.randbytes), random=self.randbytes)
        self.remotes = []
        self.keys = []
        for index in range(PEERS):
            remote = Device(crypto.generate_private_key(self.randbytes), random=self.randbytes)
            assert remote.public_key is not None
            self.remotes.append(remote)
            self.keys.append(remote.public_key)
            self._connect(index)

    # ----------------------------------------------------------------- set-up

    def _hub_peer(self, index: int) -> Peer | None:
        return self.hub.peers.get(self.keys[index])

    def _connect(self, index: int) -> None:
        """(Re)create the hub's peer ``index`` and complete a handshake with it."""
        hub, remote = self.hub, self.remotes[index]
        assert hub.public_key is not None
        self.handshakes += 1
        self.set([f"public_key={self.keys[index].hex()}"])
        to_hub = remote.add_peer(hub.public_key)
        assert to_hub is not None
        remote.remove_peer(to_hub, NOW)  # a fresh session each time
        to_hub = remote.add_peer(hub.public_key)
        assert to_hub is not None
        remote.set_endpoint(to_hub, HUB_ENDPOINT)
        remote.allowed_ips.insert("0.0.0.0/0", to_hub)
        remote.allowed_ips.insert("::/0", to_hub)
        remote.send_packet(packet("192.0.2.99", "192.0.2.98"), NOW)  # starts the handshake
        for _ in range(4):
            for datagram, _ in remote.datagrams_to_send():
                hub.receive_datagram(datagram, endpoint_of(index), NOW)
            for datagram, _ in hub.datagrams_to_send():
                remote.receive_datagram(datagram, HUB_ENDPOINT, NOW)
        peer = self._hub_peer(index)
        assert peer is not None and peer.current is not None, "no session with the hub"
        self.drain()

    def drain(self) -> None:
        for device in (self.hub, *self.remotes):
            device.datagrams_to_send()
            device.packets_to_deliver()
            list(device.events())

    def set(self, lines: list[str]) -> None:
        errno = handle_set(self.hub, lines, NOW, NullHooks(self.hub))
        assert errno == 0, (errno, lines)

    def reset(self) -> None:
        """Every peer present, with a session and an empty AllowedIPs list."""
        if self.handshakes >= HANDSHAKES_PER_WORLD:
            self.build()
        for index in range(PEERS):
            if self._hub_peer(index) is None:
                self._connect(index)
        self.set(
            [
                line
                for key in self.keys
                for line in (f"public_key={key.hex()}", "replace_allowed_ips=true")
            ]
        )
        assert not any(self.hub.allowed_ips.entries(peer) for peer in self.hub.peers.values())

    # -------------------------------------------------------------- scenario

    def apply(self, op: Op) -> None:
        head = f"public_key={self.keys[op.peer].hex()}"
        if op.kind == "add":
            self.set([head, f"allowed_ip={op.prefix}"])
        elif op.kind == "remove":
            self.set([head, f"allowed_ip=-{op.prefix}"])
        elif op.kind == "replace":
            self.set([head, "replace_allowed_ips=true", f"allowed_ip={op.prefix}"])
        else:
            self.set([head, "remove=true"])

    def source(self) -> Source:
        """The hub as ``wgpy explain IF`` sees a live interface: through UAPI ``get``."""
        text = handle_get(self.hub)
        pairs = [
            (key, value)
            for key, _, value in (line.partition("=") for line in text.splitlines())
            if key and key != "errno"
        ]
        return Source.from_uapi("hub", pairs)

    def run(self, ops: list[Op], probes: list[Probe]) -> None:
        """Apply ``ops`` to a reset hub, then check every probe (AssertionError if explain and
        the Device disagree)."""
        self.reset()
        for op in ops:
            self.apply(op)
        source = self.source()
        for probe in probes:
            if probe.direction == "to":
                self.check_to(source, probe.address)
            else:
                peer = self._hub_peer(probe.peer)
                # a peer removed (and maybe added again) in this scenario has no session: no
                # packet of its can authenticate, so there is nothing to ask about
                if peer is not None and peer.current is not None:
                    self.check_from(source, probe.address, probe.peer)

    def check_to(self, source: Source, address: str) -> None:
        answer = explain_to(source, address)
        hub = self.hub
        sent = packet(_other_family_address(address), address)
        before = hub.drop_counts[(None, DropReason.NO_PEER)]
        hub.send_packet(sent, NOW)
        datagrams = hub.datagrams_to_send()
        hub.packets_to_deliver()  # an ICMP unreachable, if any
        list(hub.events())
        if answer["peer"] is None:
            assert answer["verdict"] == "not sent"
            assert hub.drop_counts[(None, DropReason.NO_PEER)] == before + 1, (
                f"explain: to {address} no peer; the Device did not drop it as no_peer"
            )
            assert not datagrams, f"explain: to {address} no peer; the Device sent it"
        else:
            index = self.keys.index(base64.b64decode(answer["peer"]))
            peer = self._hub_peer(index)
            assert peer is not None
            if peer.current is None:
                # removed and added again in this scenario: no session, so the packet waits
                # in that peer's queue for a handshake (and an endpoint)
                assert list(peer.staged)[-1:] == [sent], (
                    f"explain: to {address} via peer {index}; not queued for that peer"
                )
                assert not datagrams, f"to {address}: sent {datagrams} without a session"
                peer.staged.clear()
                self.checked_to += 1
                return
            assert [endpoint for _, endpoint in datagrams] == [endpoint_of(index)], (
                f"explain: to {address} via peer {index} ({answer['prefix']}); "
                f"the Device sent to {[endpoint for _, endpoint in datagrams]}"
            )
            remote = self.remotes[index]
            remote.receive_datagram(datagrams[0][0], HUB_ENDPOINT, NOW)
            assert remote.packets_to_deliver() == [sent], "the peer did not decrypt the packet"
            list(remote.events())
        self.checked_to += 1

    def check_from(self, source: Source, address: str, index: int) -> None:
        key = self.keys[index]
        answer = explain_from(source, address, base64.b64encode(key).decode())
        remote, hub = self.remotes[index], self.hub
        sent = packet(address, _other_family_address(address))
        remote.send_packet(sent, NOW)
        datagrams = remote.datagrams_to_send()
        assert len(datagrams) == 1, "the peer did not encrypt its packet"
        before = hub.drop_counts[(key, DropReason.DISALLOWED_SOURCE)]
        hub.receive_datagram(datagrams[0][0], endpoint_of(index), NOW)
        delivered = hub.packets_to_deliver()
        events = [e for e in hub.events() if isinstance(e, PacketDropped)]
        hub.datagrams_to_send()
        if answer["verdict"] == "delivered":
            assert delivered == [sent], (
                f"explain: from {address} via peer {index} delivered; the Device dropped it "
                f"({[e.reason.value for e in events]})"
            )
        else:
            assert not delivered, f"explain: from {address} via peer {index} dropped; delivered"
            assert hub.drop_counts[(key, DropReason.DISALLOWED_SOURCE)] == before + 1
            owner = None if answer["owner"] is None else base64.b64decode(answer["owner"])
            assert [(e.reason, e.owner) for e in events] == [
                (DropReason.DISALLOWED_SOURCE, owner)
            ], f"explain names owner {answer['owner']}; the Device's events: {events}"
        self.checked_from += 1


def prefixes_of(ops: list[Op]) -> list[str]:
    return [op.prefix for op in ops if op.prefix]


def address_in(prefix: str, bits: int, edge: int) -> str:
    """An address inside ``prefix`` (its host part from ``bits``), or just outside it
    (``edge`` 1: one below the network, 2: one above the last address)."""
    network = ip_network(prefix, strict=False)
    size = network.num_addresses
    base = int(network.network_address)
    top = (1 << network.max_prefixlen) - 1
    if edge == 1:
        value = (base - 1) & top
    elif edge == 2:
        value = (base + size) & top
    else:
        value = base + bits % size
    return str(IPv6Address(value) if network.version == 6 else IPv4Address(value))
