"""Keyset pagination of rows ordered by ``(created_at, id)``: tokens, users, organizations."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts.models import Organization, User
from .storage import Token

__all__ = ["Position", "keyset_page"]

M = TypeVar("M", Token, User, Organization)

Position = tuple[datetime, str]
"""Where a page ends: the ``(created_at, id)`` of its last row."""


async def keyset_page(
    session: AsyncSession,
    query: Select[M],
    model: type[M],
    page_size: int,
    after: Position | None,
) -> tuple[list[M], Position | None]:
    """One page of ``query``'s rows of ``model``, oldest first (by ``created_at``, then ``id``),
    after the position ``after``; and the position the next page starts after (``None`` on the
    last page)."""
    if after is not None:
        created_at, row_id = after
        query = query.where(
            or_(
                model.created_at > created_at,
                and_(model.created_at == created_at, model.id > row_id),
            )
        )
    query = query.order_by(model.created_at, model.id).limit(page_size + 1)
    found = list(await session.scalars(query))
    if len(found) <= page_size:
        return found, None
    found = found[:page_size]
    return found, (found[-1].created_at, found[-1].id)
