"""Removing the bytes of deleted nodes: once their delete has committed, and by a sweep.

A delete is a database transaction; its nodes' bytes go only after it commits (a rolled-back
delete keeps them), in the background: the answer does not wait for the files. The server waits
for the removals still running when it stops.

What that misses (a block written while its node was being deleted, a crash between a delete's
commit and its removal, a temporary file left by a crash mid-write) the sweep removes
(:meth:`DataCleanup.sweep`, at the server's start and every :data:`SWEEP_INTERVAL_SECONDS`):
the directory of every node no longer in the database (nor server object of a session, see
:mod:`..tickets`, whose data is laid out as a node's), and every temporary file, once untouched
for :data:`SWEEP_GRACE_SECONDS`. The database is asked after the directories are listed, and a
directory touched within the grace period is kept, so that a node being created (its bytes
written before its transaction commits) or a write in progress is never swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..catalog.models import Node
from ..logs import logger
from ..tickets.models import TicketObject
from .store import FAMILY_PREFIXES, TEMPORARY_SUFFIX, BlobStore

__all__ = ["SWEEP_GRACE_SECONDS", "SWEEP_INTERVAL_SECONDS", "DataCleanup", "Swept"]

SWEEP_INTERVAL_SECONDS = 3600.0
"""How often the server sweeps its store."""
SWEEP_GRACE_SECONDS = 3600.0
"""How long a node's directory or a temporary file must have been untouched to be swept."""
_IDS_PER_QUERY = 500
_MOST_ORPHANS = 0.5
"""A sweep that would remove more than this share of the data directories removes none."""


@dataclass(frozen=True)
class Swept:
    """What a sweep removed: how many directories of nodes gone, how many temporary files."""

    directories: int
    temporary_files: int


class DataCleanup:
    """Removes deleted nodes' bytes from ``blobs`` in the background; with ``sessions`` (the
    catalog's database), also sweeps what no node owns any more (:meth:`sweep`)."""

    def __init__(
        self, blobs: BlobStore, sessions: async_sessionmaker[AsyncSession] | None = None
    ) -> None:
        self.blobs = blobs
        self.sessions = sessions
        self._running: set[asyncio.Task[None]] = set()
        self._sweeping: asyncio.Task[None] | None = None

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

    def start_sweeping(self, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
        """Sweep now, and every ``interval`` seconds until :meth:`wait`."""

        async def sweep_forever() -> None:
            while True:
                try:
                    swept = await self.sweep()
                except Exception:
                    logger.exception("Sweeping the data store failed")
                else:
                    if swept.directories or swept.temporary_files:
                        logger.info(
                            "Swept the data of %d deleted nodes and %d temporary files",
                            swept.directories,
                            swept.temporary_files,
                        )
                await asyncio.sleep(interval)

        self._sweeping = asyncio.get_running_loop().create_task(
            sweep_forever(), name="aiosdk-sweep"
        )

    async def sweep(self, grace: float = SWEEP_GRACE_SECONDS) -> Swept:
        """Remove the directories of the nodes (and server objects) no longer in the database
        and the temporary files, of those untouched for ``grace`` seconds (nothing without a
        directory store or a database)."""
        root = self.blobs.root
        if root is None or self.sessions is None:
            return Swept(0, 0)
        found, temporary = await anyio.to_thread.run_sync(_listed, root, time.time() - grace)
        known: set[str] = set()
        ids = sorted({node_id for _, node_id in found})
        async with self.sessions() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                batch = ids[start : start + _IDS_PER_QUERY]
                known.update(await session.scalars(select(Node.id).where(Node.id.in_(batch))))
                known.update(
                    await session.scalars(select(TicketObject.id).where(TicketObject.id.in_(batch)))
                )
        orphans = [directory for directory, node_id in found if node_id not in known]
        if len(orphans) > _MOST_ORPHANS * len(found) and len(orphans) > 1:
            # More data than catalog: the likelier story is a server pointed at the wrong (or
            # a new) database, not that most nodes were deleted behind its back.
            logger.warning(
                "Not sweeping: %d of the %d data directories have no node in the database;"
                " is the server using the database it wrote them with?",
                len(orphans),
                len(found),
            )
            return Swept(0, temporary)
        directories = await anyio.to_thread.run_sync(
            _remove_untouched, orphans, time.time() - grace
        )
        return Swept(directories, temporary)

    async def wait(self) -> None:
        """Stop sweeping; wait for the removals started so far."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeping
            self._sweeping = None
        while self._running:
            await asyncio.gather(*self._running)


def _untouched(path: Path, before: float) -> bool:
    """Whether ``path`` was last changed before the time ``before`` (and still exists)."""
    try:
        return path.lstat().st_mtime < before
    except FileNotFoundError:
        return False


def _listed(root: Path, before: float) -> tuple[list[tuple[Path, str]], int]:
    """The nodes' directories in the store ``root`` untouched since ``before`` (each with the
    node id it is named for), having removed the temporary files untouched since then, and how
    many of those (blocking)."""
    found: list[tuple[Path, str]] = []
    removed = 0
    for prefix in FAMILY_PREFIXES.values():
        family = root / prefix
        try:
            entries = list(os.scandir(family))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and _untouched(Path(entry.path), before):
                found.append((Path(entry.path), entry.name))
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if name.endswith(TEMPORARY_SUFFIX) and _untouched(path, before):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return found, removed


def _remove_untouched(directories: Sequence[Path], before: float) -> int:
    """Remove those of ``directories`` still untouched since ``before``; how many (blocking)."""
    removed = 0
    for directory in directories:
        if _untouched(directory, before):
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed
