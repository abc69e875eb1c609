"""One asyncio timer kept at a Device's next deadline, shared by every adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wgpy.device import Device


class DeviceTimer:
    """Keeps a single ``loop.call_at`` armed at ``device.get_timer()``.

    Call :meth:`update` after every batch of inputs; ``fire`` runs when the deadline comes (it
    should call ``device.handle_timer(now)`` and flush), or earlier: the call is moved only
    when the deadline comes closer, so a fire may find nothing due. asyncio's ``loop.time()`` is
    ``time.monotonic()`` on Linux, the clock the Device is fed with.
    """

    def __init__(self, device: Device, fire: Callable[[], None]) -> None:
        self._device = device
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def update(self, loop: asyncio.AbstractEventLoop | None) -> None:
        deadline = self._device.get_timer()
        at = self._at
        if at is not None and (deadline is None or deadline >= at):
            # The armed call is not later than needed: keep it. Traffic mostly pushes the
            # next deadline later, and re-arming on every packet costs a cancel and a
            # call_at; an early wakeup finds nothing due and arms the real deadline.
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
