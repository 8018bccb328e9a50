"""The status service: a unary snapshot and a server-streaming watch."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator

import anyio
from grpclib import GRPCError, Status

from ..._version import __version__
from ...proto import GetStatusRequest, ServerStatus, StatusServiceBase, WatchStatusRequest
from ..state import Metrics
from .auth import current_call

__all__ = ["StatusService"]

DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0


class StatusService(StatusServiceBase):
    """Reports the server's version, uptime, load and counters.

    ``closing`` is set when the server stops: open watches then end with ``UNAVAILABLE``.
    """

    def __init__(self, metrics: Metrics, closing: asyncio.Event) -> None:
        self._metrics = metrics
        self._closing = closing

    async def get_status(self, message: GetStatusRequest) -> ServerStatus:
        """A snapshot of the server's status."""
        return self._snapshot(sequence=0)

    async def watch_status(self, message: WatchStatusRequest) -> AsyncIterator[ServerStatus]:
        """Updates every ``interval_seconds`` (bounded), ``max_updates`` of them (0: forever)."""
        interval = _interval(message.interval_seconds)
        sequence = 0
        call = current_call.get()
        while True:
            sequence += 1
            if sequence > 1 and not await call.still_valid():  # logged out, revoked, expired
                raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")
            yield self._snapshot(sequence)
            if sequence == message.max_updates:
                return
            with anyio.move_on_after(interval):
                await self._closing.wait()
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")

    def _snapshot(self, sequence: int) -> ServerStatus:
        return ServerStatus(
            version=__version__,
            uptime_seconds=self._metrics.uptime_seconds,
            load_average=os.getloadavg()[0],
            requests_served=self._metrics.requests_served,
            active_streams=self._metrics.active_streams,
            sequence=sequence,
        )


def _interval(requested: float) -> float:
    if math.isnan(requested) or requested < 0:
        raise GRPCError(Status.INVALID_ARGUMENT, "interval_seconds must be 0 or positive")
    if requested == 0:
        return DEFAULT_INTERVAL
    return min(max(requested, MIN_INTERVAL), MAX_INTERVAL)
