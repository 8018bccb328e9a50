"""What a route is given about its request: one dependency, :data:`Current`.

One dependency rather than one each for the state, the principal and the session: FastAPI's
dependency resolution costs about as much per dependency as a small route itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..auth import Principal
from ..catalog.nodes import Viewer
from ..state import ServerState
from ..unit_of_work import UnitOfWork
from .idempotency import unit_of_work

__all__ = ["Current", "RequestCall", "request_call", "viewer_of"]


@dataclass(frozen=True)
class RequestCall:
    """The request being handled: the server, who asks, and the request's unit of work."""

    state: ServerState
    principal: Principal
    work: UnitOfWork

    @property
    def session(self) -> AsyncSession:
        """The request's database session: a route flushes its writes, never commits them; the
        unit of work commits them (with the idempotency record) before answering."""
        return self.work.session


async def request_call(request: Request) -> RequestCall:
    """The :class:`RequestCall` of ``request`` (a coroutine: FastAPI would run a plain function
    dependency in a worker thread, a thread hop per request)."""
    return RequestCall(
        request.app.state.server, request.state.principal, unit_of_work(request.scope)
    )


Current = Annotated[RequestCall, Depends(request_call)]


async def viewer_of(call: RequestCall) -> Viewer:
    """Who asks, as the catalog sees them."""
    caller = await call.state.callers.caller(call.session, call.principal)
    return Viewer(caller, call.state.accounts.allow_anonymous)
