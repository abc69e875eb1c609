"""Where the daemon's events go: the JSON log, pcapng captures and Prometheus metrics.

Used by both faces of the data path (``wgpy.io.runner`` for wgpyd, ``wgpy.aio`` for embedding)
and by ``wgpy watch``; imports only the core.
"""
