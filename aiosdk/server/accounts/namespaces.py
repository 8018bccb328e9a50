"""Namespaces: the one name space that users and organizations share.

Every user and every organization owns exactly one namespace, named like it, so that an asset's
``owner/name`` is never ambiguous. A name is claimed by inserting its :class:`Namespace` row; the
row's primary key makes a second claim fail, even a concurrent one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import ConflictError
from .models import Namespace

__all__ = ["NAME_PATTERN", "RESERVED_NAMES", "Name", "claim_namespace", "namespace_kind"]

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
"""A user or organization name: 1 to 64 lowercase letters, digits, ``_`` and ``-``, starting
and ending with a letter or a digit."""

RESERVED_NAMES = frozenset({"admin", "public"})
"""Names no user or organization may take: the admin principal's, and public assets'."""

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        strict=True,
        description=(
            "1 to 64 lowercase letters, digits, '_' and '-', starting and ending with a letter"
            " or a digit; shared by users and organizations ('admin' and 'public' are reserved)."
        ),
    ),
]
"""A new user's or organization's name, as a request field."""


async def namespace_kind(session: AsyncSession, name: str) -> str | None:
    """The kind (:class:`~.models.NamespaceKind`) of the namespace ``name``, ``None`` if free."""
    kind: str | None = await session.scalar(select(Namespace.kind).where(Namespace.name == name))
    return kind


async def claim_namespace(session: AsyncSession, name: str, kind: str) -> Namespace:
    """Take the name ``name`` for a new user or organization (``kind``), in ``session``.

    Raises :class:`ConflictError` if it is reserved or taken, by a user or an organization,
    including by a concurrent request that commits first.
    """
    if name in RESERVED_NAMES:
        raise ConflictError(f"The name {name!r} is reserved")
    taken = await namespace_kind(session, name)
    if taken is not None:
        raise ConflictError(f"The name {name!r} is already taken")
    namespace = Namespace(name=name, kind=kind)
    session.add(namespace)
    try:
        await session.flush()
    except IntegrityError:  # claimed by a concurrent request meanwhile
        raise ConflictError(f"The name {name!r} is already taken") from None
    return namespace
