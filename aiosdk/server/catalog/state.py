"""What the catalog keeps in memory while the server runs: the watchers' wake-ups, the spec
and structure validators, the recently read nodes, the hook that removes deleted nodes' data.

A watcher of a container (see :mod:`aiosdk.server.grpc.catalog`) waits on :class:`Wakeups` for
a change among the container's children. A change wakes the watchers of this process once it
commits and, through the server's :class:`~aiosdk.server.notify.Notifier` on PostgreSQL, those
of every other process serving the database. Where no message can cross processes (SQLite, which
several processes may still serve), watchers also look for new events every second.

:class:`NodeReads` keeps what :func:`~.nodes.read_node` reads for a path, the same for every
caller: the node's row and the shares on it and its ancestors (who may see it is decided on
every read, from the caller's namespaces and those shares). Every catalog write wakes the
watchers when it commits (see :mod:`.events`), and each wake-up empties it: a change to one node
(a move, a share) can change what is true of all its descendants. As with
:class:`~..authorization.Callers`, nothing is kept while the notifier is not listening, and
nothing for longer than :data:`READS_TTL_SECONDS` (what another process serving the same SQLite
file may have changed meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Row

from ..authorization import NAMESPACES_CHANGED
from ..notify import MISSED, Notifier
from ..unit_of_work import UnitOfWork

__all__ = [
    "CHANNEL",
    "READS_CAPACITY",
    "READS_TTL_SECONDS",
    "CatalogState",
    "NodeReads",
    "StructureValidator",
    "Validator",
    "Wakeups",
]

CHANNEL = "catalog_changed"
"""The notification channel of :meth:`Wakeups.wake`; the payload is a node's id."""

POLL_SECONDS = 1.0
"""How often a watcher looks for events when wake-ups may not reach it from other processes."""
RECHECK_SECONDS = 5.0
"""How often a watcher looks anyway when they do (what it may read can change without a
wake-up of its container: a share on an ancestor, a membership)."""

Validator = Callable[[dict[str, Any], str, list[str]], None]
"""A spec's validator: called with a node's metadata, structure family and specs; raises
``ValueError`` with the reason when the node does not satisfy the spec."""
StructureValidator = Callable[[dict[str, Any] | None], dict[str, Any]]
"""A structure family's validator: called with a new node's structure, returns it normalised;
raises ``ValueError`` or :class:`~.nodes.InvalidContentError` with the reason to refuse it."""


class Wakeups:
    """Wakes the watchers of a node when something among its children committed.

    ``notifier`` carries wake-ups to the other processes of a PostgreSQL database (``shared``);
    without one, or while it is not listening, watchers poll (see :attr:`poll_seconds`).
    """

    def __init__(self, notifier: Notifier | None = None, *, shared: bool = False) -> None:
        self._notifier = notifier
        self._shared = shared and notifier is not None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        if notifier is not None:
            notifier.subscribe(CHANNEL, self._on_message)
            # What a caller may read changed: every watcher checks its access again.
            notifier.subscribe(NAMESPACES_CHANGED, lambda _username: self._wake_all())

    @property
    def poll_seconds(self) -> float:
        """How long a watcher may wait for a wake-up before it looks for events itself."""
        if self._shared and self._notifier is not None and self._notifier.listening:
            return RECHECK_SECONDS
        return POLL_SECONDS

    def wake(self, work: UnitOfWork, node_id: str) -> None:
        """Wake the watchers of ``node_id``, in every process, when ``work`` commits."""
        if self._notifier is not None:
            self._notifier.publish(work, CHANNEL, node_id)
        else:
            work.after_commit(lambda: self._wake(node_id))

    @contextmanager
    def waiter(self, node_id: str) -> Iterator[asyncio.Event]:
        """An event set by every wake-up of ``node_id`` while the block runs (the watcher clears
        it before it looks for events, so a wake-up between the look and the wait is kept)."""
        waiter = asyncio.Event()
        waiters = self._waiters.setdefault(node_id, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(node_id, None)

    def watchers(self, node_id: str) -> int:
        """How many watchers of ``node_id`` wait in this process."""
        return len(self._waiters.get(node_id, ()))

    def _on_message(self, payload: str) -> None:
        if payload == MISSED:  # wake-ups may have been lost: everyone looks
            self._wake_all()
        else:
            self._wake(payload)

    def _wake(self, node_id: str) -> None:
        for waiter in self._waiters.get(node_id, ()):
            waiter.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()


READS_CAPACITY = 10_000
"""How many paths are kept (the least recently read go first)."""
READS_TTL_SECONDS = 2.0
"""How long a path's rows are served from memory at most."""

Rows = Sequence[Row[Any]]


class NodeReads:
    """The rows read for each recently read path, dropped by every committed catalog change."""

    def __init__(self, notifier: Notifier | None = None, *, capacity: int = READS_CAPACITY) -> None:
        self._notifier = notifier
        self._capacity = capacity
        self._kept: collections.OrderedDict[str, tuple[float, Rows]] = collections.OrderedDict()
        self._generation = 0  # bumped by every change: a read racing one is not kept
        if notifier is not None:
            notifier.subscribe(CHANNEL, self._forget)
            notifier.subscribe(NAMESPACES_CHANGED, self._forget)

    @property
    def caching(self) -> bool:
        """Whether rows may be served and kept now (a notifier, and it is listening)."""
        return self._notifier is not None and self._notifier.listening

    def __len__(self) -> int:
        return len(self._kept)

    async def rows(self, path: str, read: Callable[[], Awaitable[Rows]]) -> Rows:
        """The rows of ``path``: from memory, or from ``read()``, kept when there are any (a
        missing node is not kept: it may be created by the next request)."""
        if self.caching:
            kept = self._kept.get(path)
            if kept is not None and time.monotonic() - kept[0] < READS_TTL_SECONDS:
                self._kept.move_to_end(path)
                return kept[1]
        generation = self._generation
        rows = await read()
        if rows and generation == self._generation and self.caching:
            self._kept[path] = (time.monotonic(), rows)
            self._kept.move_to_end(path)
            if len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        return rows

    def _forget(self, _payload: str) -> None:
        self._generation += 1
        self._kept.clear()


@dataclass
class CatalogState:
    """The catalog's part of the server's state."""

    wakeups: Wakeups = field(default_factory=Wakeups)
    """Wakes the watchers of a container (see :mod:`aiosdk.server.catalog.events`)."""
    validators: dict[str, Validator] = field(default_factory=dict)
    """Spec name → validator, run on every create and update of a node with that spec."""
    reads: NodeReads = field(default_factory=NodeReads)
    """Recently read nodes (see :class:`NodeReads`)."""
    structures: dict[str, StructureValidator] = field(default_factory=dict)
    """Structure family → the validator of its nodes' ``structure``, run on every create of a
    node of that family (see :data:`aiosdk.server.data.STRUCTURE_VALIDATORS`): it returns the
    structure normalised, or raises (a 422). Families without one take any structure."""
    remove_data: Callable[[list[str]], None] | None = None
    """Called with the ids of the data nodes a delete removed, once it committed: removes
    their bytes (see :mod:`aiosdk.server.data.cleanup`)."""
