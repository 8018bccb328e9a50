"""Sessions: objects kept on the server for a while, referred to by tickets (gRPC).

A session belongs to the user whose credentials opened it, and lives until it is closed or goes
its ttl without a refresh. What it exports (a catalog node, the result of a query computed on
the server, an application's field, a plugin object) is referred to by an
:class:`~aiosdk.ExportTicket` whose number the client chooses, so calls can be pipelined
without waiting for each other's answers. An export lives until the session releases it or
ends: closing a session, or its expiry, releases everything it exported.

An export's data is read over HTTP by ticket, through the catalog's data path
(:meth:`AsyncSession.open`). It can be published to a :class:`~aiosdk.SharedTicket`, which
another user's session fetches if that user may read what it refers to, or bound to a scope
variable (a :class:`~aiosdk.ScopeTicket`), global to the server. Applications, plugins the
server runs, expose fields (tables, arrays, plugin objects) by
:class:`~aiosdk.ApplicationTicket`.

A session keeps itself alive: a task of its own refreshes it at about half its ttl (with
jitter), whatever the other calls of the session do, retrying failures with backoff until the
expiry passes. A session the server no longer knows, or whose expiry passed, is over: every
later call raises :class:`~aiosdk.SessionExpiredError` at once; after closing,
:class:`~aiosdk.SessionClosedError`. Exports, queries, fetches and releases are idempotent
by themselves (the server knows a repeat of the request that made an export by its number), so
every retry mode retries them; the other mutating calls carry an idempotency key, so the
``"forceful"`` retry mode retries them without applying them twice. gRPC needs asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import operator
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
from typing_extensions import Self

from .._core.concurrency import to_the_end
from .._core.context import ClientContext
from .._core.errors import (
    AiosdkError,
    ConfigurationError,
    NotFoundError,
    ProtocolError,
    SessionClosedError,
    SessionExpiredError,
)
from ..catalog.arrays import Selection
from ..catalog.containers import node_from_item
from ..catalog.metadata import freeze
from ..catalog.nodes import AsyncNode, join_path
from ..catalog.queries import Query, encode_filters
from ..proto import (
    ArrayView,
    AxisSelection,
    BindRequest,
    CloseSessionRequest,
    ExportChangeKind,
    ExportRequest,
    FetchRequest,
    InvokeObjectRequest,
    ListApplicationsRequest,
    OpenSessionRequest,
    PublishRequest,
    QueryRequest,
    RefreshSessionRequest,
    ReleaseRequest,
    SessionInfo,
    SessionServiceStub,
    SortKey,
    SubscribeRequest,
    TableView,
)
from ..proto import ExportChange as WireChange
from ..proto import ExportInfo as WireExport
from .ticket import (
    ApplicationTicket,
    ExportTicket,
    ScopeTicket,
    ServerObject,
    SharedTicket,
    Ticket,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "REDUCTIONS",
    "Application",
    "ApplicationField",
    "AsyncPluginObject",
    "AsyncSession",
    "ExportChange",
    "ExportInfo",
]

log = logging.getLogger("aiosdk")

T = TypeVar("T")

CLOSE_TIMEOUT = 10.0
"""Seconds closing a session waits for the server's answer (the session expires anyway)."""
REDUCTIONS = frozenset({"sum", "mean", "min", "max"})
"""What an array query can reduce with."""
DATA_TYPES = frozenset({"table", "array", "sparse", "container"})
"""The types of exports that are data (read by ticket), not plugin objects."""
_JITTER = 0.1  # refreshes come at half the ttl, ± this fraction of it
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CHANGES: dict[ExportChangeKind, Literal["updated", "deleted", "released"]] = {
    ExportChangeKind.UPDATED: "updated",
    ExportChangeKind.DELETED: "deleted",
    ExportChangeKind.RELEASED: "released",
}


@dataclass(frozen=True)
class ExportInfo:
    """What an export of a session refers to, as the server said when it was made.

    Attributes:
        ticket: the export's ticket.
        type: ``"table"``, ``"array"``, ``"sparse"``, ``"container"``, or a plugin object's
            type (``"Counter"``).
        structure: the data's structure, as a node's (columns, shape, chunks...), read-only;
            empty for a plugin object or a container.
        revision: the revision of what it was made from, then.
        path: the catalog path that reads it by ticket (``"~session/<session id>/<number>"``).
    """

    ticket: ExportTicket
    type: str
    structure: dict[str, Any]
    revision: int
    path: str


@dataclass(frozen=True)
class ExportChange:
    """A change of an exported object, pushed by :meth:`AsyncSession.subscribe`.

    Attributes:
        kind: ``"updated"`` (the object, or a view's source, changed), ``"deleted"`` (its source
            was deleted) or ``"released"`` (the export was released, or the session ended). The
            subscription ends after ``"deleted"`` and ``"released"``.
        revision: the object's revision after the change.
        at: when the change was seen (UTC).
    """

    kind: Literal["updated", "deleted", "released"]
    revision: int
    at: datetime


@dataclass(frozen=True)
class ApplicationField:
    """A field of an application: ``type`` is ``"table"``, ``"array"`` or a plugin object's."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class Application:
    """An application the server runs, and the fields it exposes (fetch one by
    :meth:`ticket`)."""

    id: str
    name: str
    fields: tuple[ApplicationField, ...]

    def ticket(self, field: str) -> ApplicationTicket:
        """The ticket of the field ``field``."""
        return ApplicationTicket.app_ticket(self.id, field)


class AsyncPluginObject:
    """A plugin object on the server (an application's, such as the built-in ``"Counter"``),
    exported by a session: ``await obj.get()``, ``await obj.invoke("increment", by=2)``.

    It lives as long as its export: ``await session.release(obj.ticket)`` lets it go.

    Attributes:
        type: the object's type.
        ticket: its export ticket in the session.
    """

    def __init__(self, session: AsyncSession, type: str, ticket: ExportTicket) -> None:
        self._session = session
        self.type: str = type
        self.ticket: ExportTicket = ticket

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type} {self.ticket!r}>"

    async def get(self) -> Any:
        """The object's state (its method ``"get"``, which every plugin object has)."""
        return await self._session._invoke(self, "get", {})

    async def invoke(self, method: str, /, **arguments: Any) -> Any:
        """Call the object's method ``method`` with ``arguments`` (JSON values) on the server;
        what it returns (a JSON value). An unknown method, or bad arguments, is a
        :class:`~aiosdk.BadRequestError`."""
        return await self._session._invoke(self, method, arguments)


class AsyncSession:
    """A session of tickets on the server, as an async context manager:
    ``async with client.session() as s:`` opens it, and leaving the block closes it (the server
    releases everything it exported).

    ``t = await s.export("alice/x/events")``, ``v = await s.query(t, where=Key("v") > 3)``,
    ``await s.open(v).read()``, ``await s.publish(v)``, ``await s.bind("latest", v)``,
    ``await s.fetch(ticket)``, ``await s.fetch_object(ServerObject("Counter", ticket))``,
    ``async for change in s.subscribe(t)``, ``await s.release(t)``.

    A task of its own refreshes it at about half its ttl (``ttl``: the server's default if
    ``None``, at most the server's maximum). Once it has ended (expired, or unknown to the
    server), every call raises :class:`~aiosdk.SessionExpiredError` at once; once closed,
    :class:`~aiosdk.SessionClosedError`.
    """

    def __init__(self, ctx: ClientContext, ttl: float | None = None) -> None:
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise ConfigurationError(f"ttl must be a positive number of seconds, not {ttl!r}")
        self._ctx = ctx
        self._requested = None if ttl is None else float(ttl)
        self._info = SessionInfo()
        self._expires_at = _EPOCH
        self._deadline = 0.0  # the time.monotonic() instant it expires at, as last refreshed
        self._state: Literal["new", "open", "ended", "closed"] = "new"
        self._ended = ""  # why it ended
        self._numbers = itertools.count(1)
        self._exports: dict[int, ExportInfo] = {}
        self._keeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        if self._state == "new":
            return f"<{type(self).__name__} not open>"
        return (
            f"<{type(self).__name__} {self._info.session_id!r} {self._state}"
            f" ttl={self._info.ttl_seconds:g} exports={len(self._exports)}>"
        )

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session's id (in every call, and in its exports' paths)."""
        return self._opened().session_id

    @property
    def ttl(self) -> float:
        """The lifetime without a refresh that the server granted, in seconds."""
        return self._opened().ttl_seconds

    @property
    def expires_at(self) -> datetime:
        """When the session expires without another refresh (UTC, the server's clock)."""
        self._opened()
        return self._expires_at

    @property
    def closed(self) -> bool:
        """Whether the session is over: closed, expired, or unknown to the server."""
        return self._state in ("ended", "closed")

    def _opened(self) -> SessionInfo:
        if self._state == "new":
            raise SessionClosedError(_NOT_OPEN)
        return self._info

    async def __aenter__(self) -> Self:
        """Open the session on the server, and start keeping it alive."""
        if self._state != "new":
            raise SessionClosedError("a session opens once: make a new one with session()")
        request = OpenSessionRequest(ttl_seconds=self._requested)
        sent = time.monotonic()
        info = await self._ctx.grpc_unary(
            SessionServiceStub,
            lambda stub: stub.open_session(request),
            idempotent=False,
            what="OpenSession",
        )
        self._accept(info, sent)
        self._state = "open"
        self._ctx.transport.closing_with.add(self)
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"aiosdk session {info.session_id} keep-alive"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session: :meth:`aclose`."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session: the server releases everything it exported (and the shared
        tickets published from them stop resolving; scope variables stay bound).

        Stops the keep-alive. Closing a closed session does nothing; closing its client closes
        it first. The server's answer is awaited for at most :data:`CLOSE_TIMEOUT` seconds,
        even if the caller is cancelled meanwhile; a session the server cannot be told about
        expires by itself.
        """
        state, self._state = self._state, "closed"
        self._exports.clear()
        self._ctx.transport.closing_with.discard(self)
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
        await to_the_end(lambda: self._close(keeper, tell=state == "open"))

    async def _close(self, keeper: asyncio.Task[None] | None, *, tell: bool) -> None:
        """Wait until the keep-alive has stopped; then tell the server, if ``tell``."""
        if keeper is not None:
            await asyncio.wait([keeper])
        if not tell:
            return
        request = CloseSessionRequest(session_id=self._info.session_id)
        ctx = self._within(CLOSE_TIMEOUT)
        try:
            await ctx.grpc_unary(
                SessionServiceStub,
                lambda stub: stub.close_session(request),
                idempotent=True,
                what="CloseSession",
            )
        except NotFoundError:
            pass  # it had ended already
        except AiosdkError as exc:
            log.warning(
                "closing session %s failed (%s); the server ends it when its ttl passes",
                request.session_id,
                exc,
            )

    def _accept(self, info: SessionInfo, sent: float) -> None:
        """Take an OpenSession or RefreshSession answer to a request sent at ``sent``."""
        if not info.session_id or not info.ttl_seconds > 0:
            raise ProtocolError(f"unexpected session in the server's answer: {info!r}")
        if self._info.session_id and info.session_id != self._info.session_id:
            raise ProtocolError(f"refreshing {self._info.session_id!r} answered another session")
        self._info = info
        # The server's expiry is its own clock's: the client counts from when it asked (the
        # server's expiry cannot be earlier), on its monotonic clock.
        self._deadline = sent + info.ttl_seconds
        self._expires_at = info.expires_at or datetime.now(timezone.utc) + timedelta(
            seconds=info.ttl_seconds
        )

    async def _keep_alive(self) -> None:
        """Refresh the session at about half its ttl until it ends."""
        try:
            while True:
                await anyio.sleep(
                    self._info.ttl_seconds / 2 * random.uniform(1 - _JITTER, 1 + _JITTER)
                )
                if not await self._refresh():
                    return
        except Exception as exc:  # a bug: say so, and end the session rather than let it lapse
            log.error("the keep-alive of session %s failed", self._info.session_id, exc_info=True)
            self._end(f"the keep-alive of session {self._info.session_id} failed: {exc!r}")

    async def _refresh(self) -> bool:
        """Refresh the session, retrying with backoff until that works or its expiry passes;
        whether it lives on."""
        request = RefreshSessionRequest(session_id=self._info.session_id)
        failures = 0
        while self._state == "open":
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self._end(f"{_refresh_failed(request.session_id)}; it expired")
                return False
            ctx = self._within(remaining)
            sent = time.monotonic()
            try:
                info = await ctx.grpc_unary(
                    SessionServiceStub,
                    lambda stub: stub.refresh_session(request),
                    idempotent=True,
                    what="RefreshSession",
                )
                if self._state != "open":
                    return False
                self._accept(info, sent)
            except NotFoundError:
                self._end(
                    f"the server no longer knows session {request.session_id}: it expired or"
                    " was closed, and released everything it exported"
                )
                return False
            except AiosdkError as exc:
                failures += 1
                left = max(0.0, self._deadline - time.monotonic())
                wait = min(ctx.options.retry.backoff(failures), left)
                log.warning(
                    "%s (%s); trying again in %.2f s",
                    _refresh_failed(request.session_id),
                    exc,
                    wait,
                )
                await anyio.sleep(wait)
                continue
            return True
        return False

    def _within(self, seconds: float) -> ClientContext:
        """The client's context, with a deadline of at most ``seconds`` (its own if shorter)."""
        options = self._ctx.options
        deadline = seconds if options.deadline is None else min(options.deadline, seconds)
        return ClientContext(self._ctx.transport, options.merged(deadline=deadline))

    def _end(self, why: str) -> None:
        """The session is over on the server: every later call raises SessionExpiredError."""
        if self._state != "open":
            return
        self._state, self._ended = "ended", why
        self._exports.clear()
        log.warning("%s", why)
        keeper = self._keeper
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()

    def _gone(self) -> AiosdkError | None:
        """The error of a call now, if the session cannot take one (it is over)."""
        if self._state == "open" and time.monotonic() >= self._deadline:
            self._end(
                f"session {self._info.session_id} expired at {self._expires_at:%Y-%m-%d %H:%M:%S}"
                " UTC: it could not be refreshed in time"
            )
        if self._state == "open":
            return None
        if self._state == "ended":
            return SessionExpiredError(self._ended, status_code=404)
        return SessionClosedError(_NOT_OPEN if self._state == "new" else _CLOSED)

    def _live(self) -> str:
        """The session's id, if it can take a call now."""
        error = self._gone()
        if error is not None:
            raise error
        return self._info.session_id

    async def _call(
        self,
        what: str,
        invoke: Callable[[SessionServiceStub, str], Awaitable[T]],
        *,
        idempotent: bool = False,
    ) -> T:
        """One unary call naming the session: mutating ones (the default) with an
        idempotency key; a NOT_FOUND answer of a session that has ended meanwhile is a
        SessionExpiredError. Export, Query and Fetch are idempotent without one: the new
        export's number is chosen here, and the server answers a repeat of the request that
        made an export with that export (Release of a released export does nothing)."""
        session_id = self._live()
        try:
            return await self._ctx.grpc_unary(
                SessionServiceStub,
                lambda stub: invoke(stub, session_id),
                idempotent=idempotent,
                what=what,
            )
        except NotFoundError as exc:
            gone = self._gone()
            if gone is not None:
                raise gone from exc
            raise

    # -- exports -----------------------------------------------------------------------------

    def _ticket(self) -> ExportTicket:
        """The ticket of a new export: the session's next number."""
        return ExportTicket.export_ticket(next(self._numbers))

    def _exported(self, wire: WireExport, ticket: ExportTicket) -> ExportTicket:
        """Remember the export the server made (its ``ExportInfo`` answer) at ``ticket``."""
        if wire.ticket is not None and wire.ticket.ticket != ticket.bytes:
            raise ProtocolError(f"asked for {ticket!r}, the server answered another ticket")
        try:
            structure = json.loads(wire.structure_json or "{}")
        except ValueError as exc:
            raise ProtocolError(f"the structure of {ticket!r} is not JSON: {exc}") from exc
        if not isinstance(structure, dict) or not wire.type or not wire.path:
            raise ProtocolError(f"unexpected export in the server's answer: {wire!r}")
        if self._state == "open":
            self._exports[ticket.number] = ExportInfo(
                ticket, wire.type, freeze(structure), wire.revision, wire.path
            )
        return ticket

    async def export(self, path: str | AsyncNode) -> ExportTicket:
        """Export the catalog node at ``path`` (or the node ``path``), which the user may read;
        its ticket."""
        full = join_path("", path.path if isinstance(path, AsyncNode) else path)
        ticket = self._ticket()
        wire = await self._call(
            "Export",
            lambda stub, sid: stub.export(
                ExportRequest(session_id=sid, number=ticket.number, path=full)
            ),
            idempotent=True,  # by its number (see _call)
        )
        return self._exported(wire, ticket)

    async def query(
        self,
        source: ExportTicket,
        *,
        where: Query | Iterable[Query] | None = None,
        columns: Sequence[str] | None = None,
        sort: str | Sequence[str] | None = None,
        head: int | None = None,
        tail: int | None = None,
        slice: Selection = None,
        reduce: str | None = None,
        axis: int | None = None,
    ) -> ExportTicket:
        """A view of the table or array ``source`` exports, computed on the server, as a new
        export (read it with :meth:`open`); its ticket.

        A table's view keeps the rows that match ``where`` (the catalog's queries, each key a
        column: ``Key("v") > 3``, or a list of them, ANDed), sorted by ``sort`` (a column, or
        several; ``"-t"`` for descending), cut to the first ``head`` or the last ``tail`` rows
        (not both), with ``columns`` (in that order; all by default).

        An array's view is the part ``slice`` selects (numpy basic indexing by ints and
        slices: ``numpy.s_[10:20, ::2]``), reduced with ``reduce`` (``"sum"``, ``"mean"``,
        ``"min"`` or ``"max"``) along ``axis`` of the selection (``None``: all of them).
        """
        ticket = self._export_ticket(source, "query")
        table = any(v is not None for v in (where, columns, sort, head, tail))
        array = any(v is not None for v in (slice, reduce, axis))
        if table and array:
            raise ConfigurationError(
                "a query is of a table (where, columns, sort, head, tail) or of an array"
                " (slice, reduce, axis), not both"
            )
        known = self._exports.get(ticket.number)
        if array or (not table and known is not None and known.type == "array"):
            view: dict[str, Any] = {"array": _array_view(slice, reduce, axis)}
        else:
            view = {"table": _table_view(where, columns, sort, head, tail)}
        result = self._ticket()
        wire = await self._call(
            "Query",
            lambda stub, sid: stub.query(
                QueryRequest(session_id=sid, source=ticket.pb_ticket, number=result.number, **view)
            ),
            idempotent=True,
        )
        return self._exported(wire, result)

    async def fetch(self, ticket: SharedTicket | ScopeTicket | ApplicationTicket) -> ExportTicket:
        """Export what a shared, scope or application ticket refers to, in this session; the
        new export's ticket. A shared or scope ticket needs the user to be allowed to read
        what it refers to (else :class:`~aiosdk.PermissionDeniedError`); one that resolves to
        nothing (its source released, an unbound name, an unknown application or field) is a
        :class:`~aiosdk.NotFoundError`."""
        if not isinstance(ticket, SharedTicket | ScopeTicket | ApplicationTicket):
            raise ConfigurationError(
                f"fetch takes a shared, scope or application ticket, not {_described(ticket)}"
            )
        result = self._ticket()
        wire = await self._call(
            "Fetch",
            lambda stub, sid: stub.fetch(
                FetchRequest(session_id=sid, source=ticket.pb_ticket, number=result.number)
            ),
            idempotent=True,
        )
        return self._exported(wire, result)

    async def release(self, ticket: ExportTicket) -> None:
        """Release an export of this session: the server drops it (and what only it kept),
        its shared tickets stop resolving, and its number is never used again. Releasing it
        again does nothing; a number this session never used is a
        :class:`~aiosdk.NotFoundError`."""
        source = self._export_ticket(ticket, "release")
        try:
            await self._call(
                "Release",
                lambda stub, sid: stub.release(
                    ReleaseRequest(session_id=sid, ticket=source.pb_ticket)
                ),
                idempotent=True,
            )
        except NotFoundError:
            self._exports.pop(source.number, None)  # it was no live export
            raise
        self._exports.pop(source.number, None)

    def info(self, ticket: ExportTicket) -> ExportInfo:
        """What the export ``ticket`` of this session refers to (its type, structure and
        path), as the server said when it was made; a
        :class:`~aiosdk.ConfigurationError` for a ticket that is no live export of it."""
        source = self._export_ticket(ticket, "describe")
        found = self._exports.get(source.number)
        if found is None:
            raise ConfigurationError(
                f"{source!r} is no export of this session (released, or never made by it)"
            )
        return found

    def open(self, ticket: ExportTicket) -> AsyncNode:
        """The data the export ``ticket`` refers to, as a catalog node read by ticket: an
        :class:`~aiosdk.AsyncTableClient`, :class:`~aiosdk.AsyncArrayClient`,
        :class:`~aiosdk.AsyncSparseClient` or :class:`~aiosdk.AsyncContainer`
        (``await s.open(view).read()``), read-only.

        Made from what the export's answer said (no request): its metadata is not read until
        ``await node.refresh()``. Its reads go through the data path of any node, at the
        export's ``path``, while the export lives.
        """
        self._live()
        found = self.info(ticket)
        if found.type not in DATA_TYPES:
            raise ConfigurationError(
                f"{found.ticket!r} is a {found.type!r}, not data: use fetch_object()"
            )
        item = {
            "id": found.path,
            "key": str(found.ticket.number),
            "path": found.path,
            "parent": None,
            "structure_family": found.type,
            "structure": found.structure,
            "revision": found.revision,
            "allowed_actions": ["read"],
        }
        return node_from_item(self._ctx, item)

    async def publish(
        self, source: ExportTicket, shared: SharedTicket | None = None
    ) -> SharedTicket:
        """Publish the export ``source`` to the shared ticket ``shared`` (a new random one by
        default), which the sessions of users who may read it can :meth:`fetch` until
        ``source`` is released; the shared ticket. One taken already is a
        :class:`~aiosdk.ConflictError`."""
        ticket = self._export_ticket(source, "publish")
        if shared is None:
            shared = SharedTicket.random_ticket()
        elif not isinstance(shared, SharedTicket):
            raise ConfigurationError(f"publish to a SharedTicket, not {_described(shared)}")
        target = shared.pb_ticket
        await self._call(
            "Publish",
            lambda stub, sid: stub.publish(
                PublishRequest(session_id=sid, source=ticket.pb_ticket, shared=target)
            ),
        )
        return shared

    async def bind(self, name: str, source: ExportTicket) -> ScopeTicket:
        """Bind the scope variable ``name`` (1 to 255 characters, as a catalog key) to what
        the export ``source`` refers to, replacing what it was bound to; its ticket. The
        variable is global (every session of every user who may read it can :meth:`fetch`
        it) and outlives this session."""
        scope = ScopeTicket.scope_ticket(name)
        ticket = self._export_ticket(source, "bind")
        await self._call(
            "Bind",
            lambda stub, sid: stub.bind(
                BindRequest(session_id=sid, name=scope.name, source=ticket.pb_ticket)
            ),
        )
        return scope

    async def subscribe(self, ticket: ExportTicket) -> AsyncIterator[ExportChange]:
        """The changes of the object the export ``ticket`` refers to (a view: of its source),
        pushed by the server as they happen, until the caller stops iterating, or after a
        ``"deleted"`` or ``"released"`` one.

        A change since the export was made comes first, and reconnections (as the retry mode
        allows) lose none: one missed meanwhile comes as an ``"updated"`` with the revision
        found on (re)connecting.
        """
        source = self._export_ticket(ticket, "subscribe to")
        session_id = self._live()
        request = SubscribeRequest(session_id=session_id, ticket=source.pb_ticket)
        known = self._exports.get(source.number)
        last = None if known is None else known.revision  # the revision last seen

        def open_stream(
            stub: SessionServiceStub, _last: WireChange | None
        ) -> AsyncIterator[WireChange]:
            return stub.subscribe(request)

        stream = self._ctx.grpc_stream(
            SessionServiceStub, open_stream, idempotent=True, what="Subscribe"
        )
        try:
            async for wire in stream:
                at = wire.at if wire.at is not None else _EPOCH
                if wire.kind is ExportChangeKind.READY:
                    if last is not None and wire.revision != last:
                        yield ExportChange("updated", wire.revision, at)
                    last = wire.revision
                    continue
                kind = _CHANGES.get(wire.kind)
                if kind is None:
                    raise ProtocolError(f"Subscribe: unknown change kind {wire.kind!r}")
                last = wire.revision
                if kind == "released":
                    self._exports.pop(source.number, None)
                yield ExportChange(kind, wire.revision, at)
                if kind != "updated":
                    return
        except NotFoundError as exc:
            gone = self._gone()
            if gone is not None:
                raise gone from exc
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    # -- applications and plugin objects -----------------------------------------------------

    async def applications(self) -> list[Application]:
        """The applications the server runs, with their fields."""
        self._live()
        response = await self._ctx.grpc_unary(
            SessionServiceStub,
            lambda stub: stub.list_applications(ListApplicationsRequest()),
            idempotent=True,
            what="ListApplications",
        )
        return [
            Application(
                app.id,
                app.name,
                tuple(ApplicationField(f.name, f.type, f.description) for f in app.fields),
            )
            for app in response.applications
        ]

    async def fetch_object(self, obj: ServerObject) -> AsyncPluginObject:
        """The plugin object ``obj`` refers to, to call its methods: fetched into this session
        (from an application, shared or scope ticket), or one of its exports.

        ``obj.type`` must be the object's (else a :class:`~aiosdk.ConfigurationError`, and
        what was fetched is released); ``None`` takes the type the export has.
        """
        if not isinstance(obj, ServerObject):
            raise ConfigurationError(f"fetch_object takes a ServerObject, not {obj!r}")
        if isinstance(obj.ticket, ExportTicket):
            ticket, fetched = obj.ticket, False
        elif isinstance(obj.ticket, SharedTicket | ScopeTicket | ApplicationTicket):
            ticket, fetched = await self.fetch(obj.ticket), True
        else:
            raise ConfigurationError(f"no plugin object can be fetched from {obj.ticket!r}")
        found = self._exports.get(ticket.number)
        kind = obj.type if found is None else found.type
        problem = None
        if kind is None:
            problem = f"the type of {ticket!r} is unknown to this session: give ServerObject's type"
        elif kind in DATA_TYPES:
            problem = f"{obj.ticket!r} refers to a {kind!r}, no plugin object: open() it"
        elif obj.type is not None and kind != obj.type:
            problem = f"{obj.ticket!r} refers to a {kind!r}, not a {obj.type!r}"
        if problem is not None:
            if fetched:
                await self.release(ticket)
            raise ConfigurationError(problem)
        assert kind is not None  # (a problem otherwise)
        return AsyncPluginObject(self, kind, ticket)

    async def _invoke(self, obj: AsyncPluginObject, method: str, arguments: dict[str, Any]) -> Any:
        """Call ``method`` of the plugin object ``obj``; its decoded JSON result."""
        if not isinstance(method, str) or not method:
            raise ConfigurationError(f"a method's name is a non-empty string, not {method!r}")
        try:
            encoded = (
                json.dumps(arguments, ensure_ascii=False, allow_nan=False) if arguments else ""
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"the arguments of {method!r} are not JSON: {exc}") from exc
        target = ServerObject(obj.type, obj.ticket).pb_typed_ticket
        response = await self._call(
            "InvokeObject",
            lambda stub, sid: stub.invoke_object(
                InvokeObjectRequest(
                    session_id=sid, object=target, method=method, arguments_json=encoded
                )
            ),
            idempotent=method == "get",  # a read: the others may change the state
        )
        try:
            return json.loads(response.result_json) if response.result_json else None
        except ValueError as exc:
            raise ProtocolError(f"InvokeObject {method!r}: the result is not JSON") from exc

    def _export_ticket(self, ticket: object, what: str) -> ExportTicket:
        if not isinstance(ticket, ExportTicket):
            raise ConfigurationError(
                f"{what} takes an ExportTicket of this session, not {_described(ticket)}"
            )
        return ticket


_NOT_OPEN = "the session is not open: use it as `async with client.session() as s`"
_CLOSED = "the session is closed: open a new one with client.session()"


def _refresh_failed(session_id: str) -> str:
    return f"the keep-alive of session {session_id} could not refresh it"


def _as_index(value: object) -> int | None:
    """``value`` as an int (numpy's too); ``None`` if it is none, or a bool (which numpy takes
    as a mask, not as 0 or 1)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _index(value: object, what: str) -> int:
    index = _as_index(value)
    if index is None:
        raise ConfigurationError(f"{what} is an int, not {value!r}")
    return index


def _count(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    count = _index(value, what)
    if count < 0:
        raise ConfigurationError(f"{what} is 0 or more, not {count}")
    return count


def _table_view(
    where: Query | Iterable[Query] | None,
    columns: Sequence[str] | None,
    sort: str | Sequence[str] | None,
    head: int | None,
    tail: int | None,
) -> TableView:
    """The wire form of a table query (checked)."""
    queries = () if where is None else [where] if isinstance(where, Query) else where
    names = () if columns is None else _names(columns, "columns")
    keys = () if sort is None else _names([sort] if isinstance(sort, str) else sort, "sort")
    if head is not None and tail is not None:
        raise ConfigurationError("a query takes head or tail, not both")
    return TableView(
        columns=list(names),
        where_json=encode_filters(queries) or "",
        sort=[
            SortKey(column=key[1:], descending=True)
            if key.startswith("-")
            else SortKey(column=key, descending=False)
            for key in keys
        ],
        head=_count(head, "head"),
        tail=_count(tail, "tail"),
    )


def _names(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what} is a list of column names, not {values!r}")
    names = tuple(values)
    for name in names:
        if not isinstance(name, str) or not name.lstrip("-"):
            raise ConfigurationError(f"{what}: a column name is a non-empty string, not {name!r}")
    return names


def _array_view(selection: Selection, reduce: str | None, axis: int | None) -> ArrayView:
    """The wire form of an array query (checked)."""
    items = () if selection is None else selection if isinstance(selection, tuple) else (selection,)
    axes = []
    for item in items:
        if isinstance(item, slice):
            if item.step is not None and _index(item.step, "a slice's step") == 0:
                raise ConfigurationError("a slice's step cannot be zero")
            axes.append(
                AxisSelection(
                    start=None if item.start is None else _index(item.start, "a slice's start"),
                    stop=None if item.stop is None else _index(item.stop, "a slice's stop"),
                    step=None if item.step is None else _index(item.step, "a slice's step"),
                )
            )
            continue
        index = _as_index(item)
        if index is None:
            raise ConfigurationError(
                "a query's slice is ints and slices, one per leading axis (no '...', None,"
                f" boolean or array indices), not {item!r}"
            )
        axes.append(AxisSelection(index=index))
    if reduce is not None and reduce not in REDUCTIONS:
        raise ConfigurationError(f"reduce is one of {sorted(REDUCTIONS)}, not {reduce!r}")
    if axis is not None and reduce is None:
        raise ConfigurationError("axis is the axis to reduce along: give reduce too")
    return ArrayView(
        selection=axes, reduce=reduce, axis=None if axis is None else _index(axis, "axis")
    )


def _described(value: object) -> str:
    """``value`` for an error message: a ticket's repr (which hides a shared ticket's secret),
    anything else by its type alone (raw bytes may be a secret)."""
    return repr(value) if isinstance(value, Ticket | ServerObject) else type(value).__name__
