"""examples/echo_server.py (wgpy.aio, no TUN) reached by a real wireguard-go client, set up by wg.

Namespace A: wireguard-go with 10.200.0.2/24 and fd00:200::2/64 (plus 10.200.0.99, which the
server does not allow). Namespace B: the Python echo server on 10.99.0.2:51820 with tunnel
addresses 10.200.0.1 and fd00:200::1 that exist only inside the Python process.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from tests.netns.harness import (
    Netns,
    genkey,
    ping,
    pubkey,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)
from wgpy.config import Config, parse_config
from wgpy.keys import decode_key
from wgpy.keys import genkey as wgpy_genkey
from wgpy.keys import pubkey as wgpy_pubkey

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "echo_server.py"
PORT = 51820


def client_config(output: str) -> Config:
    """The wg-quick config the server printed after its JSON line."""
    lines = output.splitlines()
    start = lines.index("[Interface]")
    end = next(i for i, line in enumerate(lines) if line.startswith("# then from the client"))
    return parse_config("\n".join(lines[start:end]) + "\n", "printed")


UDP_ECHO_CLIENT = r"""
import socket, sys
for host in sys.argv[1:]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        message = ("hello " + host).encode()
        for _ in range(3):
            s.sendto(message, (host, 7))
            try:
                data, _ = s.recvfrom(2048)
                break
            except TimeoutError:
                continue
        else:
            sys.exit("no UDP echo from " + host)
        assert data == message, data
        print("echo ok", host)
"""


def test_wireguard_go_client_pings_and_udp_echoes_the_python_server(
    netns_factory: Callable[[], Netns],
) -> None:
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.99.0.1", "10.99.0.2", 24, addr6_a="fd99::1", addr6_b="fd99::2")

    server_key, client_key = genkey(), genkey()
    key_file = write_secret(server, "server.key", server_key)
    out_path = server.workdir / "echo_server.log"
    with out_path.open("wb") as out:
        proc = server.popen(
            sys.executable,
            str(EXAMPLE),
            "--private-key-file",
            str(key_file),
            "--peer",
            pubkey(client_key),
            "--port",
            str(PORT),
            "--allowed-ips",
            "10.200.0.2/32,fd00:200::2/128",
            "--address",
            "10.200.0.1,fd00:200::1",
            "--public-host",
            "10.99.0.2",
            stdout=out,
            stderr=out,
        )
    ready = wait_for(
        lambda: "# then from the client" in out_path.read_text() or proc.poll() is not None,
        15,
        what="echo server's client config",
    )
    output = out_path.read_text()
    assert ready and proc.poll() is None, output
    first = json.loads(output.splitlines()[0])
    assert first == {"public_key": pubkey(server_key), "port": PORT}
    assert server_key not in output  # the server's private key is never printed
    # the printed client config says what the client needs
    config = client_config(output)
    assert config.interface is not None
    assert [v.text for v in config.interface.addresses] == ["10.200.0.2/32", "fd00:200::2/128"]
    (server_peer,) = config.peers
    assert server_peer.public_key is not None and server_peer.endpoint is not None
    assert server_peer.public_key.text == first["public_key"]
    assert server_peer.endpoint.text == f"10.99.0.2:{PORT}"
    assert [v.text for v in server_peer.allowed_ips] == ["10.200.0.1/32", "fd00:200::1/128"]

    ifname = unique_ifname("wga")
    start_wireguard_go(client, ifname)
    wg(
        client,
        "set",
        ifname,
        "private-key",
        str(write_secret(client, "client.key", client_key)),
        "peer",
        server_peer.public_key.text,
        "endpoint",
        server_peer.endpoint.text,
        "allowed-ips",
        "10.200.0.0/24,fd00:200::/64",
    )
    client.run("ip", "addr", "add", "10.200.0.2/24", "dev", ifname)
    client.run("ip", "addr", "add", "10.200.0.99/24", "dev", ifname)
    client.run("ip", "-6", "addr", "add", "fd00:200::2/64", "dev", ifname, "nodad")
    client.run("ip", "link", "set", ifname, "up")

    result = ping(client, "10.200.0.1", count=3, wait=3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0% packet loss" in result.stdout
    result6 = ping(client, "fd00:200::1", count=3, wait=3)
    assert result6.returncode == 0, result6.stdout + result6.stderr

    udp = client.run(sys.executable, "-c", UDP_ECHO_CLIENT, "10.200.0.1", "fd00:200::1")
    assert udp.stdout.split("\n")[:2] == ["echo ok 10.200.0.1", "echo ok fd00:200::1"]

    # a source the server does not allow for this peer: dropped by the Python server
    bad = client.run("ping", "-c", "2", "-W", "1", "-I", "10.200.0.99", "10.200.0.1", check=False)
    assert bad.returncode != 0

    dump = wg_dump(client, ifname)
    peer = dump.peers[first["public_key"]]
    assert peer.latest_handshake > 0 and peer.rx_bytes > 0

    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    lines = out_path.read_text().splitlines()
    summary = json.loads(lines[-1])
    assert proc.returncode == 0, lines
    assert summary["handshakes"] >= 1
    assert summary["answered"] == 3 + 3 + 2
    assert summary["drops"] == {"disallowed_source": 2}
    assert summary["drop_counts"] == {"disallowed_source": 2}
    # what wireguard-go counted as sent is what the server counted as received, and back
    assert summary["rx_bytes"] == peer.tx_bytes
    assert summary["tx_bytes"] == peer.rx_bytes


def _example(*args: str, python: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(python or [sys.executable]), str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


def test_runs_from_a_checkout_without_wgpy_installed() -> None:
    # -S: no site processing, so the editable install of wgpy is not seen, only its
    # dependencies (on PYTHONPATH): the script must find the wgpy of its checkout
    site_packages = sysconfig.get_paths()["purelib"]
    python = [sys.executable, "-S"]
    env_python = ["env", f"PYTHONPATH={site_packages}", *python]
    probe = subprocess.run([*env_python, "-c", "import wgpy"], capture_output=True, cwd="/")
    assert probe.returncode != 0, "wgpy importable without the checkout: the test proves nothing"
    result = _example("--help", python=env_python)
    assert result.returncode == 0, result.stderr
    assert "--peer" in result.stdout


def test_without_peer_prints_a_complete_client_config_and_no_server_key(tmp_path: Path) -> None:
    server_key = wgpy_genkey()
    key_file = tmp_path / "server.key"
    key_file.write_text(server_key + "\n")
    proc = subprocess.Popen(
        [
            *(sys.executable, str(EXAMPLE), "--port", "0"),
            *("--private-key-file", str(key_file), "--public-host", "192.0.2.7"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(14)]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=10)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output + err
    assert server_key not in output + err
    first = json.loads(lines[0])
    assert first["public_key"] == wgpy_pubkey(server_key)
    config = client_config(output)
    assert config.interface is not None and config.interface.private_key is not None
    client_private = config.interface.private_key.text
    decode_key(client_private)  # a real key, ready to paste
    assert client_private != server_key
    (peer,) = config.peers
    assert peer.endpoint is not None and peer.endpoint.text == f"192.0.2.7:{first['port']}"


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        result = _example("--port", str(port), "--peer", wgpy_pubkey(wgpy_genkey()))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == (
        f"echo_server: cannot listen on UDP port {port}: Address already in use "
        "(choose another with --port, or --port 0 for any)\n"
    )
    assert result.stdout == ""


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (["--peer", "not-a-key"], "echo_server: --peer is not a WireGuard key"),
        (["--allowed-ips", "10.0.0.0/33"], "echo_server: --allowed-ips: '10.0.0.0/33'"),
        (["--address", "10.8.0.300"], "echo_server: --address: '10.8.0.300'"),
        (
            ["--private-key-file", str(tmp_path / "missing.key")],
            f"echo_server: --private-key-file {tmp_path / 'missing.key'}: No such file",
        ),
    ]
    for args, start in cases:
        result = _example("--port", "0", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(start) and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
