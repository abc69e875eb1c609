"""The pure part of `wgpy watch`: peer attribution and counting
(wgpy.tools.interface.watch.DropTally)."""

from __future__ import annotations

import base64

from wgpy.kernelmsg import classify
from wgpy.tools.interface.watch import DropTally, PeerDirectory

A = base64.b64encode(bytes([1]) * 32).decode()
B = base64.b64encode(bytes([2]) * 32).decode()
C = base64.b64encode(bytes([3]) * 32).decode()


def _pairs(*peers: tuple[str, str | None, list[str]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = [("listen_port", "51820")]
    for key, endpoint, allowed in peers:
        pairs.append(("public_key", base64.b64decode(key).hex()))
        if endpoint:
            pairs.append(("endpoint", endpoint))
        pairs += [("allowed_ip", prefix) for prefix in allowed]
    return pairs


def _tally() -> DropTally:
    tally = DropTally("wg0")
    tally.update_peers(
        PeerDirectory.from_pairs(
            _pairs(
                (A, "192.0.2.1:51820", ["10.0.0.1/32"]),
                (B, "192.0.2.9:51820", ["10.0.0.2/32"]),
                (C, "192.0.2.9:51820", ["10.0.0.3/32"]),  # shares B's endpoint (one NAT)
            )
        )
    )
    return tally


def _line(text: str) -> str:
    return f"wireguard: wg0: {text}"


def test_disallowed_source_is_attributed_by_endpoint_and_owner_found() -> None:
    tally = _tally()
    message = classify(
        _line("Packet has unallowed src IP (10.0.0.2) from peer 7 (192.0.2.1:51820)")
    )
    assert message is not None
    event = tally.feed(message)
    assert event is not None and event.peer == base64.b64decode(A)
    assert event.owner == base64.b64decode(B) and event.inner is not None
    assert event.inner.src == "10.0.0.2"
    assert tally.counts[(A, "disallowed_source")] == 1
    assert tally.owners[(A, B)] == 1
    # the kernel's peer id is remembered: the same peer after roaming is still A
    tally.update_peers(PeerDirectory.from_pairs(_pairs((A, "198.51.100.5:1", []))))
    roamed = classify(_line("Packet has unallowed src IP (10.9.9.9) from peer 7 (203.0.113.1:9)"))
    assert roamed is not None and tally.feed(roamed) is not None
    assert tally.counts[(A, "disallowed_source")] == 2
    (entry,) = tally.stats()["drops"]
    assert entry["sources"] == [
        {"address": "10.0.0.2", "count": 1, "error": 0},
        {"address": "10.9.9.9", "count": 1, "error": 0},
    ]
    assert "destinations" not in entry  # the kernel names only the source


def test_shared_or_unknown_endpoints_are_not_guessed() -> None:
    tally = _tally()
    shared = classify(_line("Packet has incorrect size from peer 3 (192.0.2.9:51820)"))
    unknown = classify(_line("Packet has incorrect size from peer 4 (203.0.113.7:4444)"))
    assert shared is not None and unknown is not None
    for message in (shared, unknown):
        event = tally.feed(message)
        assert event is not None and event.peer is None
    assert tally.counts[(None, "bad_length")] == 2
    assert tally.unattributed[("bad_length", "ambiguous")] == 1
    assert tally.unattributed[("bad_length", "unknown")] == 1


def test_interface_level_drops_and_not_drops() -> None:
    tally = _tally()
    no_peer = classify(_line("No peer has allowed IPs matching 10.200.0.77"))
    keypair = classify(_line("Keypair 1 created for peer 7"))
    odd = classify(_line("Something new the module says"))
    assert no_peer is not None and keypair is not None and odd is not None
    event = tally.feed(no_peer)
    assert event is not None and event.peer is None and event.direction.value == "out"
    assert event.inner is not None and event.inner.dst == "10.200.0.77"
    assert tally.feed(keypair) is None and tally.not_drops == 1
    assert tally.feed(odd) is not None
    stats = tally.stats()
    destinations = [{"address": "10.200.0.77", "count": 1, "error": 0}]
    no_peer_entry = {"peer": None, "reason": "no_peer", "count": 1, "destinations": destinations}
    assert no_peer_entry in stats["drops"]
    assert stats["unrecognised"] == [{"text": odd.text, "count": 1}]


def test_traced_drops_say_not_visible_without_trace_drops() -> None:
    from wgpy.tools.interface.watch import TracedDrops, WatchOptions

    said: list[str] = []
    traced = TracedDrops()
    traced.start(WatchOptions("wg0", say=said.append))
    state = traced.state()
    assert [e["reason"] for e in state["drops"]] == [
        "bad_size",
        "unknown_index",
        "decryption_failed",
        "expired_keypair",
    ]
    for entry in state["drops"]:
        assert entry["count"] == 0
        assert entry["source"].startswith("not visible: ") and "--trace-drops" in entry["source"]
    assert traced.read() == [] and said == []


def test_traced_drops_turn_trace_lines_into_events() -> None:
    from wgpy.kerneltrace import SOURCES
    from wgpy.tools.interface.watch import TracedDrops

    class Session:
        def read_lines(self) -> list[str]:
            return [
                "  <idle>-0  [000] b.s1.  1.000000: wg_lookup: (wg_packet_receive+0x29c/0x7b0 "
                "[wireguard] <- wg_index_hashtable_lookup) ret=0x0",
                "  <idle>-0  [000] ..s1.  1.000100: wg_consume: (consume_skb+0x0/0xc0) "
                "caller=0xffffffffc02af517 site=wg_packet_receive+0x647/0x7b0 [wireguard]",
            ]

        def close(self) -> None:
            pass

    traced = TracedDrops()
    traced.session = Session()
    traced.sources.update(SOURCES)
    (event,) = traced.read()
    assert event.reason.value == "unknown_index" and event.peer is None
    assert "kernel-wide" in event.detail
    counts = {e["reason"]: e["count"] for e in traced.state()["drops"]}
    assert counts == {
        "bad_size": 0,
        "unknown_index": 1,
        "decryption_failed": 0,
        "expired_keypair": 0,
    }
