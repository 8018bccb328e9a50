"""The session service: sessions, their exports, and the tickets that refer to what they export.

The wire contract is ``aiosdk/v1/sessions.proto``; storage is :mod:`aiosdk.server.tickets`
(:mod:`~aiosdk.server.tickets.registry`), the computations are its
:mod:`~aiosdk.server.tickets.views` and :mod:`~aiosdk.server.tickets.apps`. Every mutating call
runs in one unit of work with its idempotency record (:func:`~.work.mutating`); the bytes of what
a call stops referring to are removed once it committed, those of a view or a computed field it
makes are written before its rows (and removed again if the call fails).

Export, Query and Fetch are idempotent by themselves: the new export's number is the client's,
and the export keeps the digest of the request that made it, so the same request again (a retry
whose answer was lost) gets the same answer, in the same transaction as everything else, without
an idempotency record; Release of a released export does nothing. The client sends them
without an ``idempotency-key`` (one sent is honoured as for any call).

Every use of an export (a query, a publish, a bind, a subscription, an invocation) needs the
session to be the caller's and live, and the caller to read, now, every catalog node the export's
target comes from; fetching a shared or scope ticket needs the same of its target.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import betterproto2
from grpclib import GRPCError, Status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ... import proto
from ..._core.concurrency import to_the_end
from ..._core.ticket_bytes import ParsedTicket, export_bytes, parse_ticket
from ..catalog import nodes
from ..catalog.models import Node
from ..catalog.nodes import Viewer
from ..catalog.paths import parse_path
from ..errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from ..state import ServerState
from ..storage.models import new_id, utcnow
from ..tickets import registry, views
from ..tickets.apps import DATA_TYPES, AppContext, ObjectField, TableField
from ..tickets.models import TicketObject, TicketSession
from ..tickets.registry import Target
from ..unit_of_work import UnitOfWork
from .auth import current_call
from .work import mutating

__all__ = ["SessionService"]

_KINDS = proto.ExportChangeKind


class SessionService(proto.SessionServiceBase):
    """Sessions and tickets (see the module's docstring).

    ``closing`` is set when the server stops: open subscriptions then end with ``UNAVAILABLE``.
    """

    def __init__(self, state: ServerState, closing: asyncio.Event) -> None:
        self.state = state
        self._closing = closing

    @mutating(proto.SessionInfo, read_only_callers=True)
    async def open_session(
        self, message: proto.OpenSessionRequest, work: UnitOfWork
    ) -> proto.SessionInfo:
        """A new session of the caller's, living ``ttl_seconds`` (clamped) without a refresh."""
        settings = self.state.tickets.settings
        ttl = registry.clamp_ttl(
            message.ttl_seconds,
            default=settings.session_ttl,
            maximum=settings.max_session_ttl,
        )
        await work.begin_write()
        session = await registry.open_session(work.session, _owner(), ttl)
        return _session_info(session)

    @mutating(proto.SessionInfo, read_only_callers=True)
    async def refresh_session(
        self, message: proto.RefreshSessionRequest, work: UnitOfWork
    ) -> proto.SessionInfo:
        """Push the session's expiry to now + its ttl."""
        await work.begin_write()
        session = await registry.refresh_session(work.session, _owner(), message.session_id)
        return _session_info(session)

    @mutating(proto.CloseSessionResponse, read_only_callers=True)
    async def close_session(
        self, message: proto.CloseSessionRequest, work: UnitOfWork
    ) -> proto.CloseSessionResponse:
        """End the session, releasing everything it exported."""
        await work.begin_write()
        released, data_ids = await registry.close_session(
            work.session, _owner(), message.session_id
        )
        self._released(work, message.session_id, data_ids)
        return proto.CloseSessionResponse(released=released)

    @mutating(proto.ExportInfo, read_only_callers=True)
    async def export(self, message: proto.ExportRequest, work: UnitOfWork) -> proto.ExportInfo:
        """Export the catalog node at ``path`` as export ``number``."""
        number = _new_number(message.number)
        keys = parse_path(message.path)
        if keys[:1] == [registry.TICKET_ROOT]:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"{message.path[:300]!r} is an export's path, not a catalog node's: use its ticket",
            )
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, _owner(), message.session_id, lock=True)
        request = _digest("Export", message)
        replay = await self._replay(db, session, number, request)
        if replay is not None:
            return replay
        read = await nodes.read_node(db, await self._viewer(db), message.path)
        node = read.node
        target = Target(
            type=node.structure_family,
            node_id=node.id,
            sources=(node.id,),
            revision=node.revision,
        )
        await _add_export(db, session, number, target, request)
        return _export_info(session.id, number, target, node.structure)

    @mutating(proto.ExportInfo, read_only_callers=True)
    async def query(self, message: proto.QueryRequest, work: UnitOfWork) -> proto.ExportInfo:
        """Compute a view of an export of the session into a new export ``number``."""
        number = _new_number(message.number)
        owner = _owner()
        request = _digest("Query", message)
        # What the computation needs, read in a transaction of its own, ended before it (a
        # view may take a while: no connection is held meanwhile).
        async with self.state.sessions() as reading:
            session = await registry.live_session(reading, owner, message.session_id)
            replay = await self._replay(reading, session, number, request)
            if replay is not None:
                return replay
            target = await self._usable(reading, session, message.source, "source")
            view: views.TableQuery | views.ArrayQuery
            if message.table is not None:
                family, view = "table", views.table_query(message.table)
            elif message.array is not None:
                family, view = "array", views.array_query(message.array)
            else:
                raise GRPCError(Status.INVALID_ARGUMENT, "A query needs a view: table or array")
            if target.type != family:
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"A {family} view needs a {family} export, not a {target.type!r} one",
                )
            source = await _data_ref(reading, target)
            # A view of what was computed for someone is theirs alone too.
            computed_for = None
            if target.object_id is not None and not target.sources:
                computed_for = (await registry.get_object(reading, target.object_id)).owner
        result_id = new_id()
        async with self.state.tickets.computing:
            result_family, structure = await views.compute_view(
                self.state.blobs, source, view, result_id
            )
        async with self._written(result_id):
            return await self._export_computed(
                work,
                message.session_id,
                number,
                request,
                Target(
                    type=result_family,
                    object_id=result_id,
                    sources=target.sources,
                    revision=target.revision,
                ),
                structure,
                computed_for,
            )

    @mutating(proto.ReleaseResponse, read_only_callers=True)
    async def release(
        self, message: proto.ReleaseRequest, work: UnitOfWork
    ) -> proto.ReleaseResponse:
        """Release an export of the session (its number stays used)."""
        number = _export_number(message.ticket, "ticket")
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, _owner(), message.session_id, lock=True)
        data_ids = await registry.release_export(db, session, number)
        self._released(work, session.id, data_ids)
        return proto.ReleaseResponse()

    @mutating(proto.PublishResponse)
    async def publish(
        self, message: proto.PublishRequest, work: UnitOfWork
    ) -> proto.PublishResponse:
        """Make the shared ticket ``shared`` resolve to an export of the session."""
        shared = _ticket_bytes(message.shared, "shared")
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, _owner(), message.session_id, lock=True)
        number = _export_number(message.source, "source")
        await self._usable(db, session, message.source, "source")
        with _taken():
            await registry.publish(db, session, number, shared)
        return proto.PublishResponse()

    @mutating(proto.ExportInfo, read_only_callers=True)
    async def fetch(self, message: proto.FetchRequest, work: UnitOfWork) -> proto.ExportInfo:
        """Export what a shared, scope or application ticket refers to as export ``number``."""
        number = _new_number(message.number)
        ticket = _parsed(message.source, "source")
        owner = _owner()
        request = _digest("Fetch", message)
        if ticket.kind == "application":
            assert ticket.app_id is not None
            assert ticket.field is not None
            return await self._fetch_field(
                work, message.session_id, number, ticket.app_id, ticket.field, request
            )
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, owner, message.session_id, lock=True)
        replay = await self._replay(db, session, number, request)
        if replay is not None:
            return replay
        if ticket.kind == "shared":
            target = await registry.shared_target(db, _ticket_bytes(message.source, "source"))
        elif ticket.kind == "scope":
            assert ticket.name is not None
            target = await registry.scope_target(db, ticket.name)
        else:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "fetch takes a shared, scope or application ticket, not an export ticket",
            )
        if not await registry.readable(db, await self._viewer(db), target):
            raise GRPCError(Status.PERMISSION_DENIED, "You may not read what the ticket refers to")
        await _add_export(db, session, number, target, request)
        return _export_info(session.id, number, target, await _structure(db, target))

    @mutating(proto.BindResponse)
    async def bind(self, message: proto.BindRequest, work: UnitOfWork) -> proto.BindResponse:
        """Bind the scope variable ``name`` to what an export of the session refers to."""
        number = _export_number(message.source, "source")
        await work.begin_write()
        db = work.session
        owner = _owner()
        session = await registry.live_session(db, owner, message.session_id, lock=True)
        await self._usable(db, session, message.source, "source")
        viewer = await self._viewer(db)
        admin = viewer.caller is not None and viewer.caller.is_admin
        data_ids = await registry.bind(
            db, session, message.name, number, owner, may_rebind_any=admin
        )
        self._remove_after_commit(work, data_ids)
        return proto.BindResponse()

    async def subscribe(self, message: proto.SubscribeRequest) -> AsyncIterator[proto.ExportChange]:
        """``READY`` with the export's current revision, then its changes (see the .proto)."""
        number = _export_number(message.ticket, "ticket")
        owner = _owner()
        call = current_call.get()
        async with self.state.sessions() as db:
            session = await registry.live_session(db, owner, message.session_id)
            target = await self._usable(db, session, message.ticket, "ticket")
            revision = await _revision(db, target)
        session_id = session.id
        with contextlib.ExitStack() as stack:
            woken = [stack.enter_context(self.state.tickets.releases.waiter(session_id))]
            wakeups = self.state.catalog.wakeups
            woken += [stack.enter_context(wakeups.waiter(source)) for source in target.sources]
            yield _change(_KINDS.READY, revision)
            while True:
                await _any_set([*woken, self._closing], wakeups.poll_seconds)
                for event in woken:
                    event.clear()  # before the read: a wake-up during it is kept for the wait
                if self._closing.is_set():
                    raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
                if not await call.still_valid():  # logged out, revoked, expired
                    raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")
                async with self.state.sessions() as db:
                    change = await self._change(db, owner, session_id, number, revision)
                if change is None:
                    continue
                yield change
                if change.kind is not _KINDS.UPDATED:
                    return
                revision = change.revision

    @mutating(proto.InvokeObjectResponse)
    async def invoke_object(
        self, message: proto.InvokeObjectRequest, work: UnitOfWork
    ) -> proto.InvokeObjectResponse:
        """Call ``method`` of an exported plugin object with ``arguments_json``."""
        typed = message.object
        if typed is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "object is required")
        _export_number(typed.ticket, "object")
        arguments = _arguments(message.arguments_json)
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, _owner(), message.session_id, lock=True)
        target = await self._usable(db, session, typed.ticket, "object")
        if target.type in DATA_TYPES or target.object_id is None:
            raise GRPCError(
                Status.FAILED_PRECONDITION, f"The export is a {target.type}, not a plugin object"
            )
        if typed.type != target.type:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"The export is a {target.type!r} object, not a {typed.type!r} one",
            )
        current = await registry.lock_object_state(db, target.object_id)
        field = self._object_field(await registry.get_object(db, target.object_id))
        method = field.methods.get(message.method)
        if method is None:
            known = ", ".join(sorted(field.methods))
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"{target.type} has no method {message.method[:100]!r} (it has {known})",
            )
        state, result = method(dict(current), arguments)
        if state != current:
            await registry.update_object_state(db, target.object_id, state)
        try:
            encoded = json.dumps(result, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"{target.type}.{message.method} returned no JSON value") from exc
        return proto.InvokeObjectResponse(result_json=encoded)

    async def list_applications(
        self, message: proto.ListApplicationsRequest
    ) -> proto.ListApplicationsResponse:
        """The applications the server serves, with their fields."""
        return proto.ListApplicationsResponse(
            applications=[
                proto.Application(
                    id=app.id,
                    name=app.name,
                    fields=[
                        proto.ApplicationField(
                            name=name, type=field.type, description=field.description
                        )
                        for name, field in app.fields.items()
                    ],
                )
                for app in self.state.tickets.applications
            ]
        )

    async def _viewer(self, db: AsyncSession) -> Viewer:
        """The caller, as the catalog sees them."""
        caller = await self.state.callers.caller(db, current_call.get().principal)
        return Viewer(caller, self.state.accounts.allow_anonymous)

    async def _usable(
        self, db: AsyncSession, session: TicketSession, ticket: proto.Ticket | None, what: str
    ) -> Target:
        """The target of the export ``ticket`` of ``session`` if the caller may read its
        sources now (``PERMISSION_DENIED`` otherwise)."""
        target = await registry.export_target(db, session, _export_number(ticket, what))
        if not await registry.readable(db, await self._viewer(db), target):
            raise PermissionDeniedError("You may no longer read what the export refers to")
        return target

    async def _fetch_field(
        self,
        work: UnitOfWork,
        session_id: str,
        number: int,
        app_id: str,
        name: str,
        request: str,
    ) -> proto.ExportInfo:
        """Export field ``name`` of application ``app_id``: a table or an array computed for
        the caller (readable by them alone) into a new object, or the application's plugin
        object."""
        owner = _owner()
        field = self.state.tickets.applications.get(app_id).field(name)
        if isinstance(field, ObjectField):
            await work.begin_write()
            db = work.session
            session = await registry.live_session(db, owner, session_id, lock=True)
            replay = await self._replay(db, session, number, request)
            if replay is not None:
                return replay
            object_id = await registry.app_object(
                db, app_id, name, field.type, dict(field.initial_state)
            )
            target = Target(type=field.type, object_id=object_id)
            await _add_export(db, session, number, target, request)
            return _export_info(session.id, number, target, None)
        async with self.state.sessions() as reading:  # (ended before the data is written)
            session = await registry.live_session(reading, owner, session_id)
            replay = await self._replay(reading, session, number, request)
            if replay is not None:
                return replay
            context = AppContext(owner, await self._viewer(reading), reading)
            async with self.state.tickets.computing:
                computed = await field.compute(context)
        family = field.type
        result_id = new_id()
        async with self._written(result_id):
            if isinstance(field, TableField):
                structure = await views.write_table_object(self.state.blobs, result_id, computed)
            else:
                structure = await views.write_array_object(self.state.blobs, result_id, computed)
            target = Target(type=family, object_id=result_id)
            return await self._export_computed(
                work, session_id, number, request, target, structure, owner
            )

    async def _export_computed(
        self,
        work: UnitOfWork,
        session_id: str,
        number: int,
        request: str,
        target: Target,
        structure: dict[str, Any],
        computed_for: str | None,
    ) -> proto.ExportInfo:
        """Record the server object whose data was written (``target.object_id``; a view's, a
        computed field's) and export it as ``number``, in ``work``; the answer of the same
        request made meanwhile instead, if one was (the data written is then removed)."""
        assert target.object_id is not None
        await work.begin_write()
        db = work.session
        session = await registry.live_session(db, _owner(), session_id, lock=True)
        replay = await self._replay(db, session, number, request)  # the same, meanwhile
        if replay is not None:
            self._remove_after_commit(work, [target.object_id])
            return replay
        await registry.new_object(
            db,
            object_id=target.object_id,
            type=target.type,
            family=target.type,
            structure=structure,
            sources=target.sources,
            owner=computed_for,
            revision=target.revision,
        )
        await _add_export(db, session, number, target, request)
        return _export_info(session.id, number, target, structure)

    async def _replay(
        self, db: AsyncSession, session: TicketSession, number: int, request: str
    ) -> proto.ExportInfo | None:
        """The answer again, if export ``number`` was made by this same request (``request``
        its digest) and the caller may still read it: an export's number is the client's, so a
        retry of the call that made it is known by its number and request, with no idempotency
        record of its own."""
        target = await registry.replayed_export(db, session, number, request)
        if target is None:
            return None
        if not await registry.readable(db, await self._viewer(db), target):
            raise PermissionDeniedError("You may no longer read what the export refers to")
        return _export_info(session.id, number, target, await _structure(db, target))

    def _object_field(self, row: TicketObject) -> ObjectField:
        """The application field whose plugin object ``row`` is."""
        if row.app_id is None or row.field is None:
            raise GRPCError(Status.FAILED_PRECONDITION, "The object belongs to no application")
        field = self.state.tickets.applications.get(row.app_id).fields.get(row.field)
        if not isinstance(field, ObjectField):
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"Application {row.app_id!r} no longer has the object field {row.field!r}",
            )
        return field

    async def _change(
        self, db: AsyncSession, owner: str, session_id: str, number: int, revision: int
    ) -> proto.ExportChange | None:
        """What changed about export ``number`` since ``revision``: ``RELEASED`` (or its
        session ended), ``DELETED`` (a source node is gone), ``UPDATED``, or ``None``."""
        try:
            session = await registry.live_session(db, owner, session_id)
            target = await registry.export_target(db, session, number)
        except NotFoundError:
            return _change(_KINDS.RELEASED, revision)
        found = set(await db.scalars(select(Node.id).where(Node.id.in_(target.sources))))
        if found != set(target.sources):
            return _change(_KINDS.DELETED, revision)
        if not await registry.readable(db, await self._viewer(db), target):
            raise GRPCError(
                Status.PERMISSION_DENIED, "You may no longer read what the export refers to"
            )
        current = await _revision(db, target)
        return None if current == revision else _change(_KINDS.UPDATED, current)

    def _released(self, work: UnitOfWork, session_id: str, data_ids: Sequence[str]) -> None:
        """Once ``work`` commits: wake the session's subscriptions, remove ``data_ids``."""
        self.state.tickets.releases.wake(work, session_id)
        self._remove_after_commit(work, data_ids)

    def _remove_after_commit(self, work: UnitOfWork, data_ids: Sequence[str]) -> None:
        remove = self.state.catalog.remove_data
        if data_ids and remove is not None:
            ids = list(data_ids)
            work.after_commit(lambda: remove(ids))

    @contextlib.asynccontextmanager
    async def _written(self, data_id: str) -> AsyncIterator[None]:
        """Remove the data written under ``data_id`` if the block fails (cancelled too: grpclib
        cancels the call's task when its client goes)."""
        try:
            yield
        except BaseException:
            await to_the_end(lambda: self.state.blobs.remove([data_id]))
            raise


def _owner() -> str:
    return current_call.get().principal.name


def _session_info(session: TicketSession) -> proto.SessionInfo:
    return proto.SessionInfo(
        session_id=session.id, ttl_seconds=session.ttl, expires_at=session.expires_at
    )


def _export_info(
    session_id: str, number: int, target: Target, structure: dict[str, Any] | None
) -> proto.ExportInfo:
    return proto.ExportInfo(
        ticket=proto.Ticket(ticket=export_bytes(number)),
        type=target.type,
        structure_json=json.dumps(structure or {}, separators=(",", ":")),
        revision=target.revision,
        path=registry.ticket_path(session_id, number),
    )


def _change(kind: proto.ExportChangeKind, revision: int) -> proto.ExportChange:
    return proto.ExportChange(kind=kind, revision=revision, at=utcnow())


def _ticket_bytes(ticket: proto.Ticket | None, what: str) -> bytes:
    if ticket is None or not ticket.ticket:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{what} is required: a ticket")
    return ticket.ticket


def _parsed(ticket: proto.Ticket | None, what: str) -> ParsedTicket:
    """What ``ticket`` says; ``INVALID_ARGUMENT`` with the codec's reason if malformed."""
    try:
        return parse_ticket(_ticket_bytes(ticket, what))
    except ValueError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{what}: {exc}") from None


def _export_number(ticket: proto.Ticket | None, what: str) -> int:
    """The export number of the export ticket ``ticket``; ``INVALID_ARGUMENT`` otherwise."""
    parsed = _parsed(ticket, what)
    if parsed.number is None:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"{what} must be an export ticket, not a {parsed.kind} one"
        )
    return parsed.number


def _new_number(number: int) -> int:
    if number < 1:
        raise GRPCError(Status.INVALID_ARGUMENT, "number must be 1 or more: the new export's")
    return number


def _arguments(encoded: str) -> dict[str, Any]:
    if not encoded:
        return {}
    try:
        arguments = json.loads(encoded)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"arguments_json is not JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise InvalidRequestError("arguments_json must be a JSON object")
    return arguments


async def _data_ref(db: AsyncSession, target: Target) -> views.DataRef:
    """Where the data of ``target`` (a data export) is."""
    if target.node_id is not None:
        row = (
            await db.execute(
                select(Node.structure_family, Node.structure).where(Node.id == target.node_id)
            )
        ).first()
        if row is None:
            raise NotFoundError("The exported node no longer exists")
        return views.DataRef(row.structure_family, target.node_id, row.structure or {})
    assert target.object_id is not None
    found = await registry.get_object(db, target.object_id)
    if found.family is None:
        raise GRPCError(Status.FAILED_PRECONDITION, f"The export is a {found.type}: it has no data")
    return views.DataRef(found.family, found.id, found.structure or {})


async def _structure(db: AsyncSession, target: Target) -> dict[str, Any] | None:
    """The structure document of ``target``'s data (``None`` for one without)."""
    if target.node_id is not None:
        structure: dict[str, Any] | None = await db.scalar(
            select(Node.structure).where(Node.id == target.node_id)
        )
        return structure
    assert target.object_id is not None
    return (await registry.get_object(db, target.object_id)).structure


async def _revision(db: AsyncSession, target: Target) -> int:
    """The current revision of ``target``: that of its source nodes (the latest of them), or,
    without any, its server object's (a plugin object's changes with its state)."""
    if target.sources:
        latest = await db.scalar(select(func.max(Node.revision)).where(Node.id.in_(target.sources)))
    else:
        latest = await db.scalar(
            select(TicketObject.revision).where(TicketObject.id == target.object_id)
        )
    return target.revision if latest is None else int(latest)


async def _any_set(events: Sequence[asyncio.Event], most_seconds: float) -> None:
    """Return once one of ``events`` is set, or after ``most_seconds``."""
    if any(event.is_set() for event in events):
        return
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=most_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


@contextlib.contextmanager
def _taken() -> Iterator[None]:
    """``ALREADY_EXISTS`` for a number or a shared ticket already used."""
    try:
        yield
    except registry.TicketExistsError as exc:
        raise GRPCError(Status.ALREADY_EXISTS, exc.message) from None


async def _add_export(
    db: AsyncSession, session: TicketSession, number: int, target: Target, request: str
) -> None:
    with _taken():
        await registry.add_export(db, session, number, target, request)


def _digest(method: str, message: betterproto2.Message) -> str:
    """The SHA-256 of a request (of the RPC ``method``) that makes an export (see
    :meth:`SessionService._replay`)."""
    return hashlib.sha256(method.encode() + b"\0" + bytes(message)).hexdigest()
