"""``wgpy top`` and ``wgpy web`` against a real wgpyd that is dropping packets right now.

wgpyd in namespace A, a core-based peer in B (the setup of test_drop_addresses) sending inner
packets with a source it does not own. ``top --once`` must show the peer and the drops per
second with the spoofed address; ``top`` on a terminal must leave on q and on Ctrl-C with the
terminal restored; the page of ``wgpy web`` in headless Chromium (Debian's, driven by
Playwright) must show the peer table and the drops and answer the explain form; a screenshot
is kept in ``$WGPY_ARTIFACTS`` (default: artifacts/ in the checkout). A non-loopback listener
must refuse requests without its token; no response may hold key material.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from tests.netns.core_peer import icmp_echo
from tests.netns.harness import (
    Netns,
    genkey,
    genpsk,
    kill_process,
    pubkey,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    write_secret,
)
from tests.netns.test_drop_addresses import DUT_TUNNEL, PEER_TUNNEL, SPOOFED, Setup, setup

pytestmark = pytest.mark.netns

__all__ = ["setup"]  # the fixture: wgpyd in A, a core peer in B, a completed handshake

ROOT = Path(__file__).resolve().parents[2]
WGPY = (sys.executable, "-m", "wgpy.cli")


def artifacts() -> Path:
    path = Path(os.environ.get("WGPY_ARTIFACTS") or ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def spoof_until(setup: Setup, stop: threading.Event, period: float = 0.1) -> threading.Thread:
    """Send a packet with a spoofed source every ``period`` seconds until ``stop`` is set."""

    def run() -> None:
        seq = 0
        while not stop.is_set():
            setup.core.encrypt(icmp_echo(SPOOFED[0], DUT_TUNNEL, 0x61, seq))
            seq += 1
            stop.wait(period)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def spoofing(setup: Setup) -> Iterator[Setup]:
    stop = threading.Event()
    thread = spoof_until(setup, stop)
    wait_for(lambda: setup.disallowed() >= 3 or None, 5, what="the first drops")
    try:
        yield setup
    finally:
        stop.set()
        thread.join(5)


def secrets_of(setup: Setup) -> list[str]:
    private = setup.dut.private_key
    return [private, base64.b64decode(private).hex()]


# ------------------------------------------------------------------------------------ top


def test_top_once_shows_the_peer_and_its_drops_per_second(spoofing: Setup) -> None:
    setup = spoofing
    env = {**os.environ, "COLUMNS": "80", "LINES": "24"}
    argv = [*WGPY, "top", setup.dut.ifname, "--once", "--interval", "2"]
    frame = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=True)
    lines = frame.stdout.splitlines()
    assert len(lines) <= 24 and all(cell_len(line) <= 80 for line in lines), frame.stdout
    assert lines[0].startswith(f"wgpy top {setup.dut.ifname}: 1 peer, port 51820, rates over 2.")
    (peer,) = [line for line in lines if line.startswith(setup.core.public_b64[:10])]
    # the core peer's endpoint, a handshake seconds ago, and about 10 drops a second
    assert "10.98.0.2:" in peer, peer
    assert peer.split()[2].endswith("s"), peer
    assert 4.0 <= float(peer.split()[-1]) <= 12.5, peer
    (drops,) = [line for line in lines if "disallowed_source" in line]
    rate, total = drops.split()[:2]
    assert 4.0 <= float(rate) <= 12.5, drops
    assert int(total) <= setup.disallowed()
    assert f"from {SPOOFED[0]}×" in drops, drops


def test_top_once_on_wireguard_go_says_it_has_no_drop_counters(
    netns_factory: Callable[[], Netns],
) -> None:
    ns = netns_factory()
    ifname = unique_ifname("wgg")
    start_wireguard_go(ns, ifname)
    peer = pubkey(genkey())
    wg(ns, "set", ifname, "listen-port", "51999", "peer", peer, "allowed-ips", "10.1.2.0/24")
    wg(ns, "set", ifname, "peer", peer, "endpoint", "192.0.2.9:51820")
    env = {**os.environ, "COLUMNS": "80", "LINES": "24"}
    argv = [*WGPY, "top", ifname, "--once", "--interval", "0.2"]
    frame = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=True)
    lines = frame.stdout.splitlines()
    assert lines[0].startswith(f"wgpy top {ifname}: 1 peer, port 51999, rates over 0.2"), lines
    (row,) = [line for line in lines if line.startswith(peer[:10])]
    assert row.split()[1:3] == ["192.0.2.9:51820", "never"], row
    assert "drops: not a wgpyd interface (no drop counters)" in lines


def _read_until(fd: int, marker: bytes, count: int, timeout: float = 15.0) -> bytes:
    """Output of the pty until ``marker`` was seen ``count`` times."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(marker) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {marker!r}; got {data[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            data += chunk
    return data


@pytest.mark.parametrize("leave", ["q", "ctrl-c", "sigterm"])
def test_top_live_leaves_cleanly(spoofing: Setup, leave: str) -> None:
    setup = spoofing
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    echo_before = termios.tcgetattr(slave)[3] & termios.ECHO
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [*WGPY, "top", setup.dut.ifname, "--interval", "0.5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    try:
        screen = _read_until(master, b"q: quit", 3)  # three frames: rates after the first
        last = screen.rsplit(b"\x1b[H\x1b[2J", 1)[1].decode()
        assert "disallowed_source" in last and f"from {SPOOFED[0]}" in last, last
        assert all(cell_len(line) <= 80 for line in last.splitlines()), last
        if leave == "q":
            os.write(master, b"q")
        else:
            os.killpg(proc.pid, signal.SIGINT if leave == "ctrl-c" else signal.SIGTERM)
        assert proc.wait(5) == 0
        rest = _read_until(master, b"\x1b[?1049l", 1, timeout=5)
        assert rest.endswith(b"\x1b[?25h\x1b[?1049l"), rest[-200:]  # screen and cursor back
        assert b"Traceback" not in screen + rest
        assert termios.tcgetattr(slave)[3] & termios.ECHO == echo_before
    finally:
        if proc.poll() is None:
            kill_process(proc)
        os.close(master)
        os.close(slave)


# ------------------------------------------------------------------------------------ map


def test_map_of_a_live_interface_shows_its_address_and_routes(setup: Setup) -> None:
    ifname = setup.dut.ifname
    svg = setup.a.run(*WGPY, "map", ifname).stdout
    root = ET.fromstring(svg.encode())
    titles = [el.text or "" for el in root.iter("{http://www.w3.org/2000/svg}title")]
    assert f"Address {DUT_TUNNEL}" in titles
    assert "route 10.101.0.0/24 into the interface" in titles  # the kernel's connected route
    assert f"{PEER_TUNNEL}/32: peer (no # Name) ({setup.core.public_b64})" not in titles
    assert (
        f"{PEER_TUNNEL}/32: peer {setup.core.public_b64[:10]}… ({setup.core.public_b64})" in titles
    )
    for secret in secrets_of(setup):
        assert secret not in svg
    # outside the interface's namespace: the peers only, and the legend says why
    elsewhere = subprocess.run(
        [*WGPY, "map", ifname], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "the interface is not in this netns" in elsewhere and DUT_TUNNEL not in elsewhere


# ------------------------------------------------------------------------------------ web


def start_web(argv: list[str], ns: Netns | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``wgpy web ...`` with port 0; returns the process and the URL it prints."""
    full = [*WGPY, "web", *argv]
    if ns is not None:
        proc = ns.popen(*full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    else:
        proc = subprocess.Popen(
            full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().decode() if ready else ""
    if "serving on " not in line:
        kill_process(proc)
        assert proc.stderr is not None
        pytest.fail(f"wgpy web did not start: {line!r} {proc.stderr.read().decode()!r}")
    url = re.search(r"serving on (http://\S+?/)", line)
    assert url is not None, line
    return proc, url.group(1)


def test_web_page_in_chromium(spoofing: Setup) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run scripts/setup.sh"
    setup = spoofing
    core = setup.core.public_b64
    # the UAPI socket is a file: the page is served from this namespace, where the browser is
    proc, url = start_web([setup.dut.ifname, "--listen", "127.0.0.1:0"])
    bodies: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})

                def keep(response: Any) -> None:
                    # a response without a body (redirect, aborted) has nothing to check
                    with contextlib.suppress(Exception):
                        bodies.append(response.text())

                page.on("response", keep)
                # nothing the page asks for may fail (a missing favicon is a 404 in the console)
                failures: list[str] = []
                page.on(
                    "response",
                    lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None,
                )
                page.on(
                    "console",
                    lambda m: failures.append(f"console: {m.text}") if m.type == "error" else None,
                )
                page.goto(url)
                page.wait_for_selector(f"#peers tr.peer:has-text('{core}')", timeout=15000)
                # no --names: the peer is labelled by its short key, as wgpy top shows it
                label = page.locator("#peers tr.peer td").first.inner_text()
                assert label.splitlines()[0] == core[:10] + "…", label
                icon = page.evaluate(
                    "async () => (await fetch(document.querySelector('link[rel=icon]').href))"
                    ".headers.get('content-type')"
                )
                assert icon.startswith("image/svg+xml"), icon
                row = page.locator("#drops tr.drop", has_text="disallowed_source")
                row.wait_for(timeout=15000)
                assert SPOOFED[0] in row.inner_text()
                # a second refresh has rates: the drops per second are shown as a number
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#drops tr.drop')].some("
                    "r => r.cells[3].textContent !== '-')",
                    timeout=15000,
                )
                page.select_option("#direction", "from")
                page.fill("#address", SPOOFED[0])
                page.fill("#peer", core)
                page.click("#explain-submit")
                result = page.locator("#explain-result[data-verdict]")
                result.wait_for(timeout=15000)
                assert result.get_attribute("data-verdict") == "dropped"
                assert f"from {SPOOFED[0]} via peer {core}" in result.inner_text()
                page.select_option("#direction", "to")
                page.fill("#address", PEER_TUNNEL)
                page.click("#explain-submit")
                page.wait_for_function(
                    "() => document.getElementById('explain-result').dataset.verdict === 'sent'",
                    timeout=15000,
                )
                assert f"SENT to peer {core} via {PEER_TUNNEL}/32" in result.inner_text()
                # served from another namespace than the interface's: said, not guessed
                assert "the OS route was not checked" in result.inner_text()
                page.wait_for_function(
                    "() => document.getElementById('map').naturalWidth > 0", timeout=15000
                )
                page.screenshot(path=str(artifacts() / "wgpy-web.png"), full_page=True)
                assert not failures, failures
            finally:
                browser.close()
    finally:
        kill_process(proc)
    assert len(bodies) >= 5
    for secret in secrets_of(setup):
        assert not [b for b in bodies if secret in b]


def _get(ns: Netns, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A GET from inside ``ns`` (status, body)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "request = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))\n"
        "try:\n"
        "    with urllib.request.urlopen(request, timeout=10) as response:\n"
        "        print(response.status); print(response.read().decode())\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code); print(error.read().decode())\n"
    )
    out = ns.run(sys.executable, "-c", script, url, json.dumps(headers or {})).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def test_non_loopback_listener_requires_its_token(
    setup: Setup, netns_factory: Callable[[], Netns]
) -> None:
    # the server in one namespace, its clients in another, joined by a veth pair
    ns, client = netns_factory(), netns_factory()
    veth_pair(ns, client, "10.97.0.1", "10.97.0.2", 24)
    ifname = setup.dut.ifname
    # a preshared key on the peer now (the session already made goes on): it must not leak
    psk = genpsk()
    setup.dut.add_peer(
        setup.core.public_b64, f"{PEER_TUNNEL}/32", psk_file=write_secret(ns, "psk", psk)
    )
    secrets = [*secrets_of(setup), psk, base64.b64decode(psk).hex()]
    refused = ns.run(*WGPY, "web", ifname, "--listen", "10.97.0.1:0", check=False)
    assert refused.returncode == 2 and "without --token" in refused.stderr
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    proc, url = start_web([ifname, "--listen", "10.97.0.1:0", "--token", token], ns)
    try:
        assert url.startswith("http://10.97.0.1:")
        for path in ("", "api/state", "map.svg", f"api/explain?address={PEER_TUNNEL}"):
            assert _get(client, url + path)[0] == 401, path
            assert _get(client, url + path + ("&" if "?" in path else "?") + "token=x")[0] == 401
        status, body = _get(client, url + "api/state?token=" + token)
        assert status == 200 and json.loads(body)["peers"][0]["public_key"] == setup.core.public_b64
        status, body = _get(client, url + "api/state", {"Authorization": f"Bearer {token}"})
        assert status == 200
        for path in ("", "app.js", "map.svg", f"api/explain?address={PEER_TUNNEL}"):
            query = ("&" if "?" in path else "?") + "token=" + token
            status, body = _get(client, url + path + query)
            assert status == 200, (path, body)
            for secret in secrets:
                assert secret not in body, path
        state = json.loads(_get(client, url + "api/state?token=" + token)[1])
        assert state["peers"][0]["preshared_key"] is True  # said to be set, never shown
    finally:
        kill_process(proc)
