"""wgpy: WireGuard in Python with exact, explainable cryptokey routing."""

__version__ = "0.1.0"

# The public library API (see docs/library.md). Submodules hold the details.
from wgpy.aio import EndpointClosed, WireGuardEndpoint, open_endpoint
from wgpy.allowedips import AllowedIPs
from wgpy.config import Config, ConfigError, format_config, parse_config
from wgpy.config import load as load_config
from wgpy.device import Device
from wgpy.events import DropReason, Event, PacketDropped
from wgpy.keys import decode_key, encode_key, genkey, genpsk, pubkey
from wgpy.tools.files.calc import difference as allowed_ips_difference

__all__ = [
    "AllowedIPs",
    "Config",
    "ConfigError",
    "Device",
    "DropReason",
    "EndpointClosed",
    "Event",
    "PacketDropped",
    "WireGuardEndpoint",
    "__version__",
    "allowed_ips_difference",
    "decode_key",
    "encode_key",
    "format_config",
    "genkey",
    "genpsk",
    "load_config",
    "open_endpoint",
    "parse_config",
    "pubkey",
]
