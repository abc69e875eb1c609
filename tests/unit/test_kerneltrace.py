"""The kprobe reading of the kernel module's silent drops (wgpy.kerneltrace), on trace lines
and /proc/kallsyms text as Debian's 6.1 kernel writes them."""

from __future__ import annotations

from wgpy.events import DropReason
from wgpy.kerneltrace import (
    AEAD,
    DECRYPT,
    LOOKUP,
    TraceDropCounter,
    module_functions,
    parse_trace_line,
    plan,
)

KALLSYMS = """\
ffffffffb1e2a4b0 T consume_skb
ffffffffc02afcf0 t wg_receive\t[wireguard]
ffffffffc02afd30 t send4\t[wireguard]
ffffffffc02aeed0 T wg_packet_receive\t[wireguard]
ffffffffc02af680 T wg_packet_rx_poll\t[wireguard]
ffffffffc02b9000 T wg_last\t[wireguard]
ffffffffc02b0000 d some_data\t[wireguard]
ffffffffc0300000 t chacha20poly1305_decrypt_sg_inplace\t[libchacha20poly1305]
"""
#: what root sees with kernel.kptr_restrict=2 (or anyone without CAP_SYSLOG)
HIDDEN = "\n".join("0" * 16 + line[16:] for line in KALLSYMS.splitlines())
TRACEABLE = frozenset(
    {
        "consume_skb",
        "wg_packet_receive",
        "wg_index_hashtable_lookup",
        "decrypt_packet",
        "chacha20poly1305_decrypt_sg_inplace",
    }
)

# What the probes wrote in the guest for: three datagrams too short, two data messages for an
# unknown index, one of an unknown type, two data messages with a bad tag.
TRACE = """\
# tracer: nop
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
          <idle>-0       [000] ..s1.    20.620053: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02afd15 site=wg_receive+0x25/0x40 [wireguard]
          <idle>-0       [000] ..s1.    20.620594: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02afd15 site=wg_receive+0x25/0x40 [wireguard]
          <idle>-0       [000] ..s1.    20.620641: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02afd15 site=wg_receive+0x25/0x40 [wireguard]
          <idle>-0       [000] b.s1.    20.620698: wg_lookup: (wg_packet_receive+0x29c/0x7b0 [wireguard] <- wg_index_hashtable_lookup) ret=0x0
          <idle>-0       [000] ..s1.    20.620751: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02af517 site=wg_packet_receive+0x647/0x7b0 [wireguard]
          <idle>-0       [000] b.s1.    20.620798: wg_lookup: (wg_packet_receive+0x29c/0x7b0 [wireguard] <- wg_index_hashtable_lookup) ret=0x0
          <idle>-0       [000] ..s1.    20.620806: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02af517 site=wg_packet_receive+0x647/0x7b0 [wireguard]
          <idle>-0       [000] .Ns1.    20.621175: wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02afd15 site=wg_receive+0x25/0x40 [wireguard]
     kworker/0:0-7       [000] .....    20.621631: wg_aead: (decrypt_packet+0x118/0x1b0 [wireguard] <- chacha20poly1305_decrypt_sg_inplace) ret=0
     kworker/0:0-7       [000] .....    20.621669: wg_decrypt: (wg_packet_decrypt_worker+0xa8/0x1a0 [wireguard] <- decrypt_packet) ret=0
     kworker/0:0-7       [000] .....    20.621885: wg_aead: (decrypt_packet+0x118/0x1b0 [wireguard] <- chacha20poly1305_decrypt_sg_inplace) ret=0
     kworker/0:0-7       [000] .....    20.621893: wg_decrypt: (wg_packet_decrypt_worker+0xa8/0x1a0 [wireguard] <- decrypt_packet) ret=0
"""  # noqa: E501


def test_module_functions_have_ends_and_skip_other_modules_and_data() -> None:
    functions = module_functions(KALLSYMS)
    assert functions["wg_packet_receive"].start == 0xFFFFFFFFC02AEED0
    assert functions["wg_packet_receive"].end == 0xFFFFFFFFC02AF680
    assert functions["wg_receive"].end == 0xFFFFFFFFC02AFD30
    assert "wg_last" not in functions  # no end known
    assert "some_data" not in functions and "consume_skb" not in functions
    assert module_functions(HIDDEN) == {}


def test_plan_filters_consume_skb_to_the_receive_functions() -> None:
    probes = plan(module_functions(KALLSYMS), TRACEABLE)
    assert set(probes.sources) == {
        DropReason.BAD_SIZE,
        DropReason.UNKNOWN_INDEX,
        DropReason.DECRYPTION_FAILED,
        DropReason.EXPIRED_KEYPAIR,
    }
    assert all(source.startswith("kprobe: ") for source in probes.sources.values())
    (consume,) = [p for p in probes.probes if p.function == "consume_skb"]
    assert consume.filter == (
        "(caller >= 0xffffffffc02afcf0 && caller < 0xffffffffc02afd30) || "
        "(caller >= 0xffffffffc02aeed0 && caller < 0xffffffffc02af680)"
    )
    assert consume.definition("wgpy_9").startswith("p:wgpy_9/wg_consume consume_skb ")
    assert LOOKUP.definition("g") == "r:g/wg_lookup wg_index_hashtable_lookup ret=$retval:x64"


def test_plan_says_why_a_reason_is_not_visible() -> None:
    hidden = plan(module_functions(HIDDEN), TRACEABLE)
    assert hidden.sources[DropReason.BAD_SIZE].startswith("not visible: ")
    assert "kptr_restrict" in hidden.sources[DropReason.BAD_SIZE]
    assert hidden.sources[DropReason.UNKNOWN_INDEX].startswith("kprobe: ")
    inlined = plan(module_functions(KALLSYMS), TRACEABLE - {"decrypt_packet"})
    assert AEAD not in inlined.probes and DECRYPT not in inlined.probes
    for reason in (DropReason.DECRYPTION_FAILED, DropReason.EXPIRED_KEYPAIR):
        assert "decrypt_packet()" in inlined.sources[reason]
        assert inlined.sources[reason].startswith("not visible: ")


def test_parse_trace_line_reads_return_and_entry_probes() -> None:
    lines = TRACE.splitlines()
    assert parse_trace_line(lines[0]) is None and parse_trace_line(lines[1]) is None
    entry = parse_trace_line(lines[2])
    assert entry is not None and entry.event == "wg_consume" and entry.function is None
    assert entry.symbol_arg("site") == "wg_receive" and entry.cpu == 0 and entry.pid == 0
    ret = parse_trace_line(lines[-1])
    assert ret is not None and ret.event == "wg_decrypt" and ret.function == "decrypt_packet"
    assert ret.site_function == "wg_packet_decrypt_worker" and ret.int_arg("ret") == 0
    assert (ret.pid, ret.time) == (7, 20.621893)
    odd = parse_trace_line(" my-task-name-12  [001] d..1. 5.000000: wg_lookup: (x+0x1/0x2) ret=0x0")
    assert odd is not None and odd.pid == 12 and odd.cpu == 1


def test_counter_tells_the_four_drops_apart() -> None:
    counter = TraceDropCounter()
    for line in TRACE.splitlines():
        event = parse_trace_line(line)
        if event is not None:
            counter.feed(event)
    assert counter.counts == {
        DropReason.BAD_SIZE: 4,  # three short datagrams and one of an unknown type
        DropReason.UNKNOWN_INDEX: 2,
        DropReason.DECRYPTION_FAILED: 2,
    }


def test_counter_expired_session_and_other_callers() -> None:
    counter = TraceDropCounter()
    worker = "     kworker/1:2-55      [001] .....    30.000000: "
    expired = worker + (
        "wg_decrypt: (wg_packet_decrypt_worker+0xa8/0x1a0 [wireguard] <- decrypt_packet) ret=0"
    )
    ok = expired.replace("ret=0", "ret=1")
    response_lookup = worker + (
        "wg_lookup: (wg_noise_handshake_consume_response+0x77/0x300 [wireguard] <- "
        "wg_index_hashtable_lookup) ret=0x0"
    )
    found = worker + (
        "wg_lookup: (wg_packet_receive+0x29c/0x7b0 [wireguard] <- wg_index_hashtable_lookup) "
        "ret=0xffff8880012a4000"
    )
    other_free = worker + (
        "wg_consume: (consume_skb+0x0/0xc0) caller=0xffffffffc02af000 "
        "site=wg_packet_handshake_receive_worker+0x70/0x120 [wireguard]"
    )
    for line in (expired, ok, response_lookup, found, other_free):
        event = parse_trace_line(line)
        assert event is not None, line
        counter.feed(event)
    assert counter.counts == {DropReason.EXPIRED_KEYPAIR: 1}
