"""wgpy: WireGuard in Python with exact, explainable cryptokey routing."""

__version__ = "0.1.0"

# The public library API (see docs/library.md). Submodules hold the details.
from wgpy.aio import EndpointClosed, WireGuardEndpoint, open_endpoint
from wgpy.allowedips import AllowedIPs
from wgpy.device import Device
from wgpy.events import DropReason, Event, PacketDropped
from wgpy.keys import decode_key, encode_key, genkey, genpsk, pubkey

__all__ = [
    "AllowedIPs",
    "Device",
    "DropReason",
    "EndpointClosed",
    "Event",
    "PacketDropped",
    "WireGuardEndpoint",
    "__version__",
    "decode_key",
    "encode_key",
    "genkey",
    "genpsk",
    "open_endpoint",
    "pubkey",
]
