"""Cryptokey routing table (AllowedIPs), sans-I/O.

Semantics follow the kernel module and wireguard-go (see
``docs/wireguard-behaviour.md`` §1):

* two independent families, IPv4 (32-bit keys) and IPv6 (128-bit keys); an IPv4-mapped
  IPv6 prefix (``::ffff:a.b.c.d/n``) is an ordinary IPv6 prefix and never matches IPv4
  addresses; a ``/0`` matches every address of its own family only;
* host bits of an inserted prefix are masked off;
* inserting a prefix that already exists (same family, masked address and length) moves
  ownership to the new peer (which may be the current owner) and moves the entry to the
  *tail* of the new owner's list; otherwise the entry is appended to the owner's list;
* removing a single prefix only happens when that exact masked prefix exists *and* is owned
  by the given peer; anything else is a silent no-op;
* lookups are longest-prefix matches.

Data structure
--------------
The source of truth is, per family, one ``dict`` per prefix length ``n`` mapping the
prefix's first ``n`` bits (the address shifted right by ``width - n``; dense small ints
hash well, unlike masked addresses whose low bits are all zero) to its owner.

Each peer's list order lives in an append-only log (:class:`_Owned`): the key object the
table already holds plus ``length << 1 | is_ipv6`` in an ``array``. Every acquisition of a
prefix appends; nothing is deleted on a move or removal. Listing walks the log backwards
and keeps the last entry of each prefix the peer still owns, which is exactly "insertion
order, a re-insertion moves to the tail". The log is compacted when stale entries
outnumber live ones. No ``ipaddress`` object is made until a peer's prefixes are listed,
and an insert is two dictionary operations and two appends: this is what lets ``wg setconf``
load 130,560 prefixes at about 2 microseconds each, in about half the memory of a
per-peer ordered dict of packed ints.

Lookups use a binary search tree over the prefix lengths currently in use (Waldvogel et
al., "Scalable high speed IP routing lookups", 1997). Each tree node is a tuple
``(shift, table, shorter, longer)``; ``table`` holds the real prefixes of that length plus
*markers* for longer prefixes in the node's ``longer`` subtree. Every table value is the
best matching prefix's owner for that key among lengths <= the node's length (``None`` for
a marker that no real prefix covers). A hit goes to the longer subtree and remembers the
value, a miss goes to the shorter subtree, so a lookup costs about ``log2(k) + 1``
dictionary probes for ``k`` distinct lengths instead of up to ``k``.

When only a few lengths are in use (``CHAIN_MAX`` or fewer; the usual case of /32 + /128
and maybe a /24 or /0) the tree degenerates to a chain, longest first, that probes the
real per-length dictionaries directly; it needs no markers, and inserts, moves and
removals that do not change the set of lengths in use are visible immediately.

Large tables with many lengths (more than ``CHAIN_MAX`` lengths and at least ``SLOTS_MIN``
prefixes in a family) get a two-level structure instead, the idea of DIR-24-8 scaled down
for Python: a list indexed by the first ``SLOT_BITS`` (16) bits of the address whose slot
holds the owner of the longest prefix of length <= 16 containing it and, if longer prefixes
start inside the slot, a chain or tree over just those (its markers default to the slot's
owner). A lookup is then one list index plus usually zero to two probes, where one tree
over 33 or 129 lengths costs 6-8; it takes ~1.4x longer to build.

The search structure is rebuilt lazily, on the first lookup after a change that
invalidated it (in tree or two-level mode: any change to that family; in chain mode: a
change of the set of lengths in use). A rebuild costs O(n log k) (about 0.5 s for 100,000
prefixes of every length on the 2-core machine of ``bench/RESULTS.md``).

Not thread-safe: callers that mutate the table from one thread while another looks up
must serialise access themselves (lookups may rebuild the search structure).
"""

from __future__ import annotations

import enum
import socket
from array import array
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from itertools import repeat
from typing import ClassVar, Final, Generic, TypeAlias, TypeVar, cast

__all__ = ["Address", "AllowedIPs", "Prefix", "parse_prefix"]

P = TypeVar("P")

Prefix: TypeAlias = IPv4Network | IPv6Network
Address: TypeAlias = IPv4Address | IPv6Address | str | bytes | bytearray | memoryview


class _Sentinel(enum.Enum):
    ABSENT = 0


_ABSENT = _Sentinel.ABSENT

# A search-tree node: (shift, table, shorter subtree, longer subtree), where the node's
# prefix length is width - shift and table is keyed by address >> shift.
_Node: TypeAlias = "tuple[int, dict[int, P | None], _Node[P] | None, _Node[P] | None]"

# Placeholder root meaning "search structure must be rebuilt"; compared by identity. Were it
# ever searched it would simply find nothing.
_STALE: _Node[object] = (0, {}, None, None)

#: Bits of an address that index the first level of the two-level structure.
SLOT_BITS: Final = 16

# A first-level slot: (owner of the longest prefix of length <= SLOT_BITS containing the
# slot, or None; search structure of the slot's longer prefixes, or None).
_Slot: TypeAlias = "tuple[P | None, _Node[P] | None]"


def _fast_prefix(text: str) -> Prefix | None:
    """``ip_network(text, strict=False)`` for the plain ``ADDRESS/DIGITS`` form, through
    inet_pton and integers (about three times faster); None sends anything else (a zone, a
    netmask, no slash, an error) down the ``ipaddress`` path, which decides."""
    address, slash, bits = text.partition("/")
    if not slash or not bits.isascii() or not bits.isdigit() or "%" in address:
        return None
    try:
        if ":" in address:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
            length = int(bits)
            return IPv6Network((value, length), strict=False) if length <= 128 else None
        value = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
        length = int(bits)
        return IPv4Network((value, length), strict=False) if length <= 32 else None
    except (OSError, ValueError):
        return None


def parse_prefix(text: str) -> Prefix:
    """``ip_network(text, strict=False)``, several times faster for the usual
    ``ADDRESS/LENGTH`` form; raises ``ValueError`` like it."""
    fast = _fast_prefix(text)
    return fast if fast is not None else ip_network(text, strict=False)


class _Owned:
    """One peer's prefixes: the append-only log of its acquisitions (see module docstring)
    and how many prefixes it owns now."""

    __slots__ = ("count", "keys", "metas")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.metas = array("H")  # length << 1 | is_ipv6
        self.count = 0


class _Family(Generic[P]):
    """The real entries of one address family."""

    __slots__ = ("_longest_first", "by_length", "count", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        # by_length[n]: (address >> (width - n)) -> owner, for prefixes of length n.
        self.by_length: list[dict[int, P]] = [{} for _ in range(width + 1)]
        self.count = 0
        # cache of the used lengths, longest first; None when the set may have changed
        self._longest_first: list[int] | None = []

    def lengths_changed(self) -> None:
        self._longest_first = None

    def used_lengths(self) -> list[int]:
        """Prefix lengths with at least one entry, shortest first."""
        return [n for n, table in enumerate(self.by_length) if table]

    def matches(self, address: int) -> Iterator[tuple[int, int, P]]:
        """(length, network address, owner) of every containing prefix, longest first."""
        lengths = self._longest_first
        if lengths is None:
            lengths = self._longest_first = self.used_lengths()[::-1]
        width = self.width
        by_length = self.by_length
        for length in lengths:
            shift = width - length
            owner = by_length[length].get(address >> shift, _ABSENT)
            if owner is not _ABSENT:
                yield length, address >> shift << shift, owner

    def build(self, chain_max: int) -> tuple[_Node[P] | None, bool]:
        """Build the one-level lookup structure; returns (root, is_tree)."""
        lengths = self.used_lengths()
        # the chain probes the real dictionaries; the tree adds markers to copies
        # (the chain only reads them, so they may be seen as holding P | None)
        tables = cast(dict[int, dict[int, P | None]], {n: self.by_length[n] for n in lengths})
        is_tree = len(lengths) > chain_max
        if is_tree:
            tables = {n: dict(table) for n, table in tables.items()}
        return _search(self.width, tables, None, chain_max), is_tree

    def build_slots(self, chain_max: int) -> list[_Slot[P]]:
        """Build the two-level lookup structure (see the module docstring): one slot per
        value of the first ``SLOT_BITS`` bits, holding the best prefix of length
        <= ``SLOT_BITS`` there and a search structure of that slot's longer prefixes."""
        width = self.width
        by_length = self.by_length
        lengths = self.used_lengths()
        # slot owners from the short prefixes, shortest first so longer ones overwrite
        base: list[P | None] = [None] * (1 << SLOT_BITS)
        for length in lengths:
            if length > SLOT_BITS:
                break
            span = 1 << (SLOT_BITS - length)
            for key, owner in by_length[length].items():
                first = key << (SLOT_BITS - length)
                base[first : first + span] = [owner] * span
        # the longer prefixes, grouped by slot, then by length
        groups: dict[int, dict[int, dict[int, P | None]]] = {}
        for length in lengths:
            if length <= SLOT_BITS:
                continue
            drop = length - SLOT_BITS
            for key, owner in by_length[length].items():
                group = groups.get(key >> drop)
                if group is None:
                    group = groups[key >> drop] = {}
                table = group.get(length)
                if table is None:
                    group[length] = {key: owner}
                else:
                    table[key] = owner
        leaves: dict[int, _Slot[P]] = {}  # one shared (owner, None) tuple per owner
        slots: list[_Slot[P]] = []
        add = slots.append
        for slot_owner in base:
            leaf = leaves.get(id(slot_owner))
            if leaf is None:
                leaf = leaves[id(slot_owner)] = (slot_owner, None)
            add(leaf)
        for slot, group in groups.items():
            slot_owner = base[slot]
            slots[slot] = (slot_owner, _search(width, group, slot_owner, chain_max))
        return slots


def _search(
    width: int, tables: dict[int, dict[int, P | None]], default: P | None, chain_max: int
) -> _Node[P] | None:
    """The search structure over ``tables`` (length -> {key: owner}, no empty table): a chain
    of up to ``chain_max`` lengths that probes ``tables`` as they are, or else a Waldvogel
    tree that adds markers to them. ``default`` is the owner when no prefix in ``tables``
    matches (a marker covered by none of them carries it)."""
    lengths = sorted(tables)
    if len(lengths) <= chain_max:
        # Chain, longest first: a hit is final (no longer subtree), a miss falls through
        # to the next shorter length.
        node: _Node[P] | None = None
        for length in lengths:
            node = (width - length, tables[length], node, None)
        return node

    # For every length, the lengths of the tree ancestors whose *longer* subtree holds it:
    # a prefix of that length needs a marker at each of them.
    marker_lengths: dict[int, list[int]] = {}

    def shape(lo: int, hi: int, ancestors: list[int]) -> _Node[P] | None:
        if lo > hi:
            return None
        mid = (lo + hi) // 2
        length = lengths[mid]
        marker_lengths[length] = ancestors
        shorter = shape(lo, mid - 1, ancestors)
        longer = shape(mid + 1, hi, [*ancestors, length])
        return (width - length, tables[length], shorter, longer)

    root = shape(0, len(lengths) - 1, [])

    markers: dict[int, set[int]] = {n: set() for n in lengths}
    for length in lengths:
        ancestors = marker_lengths[length]
        if not ancestors:
            continue
        keys = tables[length].keys()  # real prefixes only: no marker is added yet
        for ancestor in ancestors:
            drop = length - ancestor
            markers[ancestor].update(key >> drop for key in keys)

    # Shortest first, so that every table a marker's search visits is already complete.
    for length in lengths:
        table = tables[length]
        limit = width - length
        for key in markers[length]:
            if key in table:
                continue  # a real prefix of this length: it is its own best match
            address = key << limit
            best = default
            probe = root
            while probe is not None:
                shift, probe_table, shorter, longer = probe
                if shift <= limit:  # only lengths shorter than this marker's
                    probe = shorter
                    continue
                hit = probe_table.get(address >> shift, _ABSENT)
                if hit is _ABSENT:
                    probe = shorter
                else:
                    best = hit
                    probe = longer
            table[key] = best
    return root


class AllowedIPs(Generic[P]):
    """Per-interface cryptokey routing table mapping prefixes to peers.

    Peers are compared like ``dict`` keys (identity, or ``__eq__``/``__hash__`` if defined)
    and must not be ``None``.
    """

    #: Up to this many distinct prefix lengths per family, lookups probe the lengths
    #: longest first; above it they binary-search the lengths (see module docstring).
    CHAIN_MAX: ClassVar[int] = 4
    #: A family with more lengths than ``CHAIN_MAX`` and at least this many prefixes gets
    #: the two-level structure (see module docstring); a smaller one a single tree.
    SLOTS_MIN: ClassVar[int] = 1024

    __slots__ = (
        "_by_peer",
        "_root4",
        "_root6",
        "_slots4",
        "_slots6",
        "_tree4",
        "_tree6",
        "_v4",
        "_v6",
    )

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._v4: _Family[P] = _Family(32)
        self._v6: _Family[P] = _Family(128)
        # peer -> its prefixes (at least one), in the order it first acquired one of them
        self._by_peer: dict[P, _Owned] = {}
        self._root4: _Node[P] | None = None
        self._root6: _Node[P] | None = None
        # the two-level structure, when in use (then the roots are unused)
        self._slots4: list[_Slot[P]] | None = None
        self._slots6: list[_Slot[P]] | None = None
        # whether every change invalidates the structure (tree or slots, not chain)
        self._tree4 = False
        self._tree6 = False

    # ----------------------------------------------------------------- parsing helpers

    @staticmethod
    def _prefix(prefix: Prefix | str) -> Prefix:
        if isinstance(prefix, str):
            fast = _fast_prefix(prefix)
            if fast is not None:
                return fast
            if "%" in prefix:  # ipaddress would silently drop a scope when masking
                raise ValueError(f"scoped addresses are not allowed in a prefix: {prefix!r}")
            net: Prefix = ip_network(prefix, strict=False)
        elif isinstance(prefix, IPv4Network | IPv6Network):
            net = prefix  # network objects are always masked
        else:
            raise TypeError(f"expected an IPv4Network, IPv6Network or str, not {prefix!r}")
        if isinstance(net, IPv6Network) and net.network_address.scope_id is not None:
            raise ValueError(f"scoped addresses are not allowed in a prefix: {prefix!r}")
        return net

    @staticmethod
    def _address(address: Address) -> tuple[int, int]:
        """(version, integer value) of an address."""
        if isinstance(address, IPv4Address | IPv6Address):
            return address.version, int(address)
        if isinstance(address, str):
            parsed: IPv4Address | IPv6Address
            parsed = IPv6Address(address) if ":" in address else IPv4Address(address)
            return parsed.version, int(parsed)
        if isinstance(address, bytes | bytearray | memoryview):
            raw = bytes(address)
            if len(raw) == 4:
                return 4, int.from_bytes(raw, "big")
            if len(raw) == 16:
                return 6, int.from_bytes(raw, "big")
            raise ValueError(f"an address must be 4 or 16 bytes long, not {len(raw)}")
        raise TypeError(f"expected an IP address, str or bytes, not {address!r}")

    def _locate(self, net: Prefix) -> tuple[_Family[P], dict[int, P], int]:
        """(family, table of the prefix's length, key) where ``net`` is or would be stored."""
        family = self._v4 if net.version == 4 else self._v6
        length = net.prefixlen
        return family, family.by_length[length], int(net.network_address) >> (family.width - length)

    def _changed(self, version: int, lengths_changed: bool) -> None:
        """Invalidate the lookup structure of a family after a change, if needed."""
        if lengths_changed:
            (self._v4 if version == 4 else self._v6).lengths_changed()
        if version == 4:
            if lengths_changed or self._tree4:
                self._root4 = _STALE  # type: ignore[assignment]
                self._slots4 = None
        elif lengths_changed or self._tree6:
            self._root6 = _STALE  # type: ignore[assignment]
            self._slots6 = None

    def _build(self, family: _Family[P]) -> tuple[_Node[P] | None, list[_Slot[P]] | None, bool]:
        """(root, slots, is_tree) of a family's new lookup structure."""
        if family.count >= self.SLOTS_MIN and len(family.used_lengths()) > self.CHAIN_MAX:
            return None, family.build_slots(self.CHAIN_MAX), True
        root, is_tree = family.build(self.CHAIN_MAX)
        return root, None, is_tree

    def _rebuild4(self) -> None:
        self._root4, self._slots4, self._tree4 = self._build(self._v4)

    def _rebuild6(self) -> None:
        self._root6, self._slots6, self._tree6 = self._build(self._v6)

    # ------------------------------------------------------------------------ mutation

    def insert(self, prefix: Prefix | str, peer: P) -> Prefix:
        """Insert ``prefix`` (host bits masked off) for ``peer``; returns the masked prefix.

        An existing identical prefix changes owner to ``peer`` and moves to the tail of
        ``peer``'s list. Raises ``ValueError`` for a malformed prefix or a length above
        32/128.
        """
        if peer is None:
            raise TypeError("peer must not be None")
        net = self._prefix(prefix)
        self.insert_int(net.version, int(net.network_address), net.prefixlen, peer)
        return net

    def insert_int(self, version: int, address: int, length: int, peer: P) -> None:
        """:meth:`insert` of the prefix ``address/length`` given as integers (host bits are
        ignored): ``version`` 4 or 6, ``address`` in ``range(2**32)`` or ``range(2**128)``."""
        self.insert_many(((version, address, length),), peer)

    def insert_many(self, prefixes: Iterable[tuple[int, int, int]], peer: P) -> None:
        """:meth:`insert_int` of each ``(version, address, length)`` in order, for bulk loads:
        no ``ipaddress`` object is made and the loop keeps everything in locals (a
        130,560-prefix ``wg setconf`` is mostly this). A bad item raises ``ValueError``;
        the items before it stay inserted."""
        if peer is None:
            raise TypeError("peer must not be None")
        families = {4: (self._v4, 32, 0), 6: (self._v6, 128, 1)}
        by_peer = self._by_peer
        owned = by_peer.get(peer)
        if owned is None:
            owned = by_peer[peer] = _Owned()
        log_key, log_meta = owned.keys.append, owned.metas.append
        gained = 0  # prefixes the peer did not own before
        # per family: touched (the search tree, if any, is stale), new length in use
        touched = {4: False, 6: False}
        new_length = {4: False, 6: False}
        try:
            for version, address, length in prefixes:
                family, width, is_v6 = families.get(version, (None, 0, 0))
                if family is None:
                    raise ValueError(f"IP version must be 4 or 6, not {version!r}")
                if not 0 <= length <= width or address >> width:  # (negative address: -1)
                    raise ValueError(f"not an IPv{version} prefix: {address}/{length}")
                key = address >> (width - length)
                table = family.by_length[length]
                old = table.get(key, _ABSENT)
                table[key] = peer
                touched[version] = True
                if old is _ABSENT:
                    family.count += 1
                    gained += 1
                    if len(table) == 1:
                        new_length[version] = True
                elif not (old is peer or old == peer):
                    gained += 1
                    previous = by_peer[old]
                    previous.count -= 1
                    if not previous.count:
                        del by_peer[old]
                log_key(key)
                log_meta(length << 1 | is_v6)
        finally:
            owned.count += gained
            if not owned.count:
                del by_peer[peer]  # nothing was inserted
            elif len(owned.keys) > 2 * owned.count + 64:
                self._compact(peer, owned)
            for version in (4, 6):
                if touched[version]:
                    self._changed(version, new_length[version])

    def insert_run(self, version: int, length: int, addresses: Sequence[int], peer: P) -> None:
        """:meth:`insert_many` of ``(version, address, length)`` for each of ``addresses``:
        a run of prefixes of one family and length (what ``wg setconf`` sends in hundreds)
        taken in whole-run steps — keys computed in one pass, the ones already in the table
        found by one set intersection, the table updated and the peer's log extended at once
        — with exactly the outcome of the item-by-item insert."""
        if peer is None:
            raise TypeError("peer must not be None")
        width = 32 if version == 4 else 128
        if version not in (4, 6) or not 0 <= length <= width or not addresses:
            self.insert_many(((version, address, length) for address in addresses), peer)
            return
        if min(addresses) < 0 or max(addresses) >> width:
            self.insert_many(((version, address, length) for address in addresses), peer)
            return
        family = self._v4 if version == 4 else self._v6
        shift = width - length
        keys = [address >> shift for address in addresses]
        table = family.by_length[length]
        was_empty = not table
        unique = dict.fromkeys(keys, peer)
        by_peer = self._by_peer
        owned = by_peer.get(peer)
        if owned is None:
            owned = by_peer[peer] = _Owned()
        present = table.keys() & unique.keys()
        gained = len(unique) - len(present)
        family.count += gained
        for key in present:
            old = table[key]
            if not (old is peer or old == peer):
                gained += 1
                previous = by_peer[old]
                previous.count -= 1
                if not previous.count:
                    del by_peer[old]
        table.update(unique)
        owned.keys += keys
        owned.metas.extend(repeat(length << 1 | (version == 6), len(keys)))
        owned.count += gained
        if len(owned.keys) > 2 * owned.count + 64:
            self._compact(peer, owned)
        self._changed(version, was_empty)

    def remove(self, prefix: Prefix | str, peer: P) -> bool:
        """Remove ``prefix`` if it exists and is owned by ``peer``; returns whether it did."""
        net = self._prefix(prefix)
        family, table, key = self._locate(net)
        owner = table.get(key, _ABSENT)
        if owner is _ABSENT or not (owner is peer or owner == peer):
            return False
        del table[key]
        family.count -= 1
        owned = self._by_peer[peer]
        owned.count -= 1
        if not owned.count:
            del self._by_peer[peer]
        self._changed(net.version, not table)
        return True

    def remove_by_peer(self, peer: P) -> None:
        """Remove every prefix owned by ``peer``."""
        owned = self._by_peer.pop(peer, None)
        if owned is None:
            return
        for key, meta in self._live(peer, owned):
            family, version = (self._v6, 6) if meta & 1 else (self._v4, 4)
            table = family.by_length[meta >> 1]
            del table[key]
            family.count -= 1
            self._changed(version, not table)

    def _live(self, peer: P, owned: _Owned) -> list[tuple[int, int]]:
        """(key, meta) of the prefixes ``peer`` owns, in list order (see module docstring)."""
        by_length = (self._v4.by_length, self._v6.by_length)
        seen: set[tuple[int, int]] = set()
        live: list[tuple[int, int]] = []
        keys, metas = owned.keys, owned.metas
        for index in range(len(keys) - 1, -1, -1):
            key, meta = keys[index], metas[index]
            owner = by_length[meta & 1][meta >> 1].get(key, _ABSENT)
            if owner is _ABSENT or not (owner is peer or owner == peer):
                continue
            entry = (key, meta)
            if entry not in seen:
                seen.add(entry)
                live.append(entry)
        live.reverse()
        return live

    def _compact(self, peer: P, owned: _Owned) -> None:
        live = self._live(peer, owned)
        owned.keys = [key for key, _ in live]
        owned.metas = array("H", [meta for _, meta in live])

    def clear(self) -> None:
        """Remove every entry."""
        self._reset()

    # -------------------------------------------------------------------------- lookup

    def lookup_v4(self, address: int) -> P | None:
        """Owner of the longest prefix containing the IPv4 address given as an int.

        ``address`` must be in ``range(2**32)`` (not checked).
        """
        slots = self._slots4
        best: P | None
        if slots is not None:
            best, node = slots[address >> 16]
        else:
            node = self._root4
            if node is _STALE:
                self._rebuild4()
                return self.lookup_v4(address)
            best = None
        while node is not None:
            shift, table, shorter, longer = node
            hit = table.get(address >> shift, _ABSENT)
            if hit is _ABSENT:
                node = shorter
            else:
                best = hit
                node = longer
        return best

    def lookup_v6(self, address: int) -> P | None:
        """Owner of the longest prefix containing the IPv6 address given as an int.

        ``address`` must be in ``range(2**128)`` (not checked).
        """
        slots = self._slots6
        best: P | None
        if slots is not None:
            best, node = slots[address >> 112]
        else:
            node = self._root6
            if node is _STALE:
                self._rebuild6()
                return self.lookup_v6(address)
            best = None
        while node is not None:
            shift, table, shorter, longer = node
            hit = table.get(address >> shift, _ABSENT)
            if hit is _ABSENT:
                node = shorter
            else:
                best = hit
                node = longer
        return best

    def lookup(self, address: Address) -> P | None:
        """Owner of the longest prefix containing ``address`` (bytes: 4 = IPv4, 16 = IPv6)."""
        # fast paths for the common exact types, then the general conversion
        if isinstance(address, bytes):
            size = len(address)
            if size == 4:
                return self.lookup_v4(int.from_bytes(address))
            if size == 16:
                return self.lookup_v6(int.from_bytes(address))
        else:
            kind = type(address)
            if kind is IPv4Address:
                return self.lookup_v4(int(address))
            if kind is IPv6Address:
                return self.lookup_v6(int(address))
        version, value = self._address(address)
        return self.lookup_v4(value) if version == 4 else self.lookup_v6(value)

    def matches(self, address: Address) -> list[tuple[Prefix, P]]:
        """Every (prefix, owner) containing ``address``, longest prefix first."""
        version, value = self._address(address)
        if version == 4:
            return [
                (IPv4Network((key, length)), owner)
                for length, key, owner in self._v4.matches(value)
            ]
        return [
            (IPv6Network((key, length)), owner) for length, key, owner in self._v6.matches(value)
        ]

    def match(self, address: Address) -> tuple[Prefix, P] | None:
        """The winning (longest) prefix containing ``address`` and its owner, or None."""
        version, value = self._address(address)
        family = self._v4 if version == 4 else self._v6
        for length, key, owner in family.matches(value):
            net: Prefix = IPv4Network((key, length)) if version == 4 else IPv6Network((key, length))
            return net, owner
        return None

    # ------------------------------------------------------------------------- queries

    def entries(self, peer: P) -> list[Prefix]:
        """``peer``'s prefixes in list order (insertion order; re-insertion moves to tail)."""
        return [
            IPv6Network((address, length)) if version == 6 else IPv4Network((address, length))
            for version, address, length in self.entries_int(peer)
        ]

    def entries_int(self, peer: P) -> list[tuple[int, int, int]]:
        """:meth:`entries` as ``(version, network address, length)`` integers, without
        making ``ipaddress`` objects (``get`` of a huge table formats these directly)."""
        owned = self._by_peer.get(peer)
        if owned is None:
            return []
        return [
            (6, key << (128 - (meta >> 1)), meta >> 1)
            if meta & 1
            else (4, key << (32 - (meta >> 1)), meta >> 1)
            for key, meta in self._live(peer, owned)
        ]

    def owner(self, prefix: Prefix | str) -> P | None:
        """The peer holding exactly this (masked) prefix, or None."""
        _, table, key = self._locate(self._prefix(prefix))
        return table.get(key)

    def peers(self) -> list[P]:
        """Peers owning at least one prefix, in the order they first acquired one of their
        current prefixes."""
        return list(self._by_peer)

    def __len__(self) -> int:
        return self._v4.count + self._v6.count

    def __repr__(self) -> str:
        return f"<AllowedIPs: {len(self)} entries, {len(self._by_peer)} peers>"
