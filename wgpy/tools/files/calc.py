"""``wgpy calc``: the minimal set of prefixes covering exactly INCLUDE minus EXCLUDE.

Every set of addresses has exactly one decomposition into *maximal* aligned blocks (prefixes
contained in the set whose parent prefix is not), those blocks are disjoint, and any prefix set
covering the set exactly needs at least one prefix per block; so the maximal blocks are the
unique minimal answer. ``difference`` computes them per family from address intervals, which
keeps the work proportional to the number of prefixes given, not to the address space.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

from wgpy.allowedips import Prefix

__all__ = ["difference", "parse_prefixes", "to_allowed_ips"]

_WIDTH = {4: 32, 6: 128}


def parse_prefixes(texts: list[str], warnings: list[str] | None = None) -> list[Prefix]:
    """Prefixes from text (commas allowed, host bits masked); ValueError names the bad one.

    Each prefix given with host bits set (``10.0.0.1/8``) adds a sentence to ``warnings``.
    """
    out: list[Prefix] = []
    for text in texts:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                prefix = ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"invalid prefix {part!r}") from None
            if warnings is not None and "/" in part and str(prefix) != part:
                try:
                    ip_network(part, strict=True)
                except ValueError:
                    warnings.append(f"{part} has host bits set; using {prefix}")
            out.append(prefix)
    return out


def _intervals(prefixes: list[Prefix], version: int) -> list[tuple[int, int]]:
    """Sorted, merged, half-open [start, end) intervals of the prefixes of one family."""
    spans = sorted(
        (int(p.network_address), int(p.network_address) + p.num_addresses)
        for p in prefixes
        if p.version == version
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(keep: list[tuple[int, int]], drop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    j = 0
    for start, end in keep:
        while j < len(drop) and drop[j][1] <= start:
            j += 1
        k = j
        cursor = start
        while k < len(drop) and drop[k][0] < end:
            if drop[k][0] > cursor:
                out.append((cursor, drop[k][0]))
            cursor = max(cursor, drop[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def _blocks(start: int, end: int, width: int) -> list[tuple[int, int]]:
    """Maximal aligned blocks (address, prefix length) exactly covering [start, end)."""
    out: list[tuple[int, int]] = []
    while start < end:
        # the largest block that starts at `start` (alignment) and fits before `end`
        size = start & -start if start else 1 << width
        while size > end - start:
            size >>= 1
        out.append((start, width - size.bit_length() + 1))
        start += size
    return out


def difference(include: list[Prefix], exclude: list[Prefix]) -> list[Prefix]:
    """The minimal prefix list covering exactly ``include`` minus ``exclude``; IPv4 first, each
    family in address order."""
    result: list[Prefix] = []
    for version, net_type in ((4, IPv4Network), (6, IPv6Network)):
        width = _WIDTH[version]
        remaining = _subtract(_intervals(include, version), _intervals(exclude, version))
        for start, end in remaining:
            result.extend(
                net_type((address, length)) for address, length in _blocks(start, end, width)
            )
    return result


def to_allowed_ips(prefixes: list[Prefix]) -> str:
    """``AllowedIPs = a, b, c`` value text (empty string for no prefixes)."""
    return ", ".join(str(p) for p in prefixes)
