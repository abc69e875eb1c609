"""``wgpy web IF|CONF``: a small read-only page served locally.

The peer table with live counters and rates, the drops with their addresses, the AllowedIPs
map (:mod:`wgpy.tools.files.aipmap`) and an explain form answered by
:mod:`wgpy.tools.files.explain`, the engine of ``wgpy explain``. Served by aiohttp: asyncio
like the daemon, one dependency (its own server, no separate ASGI server), well kept, and
its ``web.Application`` parses HTTP so wgpy never does. The page is one static HTML file and
one script (:mod:`wgpy.tools.interface.web_page`), no build step.

Safety: loopback by default; any other address only with ``--token``, which every request
must then carry (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``, compared in constant
time). Without a token, a request whose ``Host`` is not a loopback name is refused (a DNS
rebinding page cannot read the interface through the user's browser). Only GET. Nothing a
response holds is secret: the view of a live interface carries only whether a private key is
set, and a config's private and preshared keys are never read into a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wgpy.config import Config, load
from wgpy.events import explaining_address
from wgpy.exit_status import Failed, Unreadable, interface_message
from wgpy.tools.interface.live import is_config_path
from wgpy.tools.interface.show import InterfaceView, PeerView, short_key
from wgpy.tools.interface.top import Reading, rates

__all__ = ["WebError", "make_app", "serve"]


class WebError(ValueError):
    """The server cannot start as asked (bad address, non-loopback without a token)."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [addr]:port) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebError(f"--listen {text!r}: give HOST:PORT (IPv6 as [ADDR]:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Target:
    """What the page shows: a live interface (read at each request) or a config file."""

    name: str
    is_config: bool
    names: dict[str, str]
    before: Reading | None = None
    #: ``--net`` inputs: the network view (``wgpy net map``) is drawn from them at each request
    net: list[str] = field(default_factory=list)

    def config(self) -> Config:
        return load(self.name)

    def read(self) -> Reading:
        if self.is_config:
            return Reading(_config_view(self.config()), time.monotonic(), time.time())
        from wgpy.tools.interface.live import interface_view

        view, _pairs = interface_view(self.name)
        return Reading(view, time.monotonic(), time.time())


def _config_view(config: Config) -> InterfaceView:
    """A config as the page's view: peers with endpoints and AllowedIPs, no counters."""
    view = InterfaceView(config.filename)
    for section in config.peers:
        if section.public_key is None:
            continue
        peer = PeerView(section.public_key.text)
        peer.preshared_key = section.preshared_key is not None
        peer.endpoint = section.endpoint.text if section.endpoint else None
        peer.allowed_ips = [v.text for v in section.allowed_ips]
        view.peers.append(peer)
    return view


def _label(target: Target, key: str) -> str:
    """A peer's ``# Name``, else its short key (as ``wgpy top`` and the map show it)."""
    return target.names.get(key) or short_key(key)


def state_json(target: Target, now: Reading) -> dict[str, Any]:
    """The page's data: peers with counters and rates, drops with rates and addresses."""
    _span, traffic, drop_rates = rates(target.before, now)
    view = now.view
    peers = []
    for peer in view.peers:
        rx, tx = traffic.get(peer.public_key, (None, None))
        peers.append(
            {
                "public_key": peer.public_key,
                "name": target.names.get(peer.public_key),
                "label": _label(target, peer.public_key),
                "endpoint": peer.endpoint,
                "allowed_ips": peer.allowed_ips,
                "latest_handshake_age": None
                if not peer.latest_handshake
                else int(now.wall) - peer.latest_handshake,
                "rx_bytes": peer.rx_bytes,
                "tx_bytes": peer.tx_bytes,
                "rx_rate": rx,
                "tx_rate": tx,
                "preshared_key": peer.preshared_key,  # whether one is set, never its value
            }
        )
    drops = []
    for (peer_key, reason), count in sorted(
        (view.drops or {}).items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1])
    ):
        key = (peer_key, reason)
        drops.append(
            {
                "peer": peer_key,
                "name": target.names.get(peer_key or ""),
                "label": "(interface)" if peer_key is None else _label(target, peer_key),
                "reason": reason,
                "count": count,
                "rate": drop_rates.get(key),
                "sources": [vars(e) for e in view.sources.get(key, [])],
                "destinations": [vars(e) for e in view.destinations.get(key, [])],
                "explained_by": explaining_address(reason),  # the side the page lists first
            }
        )
    return {
        "target": target.name,
        "kind": "config" if target.is_config else "interface",
        "public_key": view.public_key,
        "listen_port": view.listen_port,
        "peers": peers,
        "drops": None if view.drops is None else drops,
        "kernel": view.kernel,
        "network": bool(target.net),
    }


def explain_json(target: Target, query: dict[str, str]) -> dict[str, Any]:
    """The answer of ``wgpy explain`` to the form's question (raises ExplainError)."""
    from wgpy.tools.files.explain import ExplainError, Source, explain_from, explain_to, render_text

    direction = query.get("direction", "to")
    address = query.get("address", "").strip()
    peer = query.get("peer", "").strip()
    if target.is_config:
        source = Source.from_config(target.config())
    else:
        from wgpy.io.uapi_client import interface_get

        pairs, _ = interface_get(target.name)
        source = Source.from_uapi(target.name, pairs)
        source.names = dict(target.names)
    if direction == "to":
        route = None
        if not target.is_config:
            route = _route(target.name, address)
        result = explain_to(source, address, route)
        if not target.is_config and route is None:
            result["reasons"].append(
                "(the OS route was not checked: the interface is not in the network namespace "
                "wgpy web runs in)"
            )
    elif direction == "from":
        if not peer:
            raise ExplainError("from ADDRESS via PEER: give the peer (key, key prefix or name)")
        result = explain_from(source, address, peer)
    else:
        raise ExplainError(f"direction {direction!r}: to or from")
    result["text"] = render_text(result, source)
    return result


def _route(ifname: str, address: str) -> Any:
    """The OS route lookup when the interface is in this namespace (as ``wgpy explain``)."""
    from wgpy.tools.interface.routes import interface_exists, route_get

    try:
        ipaddress.ip_address(address)
        return route_get(address) if interface_exists(ifname) else None
    except (ValueError, OSError):
        return None


def map_svg(target: Target) -> str:
    from wgpy.tools.files.aipmap import build_sides, render_svg
    from wgpy.tools.interface.live import map_target

    config, live = map_target(target.name)
    return render_svg(build_sides([config], [live], target.names))


# ------------------------------------------------------------------------------ the server


def _authorised(request: web.Request, token: str | None) -> bool:
    if token is None:
        host = request.host
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return is_loopback(name)
    given = request.query.get("token")
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header[len("Bearer ") :]
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


#: the icon, served to any request: a browser asks for /favicon.ico by itself, without the
#: page's token, and it holds nothing about the interface
_PUBLIC = ("/favicon.ico", "/favicon.svg")


def make_app(target: Target, token: str | None) -> web.Application:
    from wgpy.tools.interface.web_page import FAVICON, PAGE, SCRIPT

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        if request.path not in _PUBLIC and not _authorised(request, token):
            raise web.HTTPUnauthorized(text="wgpy web: a valid token is required\n")
        response: web.StreamResponse = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        return response

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.Response:
        return web.Response(text=SCRIPT, content_type="application/javascript")

    async def icon(_request: web.Request) -> web.Response:
        return web.Response(text=FAVICON, content_type="image/svg+xml")

    async def state(_request: web.Request) -> web.Response:
        try:
            now = await asyncio.to_thread(target.read)
        except OSError as error:
            return web.json_response({"error": str(error.strerror or error)}, status=503)
        result = state_json(target, now)
        target.before = now
        return web.json_response(result)

    async def explain(request: web.Request) -> web.Response:
        from wgpy.config import ConfigError
        from wgpy.tools.files.explain import ExplainError

        try:
            result = await asyncio.to_thread(explain_json, target, dict(request.query))
        except (ExplainError, ConfigError) as error:
            return web.json_response({"error": str(error)}, status=400)
        except OSError as error:
            return web.json_response({"error": str(error.strerror or error)}, status=503)
        return web.json_response(result)

    async def svg(_request: web.Request) -> web.Response:
        try:
            text = await asyncio.to_thread(map_svg, target)
        except (OSError, ValueError) as error:
            return web.Response(text=f"map: {error}\n", status=503)
        return web.Response(text=text, content_type="image/svg+xml")

    async def network(_request: web.Request) -> web.Response:
        if not target.net:
            return web.Response(text="wgpy web: started without --net\n", status=404)
        try:
            text = await asyncio.to_thread(net_svg, target.net)
        except ValueError as error:
            return web.Response(text=f"net: {error}\n", status=503)
        return web.Response(text=text, content_type="image/svg+xml")

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/app.js", script)
    for path in _PUBLIC:
        app.router.add_get(path, icon)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/explain", explain)
    app.router.add_get("/map.svg", svg)
    app.router.add_get("/net.svg", network)
    return app


def net_svg(inputs: list[str]) -> str:
    """The network view of ``wgpy net map`` over the inputs as they are now; ValueError
    with the one-line reason when an input cannot be read."""
    from wgpy.net.check import check
    from wgpy.tools.network.net_cli import InputError, load_network
    from wgpy.tools.network.netmap import render_svg

    try:
        return render_svg(check(load_network(inputs)))
    except InputError as error:
        raise ValueError(str(error)) from None


def make_target(name: str, names_file: str | None, net: list[str] | None = None) -> Target:
    """The page's target; raises ConfigError for an unreadable config, Unreadable for an
    interface that cannot be read."""
    if is_config_path(name):
        config = load(name)
        names = config.peer_names()
        if names_file:
            names |= load(names_file).peer_names()
        return Target(name, True, names, net=list(net or []))
    names = load(names_file).peer_names() if names_file else {}
    target = Target(name, False, names, net=list(net or []))
    try:
        target.read()
    except OSError as error:
        raise Unreadable(interface_message(name, error)) from None
    return target


def serve(
    name: str,
    listen: str,
    *,
    token: str | None,
    names_file: str | None,
    net: list[str] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; prints the address (with the port the OS picked for
    port 0) once listening."""
    host, port = parse_listen(listen)
    if not is_loopback(host) and not token:
        raise WebError(
            f"refusing to listen on {host}, which is not a loopback address, without --token "
            "(anyone who reaches it could read the interface)"
        )
    target = make_target(name, names_file, net)
    if target.net:
        try:
            net_svg(target.net)  # an unreadable input fails here, once, not on every request
        except ValueError as error:
            raise Unreadable(str(error)) from None
    return asyncio.run(_serve(make_app(target, token), host, port, token is not None))


async def _serve(app: web.Application, host: str, port: int, with_token: bool) -> int:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise Failed(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound = runner.addresses[0][1] if runner.addresses else port  # port 0: the one picked
    shown = f"[{host}]" if ":" in host else host
    note = " (add ?token=YOUR_TOKEN)" if with_token else ""
    sys.stdout.write(f"wgpy web: serving on http://{shown}:{bound}/{note}; Ctrl-C stops\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await runner.cleanup()
    return 0
