"""wg-quick configuration files: parse (every value keeps its file and line) and write.

Syntax follows ``wg-quick(8)`` and ``wg(8)``'s ``config.c``:

* sections ``[Interface]`` (once) and ``[Peer]`` (any number), names case-insensitive;
* ``Key = Value`` lines, keys case-insensitive, whitespace around keys and values ignored;
* ``#`` starts a comment that runs to the end of the line, everywhere (wg-quick cuts every line
  at its first ``#``, hook commands included);
* ``AllowedIPs``, ``Address`` and ``DNS`` are comma-separated and may be repeated; ``PreUp``,
  ``PostUp``, ``PreDown`` and ``PostDown`` may be repeated and run in order;
* a comment ``# Name = text`` inside a section names it (a common convention of config
  generators); ``wgpy explain`` accepts the name wherever it takes a peer.

Structural errors (a line that is neither a section, a comment nor ``key = value``, a key before
any section, an unknown section) raise :class:`ConfigError` whose text is ``FILE:LINE: message``.
Everything else is kept as text with its line number, so that ``wgpy lint`` can report several
problems at once; :func:`parse_prefix`, :func:`parse_key` and friends turn a value into its typed
form or raise :class:`ConfigError` naming that value's line.

Pure functions on text: reading the file is :func:`load`'s only I/O.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network
from pathlib import Path

from wgpy import allowedips
from wgpy.allowedips import AllowedIPs, Prefix

__all__ = [
    "Config",
    "ConfigError",
    "InterfaceSection",
    "PeerSection",
    "Value",
    "format_config",
    "load",
    "parse_config",
    "parse_endpoint",
    "parse_key",
    "parse_prefix",
    "suggest_key",
]

#: canonical spelling of every key wg-quick understands, by section; keyed by lower case
INTERFACE_KEYS = {
    k.lower(): k
    for k in (
        "PrivateKey",
        "ListenPort",
        "FwMark",
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "SaveConfig",
    )
}
PEER_KEYS = {
    k.lower(): k
    for k in ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
}
LIST_KEYS = frozenset({"AllowedIPs", "Address", "DNS"})
HOOK_KEYS = ("PreUp", "PostUp", "PreDown", "PostDown")


def suggest_key(key: str, interface: bool) -> str | None:
    """The known key an unknown ``key`` was probably meant to be (``Allowed IPs``,
    ``allowed_ips``, ``AllowedIP`` -> ``AllowedIPs``), or None; ``interface`` picks the section.
    """
    known = INTERFACE_KEYS if interface else PEER_KEYS
    squeezed = re.sub(r"[\s_-]+", "", key).lower()
    if squeezed in known:
        return known[squeezed]
    close = difflib.get_close_matches(squeezed, list(known), n=1, cutoff=0.75)
    return known[close[0]] if close else None


def unknown_key_message(key: str, interface: bool) -> str:
    """``unknown key 'Allowed IPs' (did you mean AllowedIPs?)``."""
    suggestion = suggest_key(key, interface)
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    return f"unknown key {key!r}{hint}"


_NAME_COMMENT = re.compile(r"^\s*#+\s*name\s*[=:]\s*(\S.*?)\s*$", re.IGNORECASE)
_SECTION = re.compile(r"^\s*\[\s*([A-Za-z]+)\s*\]\s*$")


class ConfigError(ValueError):
    """A problem in a config file, located: ``str(error)`` is ``FILE:LINE: message``."""

    def __init__(self, filename: str, line: int | None, message: str) -> None:
        self.filename = filename
        self.line = line
        self.message = message
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Value:
    """One value as written, with where it was written."""

    text: str
    line: int
    filename: str = "<config>"

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.filename, self.line, message)

    def __str__(self) -> str:
        return self.text


@dataclass
class Entry:
    """A ``key = value`` line; ``key`` is the canonical spelling when the key is known."""

    key: str
    value: Value
    known: bool


@dataclass
class _Section:
    line: int
    filename: str
    name: str | None = None
    entries: list[Entry] = field(default_factory=list)

    def values(self, key: str) -> list[Value]:
        """Every value of ``key`` (canonical spelling), list keys split at commas."""
        out: list[Value] = []
        for entry in self.entries:
            if entry.key != key:
                continue
            if key in LIST_KEYS:
                out.extend(
                    Value(part.strip(), entry.value.line, entry.value.filename)
                    for part in entry.value.text.split(",")
                    if part.strip()
                )
            else:
                out.append(entry.value)
        return out

    def value(self, key: str) -> Value | None:
        """The effective (last) value of a single-valued key, or None."""
        found = self.values(key)
        return found[-1] if found else None

    @property
    def unknown(self) -> list[Entry]:
        return [e for e in self.entries if not e.known]


@dataclass
class InterfaceSection(_Section):
    @property
    def private_key(self) -> Value | None:
        return self.value("PrivateKey")

    @property
    def listen_port(self) -> Value | None:
        return self.value("ListenPort")

    @property
    def addresses(self) -> list[Value]:
        return self.values("Address")

    @property
    def table(self) -> Value | None:
        return self.value("Table")

    def hooks(self, key: str) -> list[Value]:
        return self.values(key)


@dataclass
class PeerSection(_Section):
    @property
    def public_key(self) -> Value | None:
        return self.value("PublicKey")

    @property
    def preshared_key(self) -> Value | None:
        return self.value("PresharedKey")

    @property
    def allowed_ips(self) -> list[Value]:
        return self.values("AllowedIPs")

    @property
    def endpoint(self) -> Value | None:
        return self.value("Endpoint")

    @property
    def label(self) -> str:
        """How to call this peer in messages: its name, else its key, else its line."""
        if self.name:
            return self.name
        key = self.public_key
        return key.text if key is not None else f"[Peer] at line {self.line}"


@dataclass
class Config:
    filename: str
    interface: InterfaceSection | None = None
    peers: list[PeerSection] = field(default_factory=list)

    def table(self) -> AllowedIPs[str]:
        """The AllowedIPs table ``wg setconf`` would build: peers keyed by public key, inserted
        in file order (so a prefix on two peers ends up with the later one).

        Raises ConfigError for a missing or invalid public key, a malformed prefix, or an
        unknown key that looks like a misspelt known one (``Allowed IPs``): a table built
        without its values would answer for a file wg refuses. Other unknown keys are left to
        ``wgpy lint``.
        """
        sections: list[_Section] = [*([self.interface] if self.interface else []), *self.peers]
        for section in sections:
            interface = isinstance(section, InterfaceSection)
            for entry in section.unknown:
                if suggest_key(entry.key, interface) is not None:
                    raise entry.value.error(
                        unknown_key_message(entry.key, interface) + ": wg would refuse this file"
                    )
        table: AllowedIPs[str] = AllowedIPs()
        for peer in self.peers:
            key = peer_key(peer)
            for value in peer.allowed_ips:
                table.insert(parse_prefix(value), key)
        return table

    def peer_name_lists(self) -> dict[str, list[str]]:
        """Public key -> the distinct ``# Name =`` names of its [Peer] sections, in file order.

        Sections sharing a public key are one peer to ``wg setconf`` (the later one's values
        merge into the earlier one's), so a key may have several names.
        """
        names: dict[str, list[str]] = {}
        for peer in self.peers:
            if peer.name and peer.public_key is not None:
                held = names.setdefault(peer.public_key.text, [])
                if peer.name not in held:
                    held.append(peer.name)
        return names

    def peer_names(self) -> dict[str, str]:
        """Public key -> name from ``# Name =`` comments; the names of sections that share a
        key joined as ``alice / bob``."""
        return {key: " / ".join(names) for key, names in self.peer_name_lists().items()}


def peer_key(peer: PeerSection) -> str:
    """The peer's public key (validated, as written)."""
    key = peer.public_key
    if key is None:
        raise ConfigError(peer.filename, peer.line, "[Peer] has no PublicKey")
    parse_key(key)
    return key.text


# ------------------------------------------------------------------------------- parsing


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Parse wg-quick config text; raises ConfigError on a structural error."""
    config = Config(filename)
    section: _Section | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        named = _NAME_COMMENT.match(raw)
        if named:
            if section is not None and section.name is None:
                section.name = named.group(1)
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = _SECTION.match(line)
        if header:
            kind = header.group(1).lower()
            if kind == "interface":
                if config.interface is not None:
                    raise ConfigError(
                        filename,
                        number,
                        f"a second [Interface] section (the first is at line "
                        f"{config.interface.line})",
                    )
                config.interface = InterfaceSection(number, filename)
                section = config.interface
            elif kind == "peer":
                peer = PeerSection(number, filename)
                config.peers.append(peer)
                section = peer
            else:
                raise ConfigError(filename, number, f"unknown section [{header.group(1)}]")
            continue
        if line.startswith("["):
            raise ConfigError(filename, number, f"malformed section header {line!r}")
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(filename, number, f"expected 'Key = Value', got {line!r}")
        if section is None:
            raise ConfigError(filename, number, f"{key} outside of any [Interface] or [Peer]")
        known = INTERFACE_KEYS if isinstance(section, InterfaceSection) else PEER_KEYS
        canonical = known.get(key.lower())
        section.entries.append(
            Entry(canonical or key, Value(value.strip(), number, filename), canonical is not None)
        )
    return config


def load(path: str | Path) -> Config:
    """Read and parse a config file; every failure is a ConfigError naming the file."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(name, None, error.strerror or str(error)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(name, line, "not UTF-8 text") from None
    return parse_config(text, name)


# ------------------------------------------------------------------------- typed values


def parse_prefix(value: Value) -> Prefix:
    """An AllowedIPs entry as a (masked) network; a bare address is a /32 or /128."""
    text = value.text
    if "%" in text:
        raise value.error(f"scoped address not allowed in a prefix: {text!r}")
    try:
        return allowedips.parse_prefix(text)
    except ValueError:
        raise value.error(f"invalid prefix {text!r}") from None


def has_host_bits(value: Value) -> bool:
    text = value.text
    if "/" not in text:
        return False
    try:
        return ip_network(text, strict=False) != ip_network(text, strict=True)
    except ValueError:
        return True


def parse_address(value: Value) -> tuple[IPv4Address | IPv6Address, Prefix]:
    """An ``Address`` entry: (the host address, its connected network)."""
    try:
        interface = ip_interface(value.text)
    except ValueError:
        raise value.error(f"invalid address {value.text!r}") from None
    return interface.ip, interface.network


def parse_key(value: Value) -> bytes:
    """A base64 key of 32 bytes, as ``wg`` accepts it (44 characters ending in '=')."""
    text = value.text
    if len(text) != 44 or not text.endswith("="):
        raise value.error("key is not 44 base64 characters ending in '='")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise value.error("key is not valid base64") from None
    if len(raw) != 32:
        raise value.error("key does not decode to 32 bytes")
    return raw


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def parse_endpoint(value: Value) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); hosts are not resolved."""
    text = value.text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise value.error(f"endpoint {text!r} is not [IPv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise value.error(f"endpoint {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise value.error(f"endpoint {text!r} has no port (host:port)")
        if ":" in host:
            raise value.error(f"endpoint {text!r}: put IPv6 addresses in brackets, [addr]:port")
        if not _HOSTNAME.match(host):
            raise value.error(f"endpoint {text!r}: {host!r} is not a host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise value.error(f"endpoint {text!r}: port must be 1-65535")
    return host, int(port_text)


def endpoint_ip(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def parse_int(value: Value, low: int, high: int, what: str) -> int:
    text = value.text
    try:
        number = int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise value.error(f"{what} {text!r} is not a number") from None
    if not low <= number <= high:
        raise value.error(f"{what} {number} is outside {low}-{high}")
    return number


# -------------------------------------------------------------------------------- writing


def _section_lines(header: str, section: _Section) -> Iterable[str]:
    yield header
    if section.name:
        yield f"# Name = {section.name}"
    written: set[str] = set()
    for entry in section.entries:
        if entry.key in LIST_KEYS:
            if entry.key in written:
                continue
            written.add(entry.key)
            yield f"{entry.key} = {', '.join(v.text for v in section.values(entry.key))}"
        else:
            yield f"{entry.key} = {entry.value.text}"


def format_config(config: Config) -> str:
    """wg-quick text for ``config``: canonical key spellings, one line per list key; the order
    of keys, repeated hooks and names are kept (``parse_config`` of the result is equivalent)."""
    blocks: list[str] = []
    if config.interface is not None:
        blocks.append("\n".join(_section_lines("[Interface]", config.interface)))
    for peer in config.peers:
        blocks.append("\n".join(_section_lines("[Peer]", peer)))
    return "\n\n".join(blocks) + "\n" if blocks else ""
