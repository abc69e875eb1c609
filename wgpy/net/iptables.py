"""iptables commands and ``iptables-save`` lines, as far as forwarding depends on them.

The model reads the filter table's FORWARD chain (policy and rules) and the nat table's
POSTROUTING chain (MASQUERADE, SNAT): the rules that decide whether a hub or gateway forwards
a tunnel's packet and under which source address. A rule whose matches or target the model
does not know becomes an ``UNKNOWN`` rule: the packets it may match get the answer
"unknown, because ...", never a guess. Rules of other chains and tables do not decide
forwarding and are left out.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from wgpy.net.model import Action, FilterRule, IPNetwork, Origin

__all__ = ["Command", "parse_command", "parse_save"]

#: matches that never change whether a plain ping or TCP flow is forwarded as the model sees
#: it (comments, the protocol match of a conntrack module) and are skipped with their argument
_HARMLESS_WITH_ARG = {"--comment"}
_TARGETS = {a.value: a for a in Action if a is not Action.UNKNOWN}


@dataclass(frozen=True)
class Command:
    """What one iptables command does to the model: append/insert a rule, or set a policy."""

    table: str
    chain: str
    op: str  # "append", "insert", "policy"
    origin: Origin
    rule: FilterRule | None = None
    policy: Action | None = None
    position: int = 1


class IptablesError(ValueError):
    """A command the model cannot read (the caller decides whether that matters)."""


def parse_command(argv: list[str], version: int, origin: Origin) -> Command | None:
    """One ``iptables``/``ip6tables`` command line (without the program name); None for a
    command that changes nothing the model reads (another chain, a listing, ``-N``)."""
    table = "filter"
    args = list(argv)
    op: str | None = None
    chain = ""
    position = 1
    policy: Action | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-t", "--table") and i + 1 < len(args):
            table = args[i + 1]
            i += 2
            continue
        if arg in ("-A", "--append", "-I", "--insert", "-P", "--policy") and i + 1 < len(args):
            chain = args[i + 1]
            i += 2
            if arg in ("-A", "--append"):
                op = "append"
            elif arg in ("-I", "--insert"):
                op = "insert"
                if i < len(args) and args[i].isdigit():
                    position = int(args[i])
                    i += 1
            else:
                op = "policy"
                if i < len(args):
                    policy = _TARGETS.get(args[i])
                    i += 1
            continue
        if arg in ("-D", "--delete", "-F", "--flush", "-X", "-N", "-L", "-S", "-Z", "-w", "--wait"):
            # deleting or flushing happens in PostDown; the model reads what PostUp builds
            return None
        rest.append(arg)
        i += 1
    if op is None:
        return None
    if (table, chain) not in (("filter", "FORWARD"), ("nat", "POSTROUTING")):
        return None
    if op == "policy":
        if policy is None:
            raise IptablesError(f"unknown policy in {shlex.join(argv)!r}")
        return Command(table, chain, op, origin, policy=policy)
    rule = parse_rule(rest, version, origin)
    if rule is None:
        return None
    return Command(table, chain, op, origin, rule=rule, position=position)


def parse_rule(args: list[str], version: int, origin: Origin) -> FilterRule | None:
    """The matches and target of one rule; an unknown match or target gives an UNKNOWN
    rule that keeps the text, so that answers depending on it say so; None for a rule
    without a target (it only counts packets)."""
    text = shlex.join(args)
    fields: dict[str, object] = {}
    action: Action | None = None
    to_source = None
    invert = False
    i = 0
    try:
        while i < len(args):
            arg = args[i]
            nxt = args[i + 1] if i + 1 < len(args) else None
            if arg == "!":
                invert = True
                i += 1
                continue
            if arg in ("-i", "--in-interface") and nxt is not None:
                fields["in_iface"], fields["in_invert"] = nxt, invert
            elif arg in ("-o", "--out-interface") and nxt is not None:
                fields["out_iface"], fields["out_invert"] = nxt, invert
            elif arg in ("-s", "--source", "--src") and nxt is not None and not invert:
                fields["source"] = _network(nxt)
            elif arg in ("-d", "--destination", "--dst") and nxt is not None and not invert:
                fields["destination"] = _network(nxt)
            elif arg in ("-j", "--jump") and nxt is not None:
                action = _TARGETS.get(nxt)
                if action is None:
                    return _unknown(text, version, origin, f"target {nxt}")
            elif arg in ("-m", "--match") and nxt in ("state", "conntrack", "comment"):
                pass
            elif arg in ("--state", "--ctstate") and nxt is not None and not invert:
                fields["states"] = frozenset(s.upper() for s in nxt.split(","))
            elif arg == "--to-source" and nxt is not None:
                to_source = ip_address(nxt.split(":")[0].split("-")[0])
            elif arg in _HARMLESS_WITH_ARG and nxt is not None:
                pass
            else:
                return _unknown(text, version, origin, f"match {arg}")
            invert = False
            i += 2
    except ValueError as error:
        return _unknown(text, version, origin, str(error))
    if action is None:
        return None  # a rule without a target only counts packets
    return FilterRule(action, origin, text, to_source=to_source, version=version, **fields)  # type: ignore[arg-type]


def _network(text: str) -> IPNetwork:
    return ip_network(text, strict=False)


def _unknown(text: str, version: int, origin: Origin, why: str) -> FilterRule:
    return FilterRule(Action.UNKNOWN, origin, f"{text} (cannot read {why})", version=version)


def parse_save(text: str, version: int, origin: Origin) -> list[Command]:
    """``iptables-save`` output: the policies and rules of FORWARD and nat POSTROUTING."""
    commands: list[Command] = []
    table = "filter"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table == "filter":
            parts = line[1:].split()
            if len(parts) >= 2 and parts[0] == "FORWARD" and parts[1] in _TARGETS:
                commands.append(
                    Command("filter", "FORWARD", "policy", origin, policy=_TARGETS[parts[1]])
                )
        elif line.startswith("-A "):
            try:
                argv = shlex.split(line)
            except ValueError:
                continue
            command = parse_command(["-t", table, *argv], version, origin)
            if command is not None:
                commands.append(command)
    return commands
