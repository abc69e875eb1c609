"""One asyncio timer kept at a Device's next deadline, shared by every adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wgpy.device import Device


class DeviceTimer:
    """Keeps a single ``loop.call_at`` armed at ``device.get_timer()``.

    Call :meth:`update` after every batch of inputs; ``fire`` runs when the deadline comes (it
    should call ``device.handle_timer(now)`` and flush). asyncio's ``loop.time()`` is
    ``time.monotonic()`` on Linux, the clock the Device is fed with.
    """

    def __init__(self, device: Device, fire: Callable[[], None]) -> None:
        self._device = device
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def update(self, loop: asyncio.AbstractEventLoop | None) -> None:
        deadline = self._device.get_timer()
        if deadline == self._at:
            return
        self.cancel()
        if deadline is not None and loop is not None:
            self._handle = loop.call_at(deadline, self._expired)
            self._at = deadline

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None

    def _expired(self) -> None:
        self._handle = None
        self._at = None
        self._fire()
