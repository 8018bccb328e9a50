"""What the catalog keeps in memory while the server runs: the watchers' wake-ups, the spec
validators.

A watcher of a container (see :mod:`aiosdk.server.grpc.catalog`) waits on :class:`Wakeups` for
a change among the container's children. A change wakes the watchers of this process once it
commits and, through the server's :class:`~aiosdk.server.notify.Notifier` on PostgreSQL, those
of every other process serving the database. Where no message can cross processes (SQLite, which
several processes may still serve), watchers also look for new events every second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..authorization import NAMESPACES_CHANGED
from ..notify import MISSED, Notifier
from ..unit_of_work import UnitOfWork

__all__ = ["CHANNEL", "CatalogState", "Validator", "Wakeups"]

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


@dataclass
class CatalogState:
    """The catalog's part of the server's state."""

    wakeups: Wakeups = field(default_factory=Wakeups)
    """Wakes the watchers of a container (see :mod:`aiosdk.server.catalog.events`)."""
    validators: dict[str, Validator] = field(default_factory=dict)
    """Spec name → validator, run on every create and update of a node with that spec."""
