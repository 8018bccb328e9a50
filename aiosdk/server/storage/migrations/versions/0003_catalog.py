"""Catalog: nodes (containers and assets), their shares, their children's events; a root node
for every namespace that exists already.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "catalog_nodes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("structure_family", sa.String(length=32), nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("specs", _JSON, nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("file_type", sa.String(length=64), nullable=True),
        sa.Column("structure", _JSON, nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("child_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["namespace"], ["namespaces.name"]),
        sa.ForeignKeyConstraint(["parent_id"], ["catalog_nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_catalog_nodes_namespace", "catalog_nodes", ["namespace"])
    op.create_index(
        "ix_catalog_nodes_parent_key", "catalog_nodes", ["parent_id", "key"], unique=True
    )
    op.create_index("ix_catalog_nodes_structure_family", "catalog_nodes", ["structure_family"])
    op.create_table(
        "catalog_events",
        sa.Column("container_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("structure_family", sa.String(length=32), nullable=False),
        sa.Column("metadata", _JSON, nullable=True),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["container_id"], ["catalog_nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("container_id", "sequence"),
    )
    op.create_table(
        "catalog_shares",
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("grantee", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("actions", sa.String(length=32), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["catalog_nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", "grantee"),
    )
    op.create_index("ix_catalog_shares_path", "catalog_shares", ["path"])
    _add_namespace_roots()


def _add_namespace_roots() -> None:
    """Every namespace has a root node: give one to each namespace made before the catalog."""
    bind = op.get_bind()
    names = list(bind.execute(sa.text("SELECT name FROM namespaces ORDER BY name")).scalars())
    if not names:
        return
    now = datetime.now(timezone.utc)
    if bind.dialect.name == "sqlite":  # stored as naive UTC there (see UTCDateTime)
        now = now.replace(tzinfo=None)
    nodes = sa.table(
        "catalog_nodes",
        sa.column("id", sa.String),
        sa.column("parent_id", sa.String),
        sa.column("namespace", sa.String),
        sa.column("key", sa.String),
        sa.column("path", sa.String),
        sa.column("depth", sa.Integer),
        sa.column("structure_family", sa.String),
        sa.column("metadata", _JSON),
        sa.column("specs", _JSON),
        sa.column("tags", _JSON),
        sa.column("file_type", sa.String),
        sa.column("structure", _JSON),
        sa.column("revision", sa.Integer),
        sa.column("child_sequence", sa.Integer),
        sa.column("created_at", _TIMESTAMP),
        sa.column("updated_at", _TIMESTAMP),
    )
    op.bulk_insert(
        nodes,
        [
            {
                "id": uuid.uuid4().hex,
                "parent_id": None,
                "namespace": name,
                "key": name,
                "path": name,
                "depth": 1,
                "structure_family": "container",
                "metadata": {},
                "specs": [],
                "tags": [],
                "file_type": None,
                "structure": None,
                "revision": 1,
                "child_sequence": 0,
                "created_at": now,
                "updated_at": now,
            }
            for name in names
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_catalog_shares_path", table_name="catalog_shares")
    op.drop_table("catalog_shares")
    op.drop_table("catalog_events")
    op.drop_index("ix_catalog_nodes_structure_family", table_name="catalog_nodes")
    op.drop_index("ix_catalog_nodes_parent_key", table_name="catalog_nodes")
    op.drop_index("ix_catalog_nodes_namespace", table_name="catalog_nodes")
    op.drop_table("catalog_nodes")
