"""``wgpy web`` on a config: the JSON the page reads, explain answered by the explain engine,
the token and Host checks, read-only, and no key material in any response. (The page in a
real browser against a real wgpyd: tests/netns/test_web_netns.py.)"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from wgpy.cli import main
from wgpy.config import load
from wgpy.tools.files.explain import Source, explain_from, explain_to
from wgpy.tools.interface.web import WebError, make_app, make_target, serve

GOLDEN = Path(__file__).parent / "golden"
PSK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """The map's hub config, with a preshared key for alice."""
    text = (GOLDEN / "map-hub.conf").read_text()
    text = text.replace("# Name = alice\n", f"# Name = alice\nPresharedKey = {PSK}\n")
    path = tmp_path / "hub.conf"
    path.write_text(text)
    return path


def secrets_of(path: Path) -> list[str]:
    found = re.findall(r"^(?:PrivateKey|PresharedKey) = (\S+)", path.read_text(), re.M)
    assert len(found) == 2
    return found


Call = Callable[[TestClient[Any, Any]], Awaitable[None]]


def with_client(path: Path, token: str | None, call: Call) -> None:
    async def run() -> None:
        app = make_app(make_target(str(path), None), token)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await call(client)

    asyncio.run(run())


def test_state_explain_and_map_without_secrets(hub: Path) -> None:
    source = Source.from_config(load(hub))
    bodies: list[str] = []

    async def call(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/app.js", "/map.svg", "/api/state"):
            response = await client.get(path)
            assert response.status == 200, path
            assert response.headers["Cache-Control"] == "no-store"
            bodies.append(await response.text())
        state = await (await client.get("/api/state")).json()
        assert [(p["name"], p["public_key"]) for p in state["peers"]] == [
            (source.names[k], k) for k in source.peers
        ]
        assert state["peers"][0]["preshared_key"] is True and state["drops"] is None
        questions = [
            ({"direction": "to", "address": "10.1.5.7"}, explain_to(source, "10.1.5.7")),
            (
                {"direction": "from", "address": "10.1.5.7", "peer": "alice"},
                explain_from(source, "10.1.5.7", "alice"),
            ),
        ]
        for query, expected in questions:
            response = await client.get("/api/explain", params=query)
            bodies.append(await response.text())
            answer = await response.json()
            assert answer["verdict"] == expected["verdict"]
            assert answer["reasons"] == expected["reasons"]
            assert answer["text"].startswith(f"{query['direction']} 10.1.5.7 ")
            assert f"on config {hub}: {expected['verdict'].upper()}" in answer["text"]
        assert answer["verdict"] == "dropped"  # 10.1.5.7 is bob's, not alice's
        bad = await client.get("/api/explain", params={"direction": "to", "address": "nope"})
        assert bad.status == 400 and "not an IP address" in (await bad.json())["error"]
        assert (await client.post("/api/state")).status == 405

    with_client(hub, None, call)
    assert "bob" in bodies[2] and "<svg" in bodies[2]
    for secret in secrets_of(hub):
        raw_hex = base64.b64decode(secret).hex()
        for body in bodies:
            assert secret not in body and raw_hex not in body


def test_token_required_on_every_request(hub: Path) -> None:
    async def call(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/api/state", "/map.svg", "/api/explain?address=10.0.0.2"):
            assert (await client.get(path)).status == 401, path
            assert (await client.get(path, params={"token": "wrong"})).status == 401
        ok = await client.get("/api/state", params={"token": "s3cret-token"})
        assert ok.status == 200
        bearer = await client.get("/api/state", headers={"Authorization": "Bearer s3cret-token"})
        assert bearer.status == 200

    with_client(hub, "s3cret-token", call)


def test_without_token_only_loopback_host_names(hub: Path) -> None:
    async def call(client: TestClient[Any, Any]) -> None:
        for host, status in (
            ("127.0.0.1:8787", 200),
            ("localhost:8787", 200),
            ("[::1]:8787", 200),
            ("rebound.example:8787", 401),
            ("192.0.2.1:8787", 401),
        ):
            response = await client.get("/api/state", headers={"Host": host})
            assert response.status == status, host

    with_client(hub, None, call)


def test_non_loopback_listener_needs_a_token(hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WebError, match="without --token"):
        serve(str(hub), "192.0.2.1:0", token=None, names_file=None)
    assert main(["web", str(hub), "--listen", "[2001:db8::1]:8787"]) == 2
    assert "not a loopback address, without --token" in capsys.readouterr().err


def test_peers_without_a_name_are_labelled_by_their_short_key(tmp_path: Path) -> None:
    """Without ``# Name`` comments (a live interface without --names), every peer is labelled
    by the short key ``wgpy top`` shows, in the state and in the map's legend."""
    from wgpy.tools.interface.show import short_key

    text = (GOLDEN / "map-hub.conf").read_text()
    bare = tmp_path / "bare.conf"
    bare.write_text("\n".join(line for line in text.splitlines() if "# Name" not in line))
    keys = [s.public_key.text for s in load(bare).peers if s.public_key is not None]
    bodies: dict[str, Any] = {}

    async def call(client: TestClient[Any, Any]) -> None:
        bodies["state"] = await (await client.get("/api/state")).json()
        bodies["map"] = await (await client.get("/map.svg")).text()

    with_client(bare, None, call)
    state = bodies["state"]
    assert [(p["name"], p["label"]) for p in state["peers"]] == [(None, short_key(k)) for k in keys]
    assert short_key(keys[0]) == keys[0][:10] + "…"
    assert "(no # Name)" not in bodies["map"]
    for key in keys:
        assert f'class="peer-name">{short_key(key)}</text>' in bodies["map"]
    # with names, the label is the name
    with_client(GOLDEN / "map-hub.conf", None, call)
    assert [p["label"] for p in bodies["state"]["peers"]] == ["alice", "bob", "carol"]


def test_favicon_is_served_without_a_token(hub: Path) -> None:
    """The browser asks for /favicon.ico by itself (no token, no 404 in the console); the
    page links its icon."""

    async def call(client: TestClient[Any, Any]) -> None:
        for path in ("/favicon.ico", "/favicon.svg"):
            response = await client.get(path)
            assert response.status == 200, path
            assert response.content_type == "image/svg+xml"
            assert (await response.text()).startswith("<svg")
        assert (await client.get("/", params={"token": "s3cret-token"})).status == 200
        page = await (await client.get("/", params={"token": "s3cret-token"})).text()
        assert '<link rel="icon" href="favicon.svg" type="image/svg+xml">' in page
        assert (await client.get("/api/state")).status == 401  # the rest still needs it

    with_client(hub, "s3cret-token", call)


def test_network_view_from_net_inputs(tmp_path: Path) -> None:
    from tests import net_scenarios

    paths = [str(p) for p in net_scenarios.hub_and_spoke_mistake().write(tmp_path)]
    seen: dict[str, Any] = {}

    async def run(net: list[str]) -> None:
        app = make_app(make_target(paths[0], None, net), None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            state = await (await client.get("/api/state")).json()
            response = await client.get("/net.svg")
            seen[str(bool(net))] = (state["network"], response.status, await response.text())

    asyncio.run(run(paths))
    asyncio.run(run([]))
    network, status, text = seen["True"]
    assert network is True and status == 200
    assert "3 hosts, 6 pairs: 4 reachable, 2 not" in text and "PrivateKey" not in text
    for secret in re.findall(r"^PrivateKey = (\S+)", Path(paths[1]).read_text(), re.M):
        assert secret not in text
    assert seen["False"][:2] == (False, 404)


def test_unreadable_net_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests import net_scenarios

    paths = [str(p) for p in net_scenarios.healthy_hub(2).write(tmp_path)]
    assert main(["web", paths[0], "--net", *paths, str(tmp_path / "gone.conf")]) == 2
    assert "gone.conf" in capsys.readouterr().err
