"""Removing the bytes of deleted nodes, once their delete has committed.

A delete is a database transaction; its nodes' bytes go only after it commits (a rolled-back
delete keeps them), in the background: the answer does not wait for the files. The server waits
for the removals still running when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..logs import logger
from .store import BlobStore

__all__ = ["DataCleanup"]


class DataCleanup:
    """Removes deleted nodes' bytes from ``blobs`` in the background."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._running: set[asyncio.Task[None]] = set()

    def remove(self, node_ids: Sequence[str]) -> None:
        """Start removing the bytes of ``node_ids`` (called once their delete committed)."""
        if not node_ids:
            return
        task = asyncio.get_running_loop().create_task(self._remove(list(node_ids)))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _remove(self, node_ids: list[str]) -> None:
        try:
            await self.blobs.remove(node_ids)
        except Exception:
            logger.exception("Removing the data of %d deleted nodes failed", len(node_ids))

    async def wait(self) -> None:
        """Wait for the removals started so far."""
        while self._running:
            await asyncio.gather(*self._running)
