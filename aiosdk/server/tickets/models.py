"""Tables of sessions and tickets: sessions, their exports, the server objects exports refer to,
shared tickets and scope variables.

An export refers to a *target*: a catalog node (``node_id``) or a server object (``object_id``,
a row of :class:`TicketObject`). A server object with a ``family`` has data in the blob store
under its id, laid out as a node's of that family; one without is a plugin object whose state is
the row's JSON. Every target carries its ``sources``: the ids of the catalog nodes whose
``read`` permission governs access to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..catalog.models import JSONValue
from ..storage.models import Base, new_id, utcnow

__all__ = ["TicketExport", "TicketObject", "TicketScope", "TicketSession", "TicketShared"]

_LIVE = text("closed_at IS NULL")
_CLOSED = text("closed_at IS NOT NULL")


class TicketSession(Base):
    """A session: its owner's exports live while it does (until closed, or ``ttl`` seconds
    without a refresh)."""

    __tablename__ = "ticket_sessions"
    __table_args__ = (
        # The sweeper's: the open sessions by expiry.
        Index(
            "ix_ticket_sessions_expiry",
            "expires_at",
            postgresql_where=_LIVE,
            sqlite_where=_LIVE,
        ),
        # Its purge: the closed sessions by when.
        Index(
            "ix_ticket_sessions_closed",
            "closed_at",
            postgresql_where=_CLOSED,
            sqlite_where=_CLOSED,
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    """The name of the principal who opened it: only they may use it."""
    ttl: Mapped[float] = mapped_column(Float)
    """Seconds it lives without a refresh."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    """When it was closed (or found expired); its exports went then."""


class TicketObject(Base):
    """A server object: a view's result or an application's computed field (data in the blob
    store, ``family`` ``"table"`` or ``"array"``), or a plugin object (``family`` ``None``, its
    state in ``state``). An application's plugin objects are one per ``(app_id, field)``."""

    __tablename__ = "ticket_objects"
    __table_args__ = (UniqueConstraint("app_id", "field", name="uq_ticket_objects_app_field"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    family: Mapped[str | None] = mapped_column(String(32))
    structure: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    app_id: Mapped[str | None] = mapped_column(String(255))
    field: Mapped[str | None] = mapped_column(String(255))
    sources: Mapped[list[str]] = mapped_column(JSONValue)
    owner: Mapped[str | None] = mapped_column(String(100))
    """The principal it was computed for (an application's field, from what they may read):
    only they may read it. ``None``: whoever may read its sources."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketExport(Base):
    """An export of a session: its number and target. A released export stays as a tombstone
    (``released``, no target), so that its number is never used again in the session."""

    __tablename__ = "ticket_exports"

    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("ticket_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """1 to 2**32 - 1, chosen by the client."""
    released: Mapped[bool] = mapped_column(Boolean, default=False)
    node_id: Mapped[str | None] = mapped_column(String(32))
    """The exported catalog node (no foreign key: a node may go while exported)."""
    object_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("ticket_objects.id"), index=True
    )
    type: Mapped[str] = mapped_column(String(64))
    sources: Mapped[list[str]] = mapped_column(JSONValue)
    revision: Mapped[int] = mapped_column(Integer)
    request: Mapped[str | None] = mapped_column(String(64))
    """The SHA-256 of the request that made it: the same request again (a retry whose answer
    was lost) gets the export's answer again; any other use of its number is refused."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketShared(Base):
    """A shared ticket: the SHA-256 of its bytes (a bearer secret, never stored) and the export
    it resolves to while that export is live."""

    __tablename__ = "ticket_shared"
    __table_args__ = (
        ForeignKeyConstraint(
            ["session_id", "number"],
            ["ticket_exports.session_id", "ticket_exports.number"],
            ondelete="CASCADE",
        ),
        Index("ix_ticket_shared_export", "session_id", "number"),
    )

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32))
    number: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketScope(Base):
    """A scope variable: a global name bound to a target, independent of the session that bound
    it (rebinding replaces it)."""

    __tablename__ = "ticket_scope"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    node_id: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("ticket_objects.id"), index=True
    )
    type: Mapped[str] = mapped_column(String(64))
    sources: Mapped[list[str]] = mapped_column(JSONValue)
    revision: Mapped[int] = mapped_column(Integer)
    bound_by: Mapped[str] = mapped_column(String(100))
    """The principal who bound it."""
    bound_at: Mapped[datetime] = mapped_column(default=utcnow)
