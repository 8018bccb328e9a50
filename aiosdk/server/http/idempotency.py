"""Every HTTP request in one unit of work; mutating ones honour ``Idempotency-Key``.

A mutating request's answer is held back until its writes have committed (with its stored answer,
when it carries a key; see :mod:`aiosdk.server.idempotency`), so that a client, or a retry, that
sees an answer sees a change that is in the database, exactly once:

* 2xx/3xx: the writes and the stored answer commit together, then the answer is sent;
* 4xx: the writes roll back; the answer is stored (a repeat gets the same refusal) and sent;
* 5xx or an exception: the writes roll back and the claim is released, so a retry runs again.

A repeat of a keyed request replays the stored answer with ``Idempotent-Replayed: true``; a
different request under the same key gets 422; a repeat while the first still runs gets 409
``idempotency_in_progress`` with ``Retry-After: 1``.
"""

from __future__ import annotations

import anyio
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import Principal
from ..errors import (
    ConflictError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
)
from ..idempotency import (
    VALID_KEY,
    Answer,
    Claim,
    ClaimLost,
    Holder,
    IdempotencyKeyBusy,
    IdempotencyStore,
    Outcome,
    Repeat,
    RequestKey,
    StoredResponse,
    apply_once,
)
from ..unit_of_work import UnitOfWork
from .bodies import receive_body

__all__ = ["MUTATING_METHODS", "REPLAYED_HEADER", "IdempotencyMiddleware", "unit_of_work"]

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED_HEADER = "Idempotent-Replayed"
_STORED_HEADERS = frozenset(
    {
        "content-type",
        "content-language",
        "location",
        "etag",
        "cache-control",  # a replayed secret stays uncacheable
        "pragma",
        "www-authenticate",
        "retry-after",
        "allow",
    }
)
_TRANSIENT = frozenset({408, 429})
"""Refusals that say "not now" rather than "never": not stored, so that a retry runs again."""
_UNIT_OF_WORK = "unit_of_work"


def unit_of_work(scope: Scope) -> UnitOfWork:
    """The unit of work of the request ``scope`` belongs to."""
    uow: UnitOfWork = scope["state"][_UNIT_OF_WORK]
    return uow


class IdempotencyMiddleware:
    """Runs each request in a unit of work; applies keyed mutating requests at most once.

    Must run inside the authentication middleware (keys are scoped per principal) and inside
    the body-size limit (the body is buffered to fingerprint it).
    """

    def __init__(self, app: ASGIApp, store: IdempotencyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        uow = UnitOfWork(self.store.sessions)
        scope.setdefault("state", {})[_UNIT_OF_WORK] = uow
        try:
            if scope["method"] in MUTATING_METHODS:
                await self._mutating(scope, receive, send, uow)
            else:
                await self.app(scope, receive, send)
        finally:
            if uow.opened:
                with anyio.CancelScope(shield=True):
                    await uow.close()

    async def _mutating(self, scope: Scope, receive: Receive, send: Send, uow: UnitOfWork) -> None:
        key = Headers(scope=scope).get("idempotency-key")
        principal: Principal | None = scope["state"].get("principal")
        if key is None or principal is None:  # no key, or a public route: nothing is replayed
            # (a replayed refresh or login would hand its tokens to whoever repeats the request)
            await self._run(scope, receive, send, uow, None)
            return
        if not VALID_KEY.fullmatch(key):
            raise InvalidRequestError("Idempotency-Key must be 1 to 255 printable ASCII characters")
        body = await receive_body(scope, receive)
        try:
            found = await self.store.begin(
                principal.name,
                key,
                scope["method"],
                scope["path"],
                scope.get("query_string", b""),
                body,
            )
        except IdempotencyKeyBusy:
            raise IdempotencyInProgressError("Idempotency-Key is busy; retry") from None
        if isinstance(found, Holder):
            await _answer_repeat(found)(scope, receive, send)
            return
        await self._run(scope, _replay_body(body, receive), send, uow, found)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, uow: UnitOfWork, claim: Claim | None
    ) -> None:
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        async def run() -> Answer[None]:
            await self.app(scope, receive, hold)
            status = held[0]["status"] if held else 500
            outcome = (
                Outcome.DONE
                if status < 400
                else Outcome.FAILED  # a retry runs again: after a 5xx, or when told to wait
                if status >= 500 or status in _TRANSIENT
                else Outcome.REFUSED
            )
            return Answer(outcome, lambda key: _stored(key, status, held), None)

        try:
            await apply_once(self.store, uow, claim, run)
        except ClaimLost:
            raise IdempotencyInProgressError(
                "A retry with this Idempotency-Key took over this request; retry to get its answer"
            ) from None
        except IntegrityError as exc:
            # A uniqueness rule caught a concurrent change that the handler did not foresee.
            raise ConflictError("The request conflicts with a concurrent change; retry") from exc
        # Anything else propagates with nothing sent yet: the outer layer answers it (a 400 for a
        # value the database refused, a 500 otherwise).
        for message in held:
            await send(message)


def _stored(key: RequestKey, status: int, messages: list[Message]) -> StoredResponse:
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    for message in messages:
        if message["type"] == "http.response.start":
            for name, value in message.get("headers", ()):
                decoded = name.decode("latin-1").lower()
                if decoded in _STORED_HEADERS:
                    headers.append((decoded, value.decode("latin-1")))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
    return StoredResponse(status, headers, key.seal(b"".join(chunks)))


def _answer_repeat(holder: Holder) -> Response:
    if holder.repeat is Repeat.MISMATCH:
        raise IdempotencyKeyReusedError("Idempotency-Key was already used for a different request")
    if holder.repeat is Repeat.IN_PROGRESS:
        raise IdempotencyInProgressError("A request with this Idempotency-Key is still in progress")
    record = holder.record
    assert record.status_code is not None
    response = Response(content=holder.answer(), status_code=record.status_code)
    for name, value in record.response_headers or ():
        response.headers.append(name, value)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _replay_body(body: bytearray, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
