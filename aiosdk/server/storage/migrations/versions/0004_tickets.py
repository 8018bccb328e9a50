"""Sessions and tickets: sessions, their exports, server objects, shared tickets, scope
variables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_OPEN = sa.text("closed_at IS NULL")
_CLOSED = sa.text("closed_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "ticket_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("ttl", sa.Float(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.Column("closed_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_ticket_sessions_expiry",
        "ticket_sessions",
        ["expires_at"],
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )
    op.create_index(
        "ix_ticket_sessions_closed",
        "ticket_sessions",
        ["closed_at"],
        postgresql_where=_CLOSED,
        sqlite_where=_CLOSED,
    )
    op.create_table(
        "ticket_objects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=True),
        sa.Column("structure", _JSON, nullable=True),
        sa.Column("state", _JSON, nullable=True),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("field", sa.String(length=255), nullable=True),
        sa.Column("sources", _JSON, nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "field", name="uq_ticket_objects_app_field"),
    )
    op.create_table(
        "ticket_exports",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=True),
        sa.Column("object_id", sa.String(length=32), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("sources", _JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("request", sa.String(length=64), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["object_id"], ["ticket_objects.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["ticket_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", "number"),
    )
    op.create_index("ix_ticket_exports_object_id", "ticket_exports", ["object_id"])
    op.create_table(
        "ticket_shared",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id", "number"],
            ["ticket_exports.session_id", "ticket_exports.number"],
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_ticket_shared_export", "ticket_shared", ["session_id", "number"])
    op.create_table(
        "ticket_scope",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=True),
        sa.Column("object_id", sa.String(length=32), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("sources", _JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("bound_by", sa.String(length=100), nullable=False),
        sa.Column("bound_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["object_id"], ["ticket_objects.id"]),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_ticket_scope_object_id", "ticket_scope", ["object_id"])


def downgrade() -> None:
    op.drop_index("ix_ticket_scope_object_id", table_name="ticket_scope")
    op.drop_table("ticket_scope")
    op.drop_index("ix_ticket_shared_export", table_name="ticket_shared")
    op.drop_table("ticket_shared")
    op.drop_index("ix_ticket_exports_object_id", table_name="ticket_exports")
    op.drop_table("ticket_exports")
    op.drop_table("ticket_objects")
    op.drop_index("ix_ticket_sessions_closed", table_name="ticket_sessions")
    op.drop_index("ix_ticket_sessions_expiry", table_name="ticket_sessions")
    op.drop_table("ticket_sessions")
