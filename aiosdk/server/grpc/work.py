"""Mutating RPCs: one unit of work per call, applied once per ``idempotency-key``.

The same store and the same one-transaction rule as the HTTP API (see
:mod:`aiosdk.server.idempotency`): a handler's writes and its stored answer commit together,
and the answer is sent only after that, so a client's retry gets a replay, never a second
application. Refusals (a gRPC error status for a client's mistake) are stored and replayed too;
a failure (an unexpected exception, or a status that says trying again may help) rolls
everything back and releases the key, so a retry runs again. The sequence is
:func:`~aiosdk.server.idempotency.apply_once`, shared with the HTTP API.
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
    Answer,
    Claim,
    ClaimLost,
    IdempotencyKeyBusy,
    IdempotencyStore,
    Outcome,
    Repeat,
    StoredResponse,
    apply_once,
)
from ..state import ServerState
from ..storage.db import is_lock_timeout
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
    reply_type: type[ReplyT], *, read_only_callers: bool = False
) -> Callable[[Handler[ServiceT, RequestT, ReplyT]], Method[ServiceT, RequestT, ReplyT]]:
    """Make ``handler(service, request, work)`` a unary RPC method that runs in its own unit of
    work and honours the call's idempotency key; its replies are ``reply_type`` messages.

    A read-only caller (a token of scope ``"read"``) is refused with ``PERMISSION_DENIED``
    before anything else, unless ``read_only_callers``: a call that writes only the server's
    bookkeeping of what the caller reads (a ticket session's exports), not shared data.
    """

    def decorate(
        handler: Handler[ServiceT, RequestT, ReplyT],
    ) -> Method[ServiceT, RequestT, ReplyT]:
        @functools.wraps(handler)
        async def method(service: ServiceT, request: RequestT) -> ReplyT:
            state = service.state
            call = current_call.get()
            if call.principal.read_only and not read_only_callers:
                raise GRPCError(
                    Status.PERMISSION_DENIED, "The token is read-only: it may only read"
                )
            store = IdempotencyStore(state.sessions, state.keyring)
            work = UnitOfWork(state.sessions)
            try:
                claim = await _claim(store, call, request, reply_type)
                if isinstance(claim, betterproto2.Message):
                    return claim  # a replay
                return await _run(handler, service, request, work, store, claim)
            finally:
                with anyio.CancelScope(shield=True):
                    await work.close()

        return method

    return decorate


async def _claim(
    store: IdempotencyStore, call: Call, request: RequestT, reply_type: type[ReplyT]
) -> Claim | ReplyT | None:
    """Claim the call's key: the claim, ``None`` without a key, or the replayed reply."""
    key = call.idempotency_key
    if key is None:
        return None
    if not VALID_KEY.fullmatch(key):
        raise GRPCError(
            Status.INVALID_ARGUMENT, "idempotency-key must be 1 to 255 printable ASCII characters"
        )
    try:
        holder = await store.begin(
            call.principal.name, key, GRPC_METHOD, call.method, b"", bytes(request)
        )
    except IdempotencyKeyBusy:
        raise GRPCError(Status.UNAVAILABLE, "The idempotency-key is busy; retry") from None
    if isinstance(holder, Claim):
        return holder
    if holder.repeat is Repeat.MISMATCH:
        raise GRPCError(
            Status.INVALID_ARGUMENT, "The idempotency-key was already used for a different call"
        )
    if holder.repeat is Repeat.IN_PROGRESS:
        # Transient, like HTTP's 409 idempotency_in_progress: retrying gets the first answer.
        raise GRPCError(Status.UNAVAILABLE, "A call with this idempotency-key is still running")
    stored = holder.answer()
    if holder.record.status_code:  # a refusal, replayed as it was
        raise GRPCError(Status(holder.record.status_code), stored.decode())
    return reply_type.parse(stored)


# Statuses that say the server failed, or that trying again may help: never stored, the key is
# released, as HTTP does for a 5xx.
_TRANSIENT = frozenset(
    {
        Status.UNAVAILABLE,
        Status.INTERNAL,
        Status.UNKNOWN,
        Status.DEADLINE_EXCEEDED,
        Status.RESOURCE_EXHAUSTED,
        Status.DATA_LOSS,
    }
)


async def _run(
    handler: Handler[ServiceT, RequestT, ReplyT],
    service: ServiceT,
    request: RequestT,
    work: UnitOfWork,
    store: IdempotencyStore,
    claim: Claim | None,
) -> ReplyT:
    async def run() -> Answer[ReplyT | GRPCError]:
        try:
            reply = await handler(service, request, work)
        except (GRPCError, HTTPException) as exc:
            error = exc if isinstance(exc, GRPCError) else grpc_error(exc)
            outcome = Outcome.FAILED if error.status in _TRANSIENT else Outcome.REFUSED
            refusal = (error.message or "").encode()
            return Answer(
                outcome,
                lambda key: StoredResponse(error.status.value, [], key.seal(refusal)),
                error,
            )
        return Answer(
            Outcome.DONE, lambda key: StoredResponse(0, [], key.seal(bytes(reply))), reply
        )

    try:
        answer = await apply_once(store, work, claim, run)
    except ClaimLost:
        raise GRPCError(
            Status.UNAVAILABLE, "A retry with this idempotency-key took this call over; retry"
        ) from None
    except IntegrityError as exc:
        raise GRPCError(Status.ABORTED, "The call conflicts with a concurrent change") from exc
    except Exception as exc:
        if is_data_error(exc):
            raise GRPCError(Status.INVALID_ARGUMENT, "A value is not acceptable") from exc
        if is_lock_timeout(exc):
            raise GRPCError(Status.UNAVAILABLE, "The database stayed locked; retry") from exc
        raise
    if isinstance(answer.value, GRPCError):
        raise answer.value from None
    return answer.value
