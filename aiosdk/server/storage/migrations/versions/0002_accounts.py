"""Accounts: namespaces, users, organizations, memberships, login sessions, refresh tokens,
login attempts; a token's scope and login session.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "login_attempts",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_start", _TIMESTAMP, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_login_attempts_window_start", "login_attempts", ["window_start"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("disabled_at", _TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["username"], ["namespaces.name"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["name"], ["namespaces.name"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "memberships",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("organization_id", "user_id"),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.Column("revoked_at", _TIMESTAMP, nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=True),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_login_sessions_user_id", "login_sessions", ["user_id"])
    op.create_index("ix_login_sessions_token_id", "login_sessions", ["token_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("used_at", _TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["login_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("secret_hash"),
    )
    op.create_index("ix_refresh_tokens_session_id", "refresh_tokens", ["session_id"])
    # SQLite cannot add a foreign key to a table: batch mode copies it into a new one there (with
    # foreign keys off during migrations, so that dropping the old table cascades nowhere).
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("scope", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("session_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            "fk_tokens_session_id_login_sessions",
            "login_sessions",
            ["session_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_tokens_session_id", ["session_id"])


def downgrade() -> None:
    # Without these columns a read-only token would act as a full one, and a session's access
    # token as an API token that no logout ends: revoke them rather than widen them.
    tokens = sa.table(
        "tokens", sa.column("scope"), sa.column("session_id"), sa.column("revoked_at")
    )
    op.execute(
        tokens.update()
        .where(
            sa.or_(tokens.c.scope.is_not(None), tokens.c.session_id.is_not(None)),
            tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=sa.func.current_timestamp())
    )
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index("ix_tokens_session_id")
        batch.drop_constraint("fk_tokens_session_id_login_sessions", type_="foreignkey")
        batch.drop_column("session_id")
        batch.drop_column("scope")
    op.drop_index("ix_refresh_tokens_session_id", table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_index("ix_login_sessions_token_id", table_name="login_sessions")
    op.drop_index("ix_login_sessions_user_id", table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_index("ix_memberships_user_id", table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("organizations")
    op.drop_table("users")
    op.drop_index("ix_login_attempts_window_start", table_name="login_attempts")
    op.drop_table("login_attempts")
    op.drop_table("namespaces")
