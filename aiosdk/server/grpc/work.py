"""Mutating RPCs: one unit of work per call, applied once per ``idempotency-key``.

The same store and the same one-transaction rule as the HTTP API (see
:mod:`aiosdk.server.idempotency`): a handler's writes and its stored answer commit together,
and the answer is sent only after that, so a client's retry gets a replay, never a second
application. Refusals (a gRPC error status) are stored and replayed too; a failure (an
unexpected exception) rolls everything back and releases the key, so a retry runs again.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import anyio
import betterproto2
from grpclib import GRPCError, Status
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from ..errors import is_data_error
from ..idempotency import (
    VALID_KEY,
    IdempotencyKeyBusy,
    IdempotencyStore,
    Repeat,
    StoredResponse,
    claim_record,
    classify_repeat,
    seal,
    unseal,
)
from ..state import ServerState
from ..storage import IdempotencyKey
from ..unit_of_work import UnitOfWork
from .auth import Call, current_call
from .errors import grpc_error

__all__ = ["GRPC_METHOD", "mutating"]

GRPC_METHOD = "GRPC"
"""The method recorded with a gRPC call's idempotency key (the RPC's path is its target)."""

RequestT = TypeVar("RequestT", bound=betterproto2.Message)
ReplyT = TypeVar("ReplyT", bound=betterproto2.Message)


class _Service(Protocol):
    state: ServerState


ServiceT = TypeVar("ServiceT", bound=_Service)
Handler = Callable[[ServiceT, RequestT, UnitOfWork], Awaitable[ReplyT]]
Method = Callable[[ServiceT, RequestT], Coroutine[Any, Any, ReplyT]]


def mutating(
    reply_type: type[ReplyT],
) -> Callable[[Handler[ServiceT, RequestT, ReplyT]], Method[ServiceT, RequestT, ReplyT]]:
    """Make ``handler(service, request, work)`` a unary RPC method that runs in its own unit of
    work and honours the call's idempotency key; its replies are ``reply_type`` messages."""

    def decorate(
        handler: Handler[ServiceT, RequestT, ReplyT],
    ) -> Method[ServiceT, RequestT, ReplyT]:
        @functools.wraps(handler)
        async def method(service: ServiceT, request: RequestT) -> ReplyT:
            state = service.state
            call = current_call.get()
            store = IdempotencyStore(state.sessions)
            work = UnitOfWork(state.sessions)
            try:
                record = await _claim(store, call, request, reply_type)
                if isinstance(record, betterproto2.Message):
                    return record  # a replay
                return await _run(handler, service, request, work, store, record, call)
            finally:
                with anyio.CancelScope(shield=True):
                    await work.close()

        return method

    return decorate


async def _claim(
    store: IdempotencyStore, call: Call, request: RequestT, reply_type: type[ReplyT]
) -> IdempotencyKey | ReplyT | None:
    """Claim the call's key: the record, ``None`` without a key, or the replayed reply."""
    key = call.idempotency_key
    if key is None:
        return None
    if not VALID_KEY.fullmatch(key):
        raise GRPCError(
            Status.INVALID_ARGUMENT, "idempotency-key must be 1 to 255 printable ASCII characters"
        )
    record = claim_record(call.principal.name, key, GRPC_METHOD, call.method, b"", bytes(request))
    try:
        holder = await store.claim(record)
    except IdempotencyKeyBusy:
        raise GRPCError(Status.UNAVAILABLE, "The idempotency-key is busy; retry") from None
    if holder is None:
        return record
    repeat = classify_repeat(record, holder)
    if repeat is Repeat.MISMATCH:
        raise GRPCError(
            Status.INVALID_ARGUMENT, "The idempotency-key was already used for a different call"
        )
    if repeat is Repeat.IN_PROGRESS:
        # Transient, like HTTP's 409 idempotency_in_progress: retrying gets the first answer.
        raise GRPCError(Status.UNAVAILABLE, "A call with this idempotency-key is still running")
    stored = unseal(key, holder.response_body) if holder.response_body else b""
    if holder.status_code:  # a refusal, replayed as it was
        raise GRPCError(Status(holder.status_code), stored.decode())
    return reply_type.parse(stored)


async def _run(
    handler: Handler[ServiceT, RequestT, ReplyT],
    service: ServiceT,
    request: RequestT,
    work: UnitOfWork,
    store: IdempotencyStore,
    record: IdempotencyKey | None,
    call: Call,
) -> ReplyT:
    key = call.idempotency_key
    try:
        reply = await handler(service, request, work)
        if record is not None and key is not None:
            stored = StoredResponse(0, [], seal(key, bytes(reply)))
            await store.complete(record, stored, session=work.session)
        await work.commit()
    except (GRPCError, HTTPException) as exc:
        error = exc if isinstance(exc, GRPCError) else grpc_error(exc)
        await work.close()  # nothing a refused call wrote is kept ...
        if record is not None and key is not None:  # ... but the refusal is replayed
            async with store.sessions() as session:
                answer = seal(key, (error.message or "").encode())
                stored = StoredResponse(error.status.value, [], answer)
                await store.complete(record, stored, session=session)
                await session.commit()
        raise error from None
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await work.close()  # roll back first: on SQLite the writes hold the lock
            if record is not None:
                await store.release(record)
        if isinstance(exc, IntegrityError):
            raise GRPCError(Status.ABORTED, "The call conflicts with a concurrent change") from exc
        if is_data_error(exc):
            raise GRPCError(Status.INVALID_ARGUMENT, "A value is not acceptable") from exc
        raise
    return reply
