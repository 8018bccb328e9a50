"""Channels: channels, their pending messages, presence events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("last_offset", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("last_seen", _TIMESTAMP, nullable=True),
        sa.Column("stream_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "client_id", name="uq_channels_owner_client"),
    )
    op.create_index("ix_channels_expires_at", "channels", ["expires_at"])
    op.create_index("ix_channels_last_seen", "channels", ["last_seen"])
    op.create_table(
        "channel_messages",
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("text", sa.Boolean(), nullable=False),
        sa.Column("sent_at", _TIMESTAMP, nullable=False),
        sa.Column("lease", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id", "offset"),
    )
    op.create_table(
        "channel_events",
        sa.Column("id", _EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("clean", sa.Boolean(), nullable=False),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_channel_events_owner_id", "channel_events", ["owner", "id"])
    op.create_index("ix_channel_events_at", "channel_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_channel_events_at", table_name="channel_events")
    op.drop_index("ix_channel_events_owner_id", table_name="channel_events")
    op.drop_table("channel_events")
    op.drop_table("channel_messages")
    op.drop_index("ix_channels_last_seen", table_name="channels")
    op.drop_index("ix_channels_expires_at", table_name="channels")
    op.drop_table("channels")
