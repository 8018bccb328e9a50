"""Tables of the catalog: nodes (containers and assets), their shares, and their children's events.

Every namespace has one root node (``depth`` 1, no parent, ``key`` and ``path`` its name); every
other node lives in a container, and its ``path`` is its parent's path, ``/``, and its key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..storage.models import Base, new_id, utcnow

__all__ = ["PUBLIC", "CatalogEvent", "EventKind", "JSONValue", "Node", "NodeShare"]

JSONValue = JSON().with_variant(JSONB(), "postgresql")
"""A JSON column: ``jsonb`` on PostgreSQL (indexable, comparable), JSON text on SQLite."""

PUBLIC = "*"
"""The grantee of a :class:`NodeShare` that makes a node public (readable by every caller)."""


class Node(Base):
    """A container or an asset of the catalog."""

    __tablename__ = "catalog_nodes"
    __table_args__ = (Index("ix_catalog_nodes_parent_key", "parent_id", "key", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    parent_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("catalog_nodes.id", ondelete="CASCADE")
    )
    """The container holding this node; ``None`` for a namespace's root node."""
    namespace: Mapped[str] = mapped_column(String(64), ForeignKey("namespaces.name"), index=True)
    """The namespace that owns the node (its path's first segment)."""
    key: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    depth: Mapped[int] = mapped_column(Integer)
    """How many segments ``path`` has: 1 for a namespace's root node."""
    structure_family: Mapped[str] = mapped_column(String(32), index=True)
    """``"container"``, or an asset's family (``"array"``, ``"table"``, ``"sparse"``...)."""
    node_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONValue)
    specs: Mapped[list[str]] = mapped_column(JSONValue)
    tags: Mapped[list[str]] = mapped_column(JSONValue)
    file_type: Mapped[str | None] = mapped_column(String(64))
    structure: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    """What an asset's data looks like (shape, dtype, chunks, columns...); ``None`` for
    containers, and for assets written before their data."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every change of the node itself (metadata, specs, tags, key, sharing)."""
    child_sequence: Mapped[int] = mapped_column(Integer, default=0)
    """The sequence number of the last :class:`CatalogEvent` among this container's children."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Node(id={self.id!r}, path={self.path!r})"


class NodeShare(Base):
    """A grant of actions on a node, and so on everything below it, to a namespace.

    The grantee :data:`PUBLIC` makes the node public: every caller may read it. A share with an
    organization gives each member what the share grants and its role allows.
    """

    __tablename__ = "catalog_shares"

    node_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("catalog_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    grantee: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), index=True)
    """The node's path (kept in step with it), so that one query finds every share that covers
    a path: those of the node and of its ancestors."""
    actions: Mapped[str] = mapped_column(String(32))
    """The granted actions, comma-separated in canonical order; always includes ``read``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventKind:
    """Values of :attr:`CatalogEvent.kind`."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class CatalogEvent(Base):
    """A change among a container's children: numbered gaplessly per container, in commit order
    (numbering updates the container's row, which serializes writers to one container)."""

    __tablename__ = "catalog_events"

    container_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("catalog_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str] = mapped_column(String(32))
    """The child's id (no foreign key: a deleted child's events stay)."""
    key: Mapped[str] = mapped_column(String(255))
    revision: Mapped[int] = mapped_column(Integer)
    structure_family: Mapped[str] = mapped_column(String(32))
    node_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONValue)
    """The child's metadata after the change; ``None`` for a deletion."""
    at: Mapped[datetime] = mapped_column(default=utcnow)
