"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..state import ServerState

__all__ = ["Session", "State", "db_session", "server_state"]


def server_state(request: Request) -> ServerState:
    """The state of the server handling the request."""
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    """A database session for the duration of the request."""
    async with state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]
