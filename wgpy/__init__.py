"""wgpy: WireGuard in Python with exact, explainable cryptokey routing."""

__version__ = "0.1.0"
