"""The bounded tallies of dropped addresses (wgpy.tally) and the device's use of them."""

from __future__ import annotations

import collections
import random

from tests.packets import ipv4_udp, ipv6_udp
from wgpy.device import Device
from wgpy.events import DropReason
from wgpy.tally import AddressTally, Counted, TopCounter


def test_exact_while_within_capacity() -> None:
    counter: TopCounter[str] = TopCounter(capacity=4)
    for item in "abacabad":
        counter.add(item)
    assert counter.top() == [Counted("a", 4), Counted("b", 2), Counted("c", 1), Counted("d", 1)]
    assert counter.top(2) == [Counted("a", 4), Counted("b", 2)]
    assert counter.total == 8 and len(counter) == 4


def test_never_grows_past_capacity_and_keeps_the_heavy_hitters() -> None:
    counter: TopCounter[str] = TopCounter(capacity=64)
    rng = random.Random(5)
    truth: collections.Counter[str] = collections.Counter()
    heavy = [f"10.0.0.{i}" for i in range(5)]
    for step in range(100_000):
        # five addresses make half the stream, the rest is a flood of distinct ones
        item = heavy[step % 5] if step % 2 else f"10.{rng.randrange(256)}.{step % 251}.7"
        counter.add(item)
        truth[item] += 1
        assert len(counter) <= 64
    top = counter.top(5)
    assert {c.item for c in top} == set(heavy)
    for counted in counter.top(64):
        # Space-Saving's guarantee: the true count lies in [count - error, count]
        assert counted.count - counted.error <= truth[counted.item] <= counted.count
        assert counted.error <= counter.total // 64
    assert counter.total == 100_000


def test_a_new_item_replaces_one_of_the_least_counted() -> None:
    counter: TopCounter[str] = TopCounter(capacity=2)
    for item in ["a", "a", "b", "c"]:
        counter.add(item)
    # c took b's place (count 1) and may be over-counted by that 1
    assert counter.top() == [Counted("a", 2), Counted("c", 2, error=1)]
    counter.add("d")  # both have 2: a, the first to reach it, makes room
    assert counter.top() == [Counted("d", 3, error=2), Counted("c", 2, error=1)]


def test_least_count_tracking_matches_a_brute_force_model() -> None:
    rng = random.Random(9)
    for capacity in (1, 2, 3, 8):
        counter: TopCounter[int] = TopCounter(capacity=capacity)
        model: dict[int, int] = {}
        for _ in range(2000):
            item = rng.randrange(12)
            counter.add(item)
            if item in model:
                model[item] += 1
            elif len(model) < capacity:
                model[item] = 1
            else:
                least = min(model.values())
                victim = next(k for k, v in model.items() if v == least)
                del model[victim]
                model[item] = least + 1
            got = {c.item: c.count for c in counter.top(capacity)}
            assert sorted(got.values()) == sorted(model.values())


def test_address_tally() -> None:
    tally = AddressTally()
    tally.add("10.0.0.1", "10.0.0.9")
    tally.add("10.0.0.2", "10.0.0.9")
    tally.add("10.0.0.1", "10.0.0.9")
    assert tally.sources.top() == [Counted("10.0.0.1", 2), Counted("10.0.0.2", 1)]
    assert tally.destinations.top() == [Counted("10.0.0.9", 3)]


def test_device_tallies_the_inner_addresses_of_its_drops() -> None:
    device = Device(bytes(range(32)))
    device.send_packet(ipv4_udp("10.0.0.1", "10.77.0.1"), 1.0)
    device.send_packet(ipv4_udp("10.0.0.1", "10.77.0.1"), 1.0)
    device.send_packet(ipv6_udp("fd00::1", "fd00::99"), 1.0)
    device.send_packet(b"\x00" * 20, 1.0)  # not IP: counted, no addresses
    tally = device.drop_addresses[(None, DropReason.NO_PEER)]
    assert tally.destinations.top() == [Counted("10.77.0.1", 2), Counted("fd00::99", 1)]
    assert tally.sources.top() == [Counted("10.0.0.1", 2), Counted("fd00::1", 1)]
    assert device.drop_counts[(None, DropReason.NOT_IP)] == 1
    assert (None, DropReason.NOT_IP) not in device.drop_addresses
