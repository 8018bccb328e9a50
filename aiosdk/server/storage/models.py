"""Declarative models of the server's tables."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "IdempotencyKey", "IdempotencyState", "Token", "new_id", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A new random identifier for a row."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC
    (which also keeps them ordered as text) and read back as aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not accepted; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Base class of every model; ``Base.metadata`` holds the schema."""

    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime}  # noqa: RUF012


class Token(Base):
    """A bearer token. Only the SHA-256 of its secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    label: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    scope: Mapped[str | None] = mapped_column(String(16))
    """``None``: everything its owner may do; ``"read"``: reads only."""
    session_id: Mapped[str | None] = mapped_column(
        String(32),
        # login_sessions.token_id refers back to tokens: this side of the cycle is added last.
        ForeignKey(
            "login_sessions.id",
            ondelete="CASCADE",
            use_alter=True,
            name="fk_tokens_session_id_login_sessions",
        ),
        index=True,
    )
    """The login session this is an access token of; ``None`` for an API token."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"Token(id={self.id!r}, label={self.label!r}, owner={self.owner!r})"


class IdempotencyState:
    """Values of :attr:`IdempotencyKey.state`."""

    IN_PROGRESS = "in_progress"
    DONE = "done"


class IdempotencyKey(Base):
    """A claimed ``Idempotency-Key`` and, once done, the response to replay.

    ``key`` is a hash of the key, ``target`` and ``fingerprint`` HMACs under it and the response
    body is sealed under it (see :mod:`aiosdk.server.http.idempotency`).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key", name="uq_idempotency_principal_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    target: Mapped[str] = mapped_column("path", String(64))
    """HMAC of method, path and query under the key. The column keeps the name it had when it
    held the raw path (up to 2,048 characters), so existing databases need no migration."""
    fingerprint: Mapped[str] = mapped_column(String(64))
    """HMAC of the request body under the key."""
    state: Mapped[str] = mapped_column(String(16), default=IdempotencyState.IN_PROGRESS)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
