"""Tables of accounts: namespaces, users, organizations, memberships, login sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..storage.models import Base, new_id, utcnow

__all__ = [
    "LoginAttempts",
    "LoginSession",
    "Membership",
    "Namespace",
    "NamespaceKind",
    "Organization",
    "RefreshToken",
    "Role",
    "User",
]


class NamespaceKind:
    """Values of :attr:`Namespace.kind`."""

    USER = "user"
    ORGANIZATION = "organization"


class Role:
    """Values of :attr:`Membership.role`, from most to least powerful."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    READ_ONLY = "read_only"


class Namespace(Base):
    """A name that owns assets: every user and every organization has exactly one.

    Users and organizations share one name space, so ``alice/...`` is never ambiguous.
    """

    __tablename__ = "namespaces"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person (or a robot) who logs in. The password is kept as an Argon2id hash only."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), ForeignKey("namespaces.name"), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    """``None``: the user cannot log in with a password (API tokens only)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r})"


class Organization(Base):
    """A group of users sharing a namespace."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), ForeignKey("namespaces.name"), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Organization(id={self.id!r}, name={self.name!r})"


class Membership(Base):
    """A user's role in an organization (see :class:`Role`)."""

    __tablename__ = "memberships"

    organization_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginSession(Base):
    """A login: the short-lived access tokens (rows of ``tokens`` with this ``session_id``) and
    the rotating refresh tokens it has handed out. Revoking it revokes all of them."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    """The session's absolute end: no refresh extends it."""
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    """``"logout"``, ``"refresh_reuse"``, ``"user_disabled"``, ..."""
    scope: Mapped[str | None] = mapped_column(String(16))
    """The scope of every access token of the session (that of the API token it was opened with)."""
    token_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("tokens.id", ondelete="CASCADE"), index=True
    )
    """The API token a token login opened the session with; ``None`` for a password login."""


class RefreshToken(Base):
    """One refresh token of a session, by the SHA-256 of its secret.

    A refresh uses the session's newest token and hands out the next one; presenting a token that
    was already used (a stolen copy, or the victim's after the thief refreshed) revokes the
    session.
    """

    __tablename__ = "refresh_tokens"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("login_sessions.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class LoginAttempts(Base):
    """Failed logins in the current window of one account or one client address.

    Kept in the database so that every server process on it enforces the same limit. ``key`` is
    an HMAC under the server keyring (of ``"user:" + username`` or ``"addr:" + address``), never
    the name itself, nor a hash anyone could compute.
    """

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(index=True)
    """Indexed: the windows that ended are deleted with every attempt."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
