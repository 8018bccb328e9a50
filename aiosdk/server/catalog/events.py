"""The events of a container: one per change among its children, numbered gaplessly.

:func:`record` is called by every write that creates, changes or deletes a child, in the
write's unit of work. Numbering updates the container's row (``child_sequence``), which on
PostgreSQL locks it until the transaction ends: writers to one container take their numbers in
turn, and a number is visible only once every smaller one is (SQLite has one writer anyway). A
watcher that has seen event ``n`` therefore only ever needs the events after ``n``.

Each container keeps its newest :data:`KEEP` events; older ones are pruned now and then, and a
watcher resuming from before the oldest kept one gets a gap error.
"""

from __future__ import annotations

from sqlalchemy import delete, update

from ..unit_of_work import UnitOfWork
from .models import CatalogEvent, EventKind, Node
from .state import Wakeups

__all__ = ["KEEP", "KINDS", "PRUNE_EVERY", "record"]

KEEP = 10_000
"""How many of its newest events a container keeps."""
PRUNE_EVERY = 100
"""Events beyond :data:`KEEP` are deleted when a container's sequence is a multiple of this."""
KINDS = frozenset({EventKind.CREATED, EventKind.UPDATED, EventKind.DELETED})


async def record(
    work: UnitOfWork, wakeups: Wakeups, container_id: str, kind: str, node: Node
) -> int:
    """Record that ``node``, a child of ``container_id``, was created, updated or deleted
    (``kind``, see :class:`~.models.EventKind`), and wake the container's watchers when ``work``
    commits. ``node`` is the child as it is after the change (before the deletion for
    ``deleted``). Returns the event's sequence number.

    Call it after the change itself, once per changed child (a rename or a move is a
    ``deleted`` under the old key or parent and a ``created`` under the new).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown catalog event kind {kind!r}")
    session = work.session
    if node.id is None or node.revision is None:  # a new node: its defaults come with the flush
        await session.flush()
    sequence = (
        await session.execute(
            update(Node)
            .where(Node.id == container_id)
            .values(child_sequence=Node.child_sequence + 1)
            .returning(Node.child_sequence)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    session.add(
        CatalogEvent(
            container_id=container_id,
            sequence=sequence,
            kind=kind,
            node_id=node.id,
            key=node.key,
            revision=node.revision,
            structure_family=node.structure_family,
            node_metadata=None if kind == EventKind.DELETED else dict(node.node_metadata or {}),
        )
    )
    if sequence % PRUNE_EVERY == 0 and sequence > KEEP:
        await session.execute(
            delete(CatalogEvent).where(
                CatalogEvent.container_id == container_id,
                CatalogEvent.sequence <= sequence - KEEP,
            )
        )
    wakeups.wake(work, container_id)
    # The child's own watchers look again too: a change of its shares may end their access,
    # its deletion ends their watch.
    wakeups.wake(work, node.id)
    return sequence
