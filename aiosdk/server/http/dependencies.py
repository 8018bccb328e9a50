"""FastAPI dependencies shared by the routes.

They are coroutines even where they await nothing: FastAPI runs a plain function dependency in
a worker thread, a thread hop per request that cost the server most of its small-request rate.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..state import ServerState
from ..unit_of_work import UnitOfWork
from .idempotency import unit_of_work

__all__ = ["Session", "State", "Work", "db_session", "request_unit_of_work", "server_state"]


async def server_state(request: Request) -> ServerState:
    """The state of the server handling the request."""
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]


async def db_session(request: Request) -> AsyncSession:
    """The request's database session: writes are flushed, never committed, by a route; the
    request's unit of work commits them (with the idempotency record) before answering."""
    return unit_of_work(request.scope).session


Session = Annotated[AsyncSession, Depends(db_session)]


async def request_unit_of_work(request: Request) -> UnitOfWork:
    """The request's unit of work (for work that must happen when, and only if, it commits)."""
    return unit_of_work(request.scope)


Work = Annotated[UnitOfWork, Depends(request_unit_of_work)]
