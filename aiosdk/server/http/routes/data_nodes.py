"""What every data route (arrays, tables, sparse arrays) needs of the catalog: the node of a
family at a path (checked for the caller's permission), that node locked for a write, and its
structure changed in the request's unit of work."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from ...authorization import READ, WRITE
from ...catalog import events, nodes
from ...catalog.models import EventKind, Node
from ...catalog.nodes import NodeRead, NodeView, Viewer
from ...errors import ConflictError, InvalidRequestError
from ...storage import utcnow
from ..dependencies import RequestCall, viewer_of

__all__ = ["commit_structure", "data_node", "done_reading", "locked_data_node"]

_NAMES = {"array": "an array", "table": "a table", "sparse": "a sparse array"}


async def data_node(
    call: RequestCall, path: str, family: str, action: str = READ
) -> tuple[NodeRead, Viewer]:
    """The node of ``family`` at ``path``, which the caller may do ``action`` on, read without
    the unit of work's lock (for reads, and for a write's checks before its body is read);
    :class:`~...errors.InvalidRequestError` (400) if it is of another family."""
    viewer = await viewer_of(call)
    reads = call.state.catalog.reads if action == READ else None
    view = await nodes.read_node(call.session, viewer, path, reads)
    nodes.require(viewer, view, action)
    node = view.node
    if node.structure_family != family:
        raise InvalidRequestError(
            f"{node.path!r} is a {node.structure_family}, not {_NAMES[family]}: use its own routes"
        )
    return view, viewer


async def done_reading(call: RequestCall) -> None:
    """End a read's transaction: its pooled connection goes back before the data is read and
    sent (a read writes nothing)."""
    if call.work.opened:
        await call.session.rollback()


async def locked_data_node(
    call: RequestCall, viewer: Viewer, path: str, read: NodeRead
) -> NodeView:
    """The node ``read`` found at ``path``, locked for the write (``FOR UPDATE``, SQLite's
    write lock), still writable and still the same node (whose schema, shape and data type
    never change: what the body was checked against holds)."""
    await call.work.begin_write()
    view = await nodes.resolve(call.session, viewer, path, lock="update")
    nodes.require(viewer, view, WRITE)
    if view.node.id != read.node.id:
        raise ConflictError(f"{path[:300]!r} was replaced meanwhile: retry")
    return view


async def commit_structure(call: RequestCall, view: NodeView, structure: dict[str, Any]) -> None:
    """Give the locked node of ``view`` its new ``structure`` and bump its revision, in the
    request's unit of work, recording the change for the watchers of its container."""
    node: Node = view.node
    session = call.session
    await session.execute(
        update(Node)
        .where(Node.id == node.id)
        .values(
            {Node.structure: structure, Node.revision: Node.revision + 1, Node.updated_at: utcnow()}
        )
        .execution_options(synchronize_session=False)
    )
    await session.refresh(node)
    if node.parent_id is not None:
        await events.record(
            call.work, call.state.catalog.wakeups, node.parent_id, EventKind.UPDATED, node
        )
