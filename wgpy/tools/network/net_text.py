"""The network model's answers in words, shared by ``wgpy net`` and its pictures."""

from __future__ import annotations

from wgpy.net.trace import Cause, CauseKind

__all__ = ["cause_text"]


def cause_text(cause: Cause, leg: str) -> str:
    """One sentence: where the packet dies and why."""
    where = f"on {cause.host}"
    iface = f" ({cause.interface})" if cause.interface else ""
    text = {
        CauseKind.NO_ROUTE: f"{where}: no route to the destination",
        CauseKind.ROUTE_UNREACHABLE: f"{where}: an unreachable or blackhole route",
        CauseKind.NOT_INTO_TUNNEL: f"{where}: the route leads out of {cause.interface}, "
        f"not into the tunnel ({cause.detail})",
        CauseKind.NO_PEER: f"{where}{iface}: no peer's AllowedIPs hold the destination "
        "(Required key not available)",
        CauseKind.UNKNOWN_PEER: f"{where}{iface}: the peer {cause.peer} is in no input",
        CauseKind.NO_HANDSHAKE: f"{where}{iface}: no peer has the sender's key "
        f"{cause.peer}, so no handshake completes",
        CauseKind.NO_ENDPOINT: f"{where}{iface}: neither it nor the peer {cause.peer} has an "
        "Endpoint for the other, so no handshake can ever start",
        CauseKind.DISALLOWED_SOURCE: f"{where}{iface}: "
        + (
            "no peer's AllowedIPs hold the source, so the packet is dropped"
            if cause.detail == "no peer"
            else f"the source belongs to {cause.detail}, not to the peer that sent it: dropped"
        ),
        CauseKind.FORWARDING_OFF: f"{where}: IP forwarding is off",
        CauseKind.FORWARD_DROPPED: f"{where}: the FORWARD chain drops {cause.in_interface} → "
        f"{cause.interface} ({cause.detail})",
        CauseKind.UNKNOWN_RULE: f"{where}: unknown, because the firewall rule "
        f"{cause.detail!r} may match",
        CauseKind.INTERFACE_DOWN: f"{where}: {cause.interface} is down",
        CauseKind.LOOP: f"{where}: a routing loop",
    }[cause.kind]
    return f"the {leg} dies {text}"
