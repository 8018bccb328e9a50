"""Reads by ticket path: ``~session/<session_id>/<number>`` (``ExportInfo.path``) names an export
wherever a catalog route takes a node's path, so that every read route (metadata, full reads,
partitions, blocks, exports, formats) serves exports with no change.

:func:`~..catalog.nodes.read_node` asks :func:`read_ticket_path` for such a path: the export's
data as a row that reads like a node's (:class:`TicketNode`), which the caller may only read.
It is found only for the session's owner, while the session and the export are live, and while
the caller may read every source of the export's target; anything else is the route's usual
404. No namespace can be named ``~session``, so no node has such a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..._core.ticket_bytes import MAX_EXPORT_NUMBER
from ..catalog.access import ShareRow, shares_covering
from ..catalog.models import Node
from ..errors import NotFoundError
from . import registry
from .registry import TICKET_ROOT

if TYPE_CHECKING:
    from ..catalog.nodes import Viewer

__all__ = ["TICKET_DEPTH", "TicketNode", "is_ticket_path", "read_ticket_path"]

TICKET_DEPTH = 3
"""How many keys a ticket path has."""


@dataclass(frozen=True)
class TicketNode:
    """An export read like a node (the attributes of
    :data:`~..catalog.nodes.NODE_COLUMNS`): its data's id (the node's or the server object's),
    family and structure; the ticket path as ``path``, the number as ``key``."""

    id: str
    namespace: str
    """The namespace of the source node (of the first, for a view), else the session owner's."""
    key: str
    path: str
    structure_family: str
    """A data family, ``"container"``, or a plugin object's type."""
    node_metadata: dict[str, Any]
    specs: list[str]
    tags: list[str]
    file_type: str | None
    structure: dict[str, Any] | None
    revision: int
    created_at: datetime
    updated_at: datetime
    parent_id: str | None = None
    depth: int = TICKET_DEPTH


def is_ticket_path(path: str) -> bool:
    """Whether the (canonical) ``path`` is under ``~session``: a ticket path or no path."""
    return path == TICKET_ROOT or path.startswith(TICKET_ROOT + "/")


def _parsed(path: str) -> tuple[str, int] | None:
    """The session id and export number of the ticket path ``path``, if it is one."""
    keys = path.split("/")
    if len(keys) != TICKET_DEPTH:
        return None
    number = keys[2]
    if not number.isascii() or not number.isdigit() or len(number) > 10:
        return None
    value = int(number)
    if str(value) != number or not 1 <= value <= MAX_EXPORT_NUMBER:
        return None  # as ticket_path writes it: no leading zeros
    return keys[1], value


async def read_ticket_path(
    db: AsyncSession, viewer: Viewer, path: str
) -> tuple[TicketNode, list[ShareRow]] | None:
    """The export at the ticket path ``path`` as a node, for ``viewer``, with the shares
    covering it (an exported node's: what its children's access comes from; none for a server
    object); ``None`` if there is none it may read (no such session of its own, live; no such
    live export; a source it may not read, or that was deleted)."""
    parsed = _parsed(path)
    caller = viewer.caller
    if parsed is None or caller is None:
        return None
    session_id, number = parsed
    try:
        session = await registry.live_session(db, caller.name, session_id)
        target = await registry.export_target(db, session, number)
    except NotFoundError:
        return None
    if not await registry.readable(db, viewer, target):
        return None
    key = str(number)
    if target.node_id is not None:
        node = await db.scalar(select(Node).where(Node.id == target.node_id))
        if node is None:
            return None
        exported = TicketNode(
            id=node.id,
            namespace=node.namespace,
            key=key,
            path=path,
            structure_family=node.structure_family,
            node_metadata=node.node_metadata,
            specs=node.specs,
            tags=node.tags,
            file_type=node.file_type,
            structure=node.structure,
            revision=node.revision,
            created_at=node.created_at,
            updated_at=node.updated_at,
        )
        return exported, await shares_covering(db, [node.path])
    assert target.object_id is not None
    try:
        found = await registry.get_object(db, target.object_id)
    except NotFoundError:
        return None
    namespace = session.owner
    if target.sources:
        namespace = (
            await db.scalar(select(Node.namespace).where(Node.id == target.sources[0]))
        ) or namespace
    exported = TicketNode(
        id=found.id,
        namespace=namespace,
        key=key,
        path=path,
        structure_family=found.family or found.type,
        node_metadata={},
        specs=[],
        tags=[],
        file_type=None,
        structure=found.structure,
        revision=found.revision,
        created_at=found.created_at,
        updated_at=found.created_at,
    )
    return exported, []
