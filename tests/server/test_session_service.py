"""The gRPC session service, over loopback with grpclib's betterproto2 stubs: statuses,
idempotency replays, expiry by the sweeper, subscriptions, tickets across two users, views and
applications."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pyarrow  # type: ignore[import-untyped]
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk import proto
from aiosdk._core.ticket_bytes import (
    application_bytes,
    export_bytes,
    random_shared,
    scope_bytes,
)
from aiosdk.catalog.queries import Key, encode_filters
from aiosdk.cli import build_parser
from aiosdk.cli.serve import server_config
from aiosdk.server import Server, ServerConfig
from aiosdk.server.config import TicketSettings
from aiosdk.server.tickets.apps import AppContext, Application, ArrayField, ObjectField
from aiosdk.server.tickets.models import TicketSession

from ._arrays import new_array, put_all
from ._tables import append, new_table, parse
from .conftest import Users, create, create_token, make_client, unique, url

pytestmark = pytest.mark.anyio


class Sessions:
    """Session service stubs of users (each a new user with a token of its own)."""

    def __init__(self, users: Users, channel: Channel) -> None:
        self.users = users
        self.channel = channel

    async def new(self) -> tuple[str, httpx.AsyncClient, proto.SessionServiceStub]:
        """A new user, an HTTP client of it and its session service stub."""
        name, http = await self.users.new()
        token = (await create_token(self.users.admin, owner=name))["token"]
        return name, http, self.stub(token)

    def stub(self, token: str, key: str | None = None) -> proto.SessionServiceStub:
        metadata = {"authorization": f"Bearer {token}"}
        if key is not None:
            metadata["idempotency-key"] = key
        return proto.SessionServiceStub(self.channel, metadata=metadata)


@pytest.fixture
def sessions(users: Users, channel: Channel) -> Sessions:
    return Sessions(users, channel)


def ticket(number: int) -> proto.Ticket:
    return raw(export_bytes(number))


def raw(data: bytes) -> proto.Ticket:
    return proto.Ticket(ticket=data)


async def refused(call: Any, status: Status) -> str:
    """The message of the error ``call`` (an awaitable) must end with, of ``status``."""
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, info.value.message
    assert info.value.message
    return info.value.message


async def open_session(stub: proto.SessionServiceStub, ttl: float | None = None) -> str:
    info = await stub.open_session(proto.OpenSessionRequest(ttl_seconds=ttl))
    return info.session_id


async def table_node(http: httpx.AsyncClient, parent: str, rows: int = 10) -> str:
    """The path of a new table node under ``parent``: ``t`` 0 to ``rows`` - 1, ``v`` half."""
    table = pyarrow.table(
        {"t": pyarrow.array(range(rows), pyarrow.int64()), "v": [i * 0.5 for i in range(rows)]}
    )
    made = await new_table(http, parent, unique("tab"), table.schema)
    response = await append(http, made["path"], table)
    assert response.status_code == 200, response.text
    path: str = made["path"]
    return path


async def test_open_refresh_close(server: Server, sessions: Sessions) -> None:
    _, _, stub = await sessions.new()
    info = await stub.open_session(proto.OpenSessionRequest())
    assert info.ttl_seconds == 300.0  # the server's default
    assert info.expires_at is not None
    refreshed = await stub.refresh_session(proto.RefreshSessionRequest(session_id=info.session_id))
    assert refreshed.session_id == info.session_id
    assert refreshed.expires_at is not None
    assert refreshed.expires_at >= info.expires_at
    for asked, granted in [(10**9, 86400.0), (0.01, 1.0), (-5, 1.0), (math.inf, 86400.0)]:
        got = await stub.open_session(proto.OpenSessionRequest(ttl_seconds=asked))
        assert got.ttl_seconds == granted
    await refused(
        stub.open_session(proto.OpenSessionRequest(ttl_seconds=math.nan)), Status.INVALID_ARGUMENT
    )

    closed = await stub.close_session(proto.CloseSessionRequest(session_id=info.session_id))
    assert closed.released == 0
    again = await stub.close_session(proto.CloseSessionRequest(session_id=info.session_id))
    assert again.released == 0  # idempotent
    await refused(
        stub.refresh_session(proto.RefreshSessionRequest(session_id=info.session_id)),
        Status.NOT_FOUND,
    )
    await refused(
        stub.refresh_session(proto.RefreshSessionRequest(session_id="no-such-session")),
        Status.NOT_FOUND,
    )


async def test_another_users_session_is_not_found(server: Server, sessions: Sessions) -> None:
    alice, _http, as_alice = await sessions.new()
    _, _, as_bob = await sessions.new()
    session_id = await open_session(as_alice)
    await refused(
        as_bob.refresh_session(proto.RefreshSessionRequest(session_id=session_id)),
        Status.NOT_FOUND,
    )
    await refused(
        as_bob.export(proto.ExportRequest(session_id=session_id, number=1, path=alice)),
        Status.NOT_FOUND,
    )
    await refused(
        as_bob.close_session(proto.CloseSessionRequest(session_id=session_id)), Status.NOT_FOUND
    )
    # still alice's, and alive
    await as_alice.refresh_session(proto.RefreshSessionRequest(session_id=session_id))


async def test_export_release_and_numbers(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    path = await table_node(http, name)
    session_id = await open_session(stub)
    info = await stub.export(proto.ExportRequest(session_id=session_id, number=7, path=path))
    assert info.ticket == ticket(7)
    assert info.type == "table"
    assert "arrow_schema" in json.loads(info.structure_json)
    assert info.revision >= 1
    assert info.path == f"~session/{session_id}/7"
    # The same request again (a retry whose answer was lost) gets the same answer...
    assert (
        await stub.export(proto.ExportRequest(session_id=session_id, number=7, path=path)) == info
    )
    other = await table_node(http, name)
    message = await refused(  # ...another request with its number is refused
        stub.export(proto.ExportRequest(session_id=session_id, number=7, path=other)),
        Status.ALREADY_EXISTS,
    )
    assert "7" in message
    await stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(7)))
    # Released again: nothing to do; and the number stays used, even by the same request.
    await stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(7)))
    await refused(
        stub.export(proto.ExportRequest(session_id=session_id, number=7, path=path)),
        Status.ALREADY_EXISTS,
    )
    await refused(
        stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(8))),
        Status.NOT_FOUND,  # never used
    )
    await refused(
        stub.export(proto.ExportRequest(session_id=session_id, number=0, path=path)),
        Status.INVALID_ARGUMENT,
    )
    top = await stub.export(proto.ExportRequest(session_id=session_id, number=2**32 - 1, path=path))
    assert top.ticket == ticket(2**32 - 1)
    await refused(  # an export's path is no catalog node's
        stub.export(proto.ExportRequest(session_id=session_id, number=4, path=info.path)),
        Status.INVALID_ARGUMENT,
    )
    await refused(
        stub.export(proto.ExportRequest(session_id=session_id, number=2, path="no/such/node")),
        Status.NOT_FOUND,
    )
    await refused(
        stub.export(proto.ExportRequest(session_id=session_id, number=3, path="")),
        Status.INVALID_ARGUMENT,
    )
    for bad in [b"", b"e\x00\x00\x00\x00", b"e12", b"xyz", b"h" + b"1" * 3]:
        message = await refused(
            stub.release(proto.ReleaseRequest(session_id=session_id, ticket=raw(bad))),
            Status.INVALID_ARGUMENT,
        )
        assert "ticket" in message
    await refused(  # a valid ticket, of the wrong kind
        stub.release(proto.ReleaseRequest(session_id=session_id, ticket=raw(scope_bytes("x")))),
        Status.INVALID_ARGUMENT,
    )
    closed = await stub.close_session(proto.CloseSessionRequest(session_id=session_id))
    assert closed.released == 1  # the last one: export 7 was released already


async def test_close_releases_everything(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    path = await table_node(http, name)
    session_id = await open_session(stub)
    async with anyio.create_task_group() as group:  # pipelined: numbers chosen client-side
        for number in range(1, 11):
            group.start_soon(
                stub.export, proto.ExportRequest(session_id=session_id, number=number, path=path)
            )
    shared = raw(random_shared())
    await stub.publish(proto.PublishRequest(session_id=session_id, source=ticket(1), shared=shared))
    closed = await stub.close_session(proto.CloseSessionRequest(session_id=session_id))
    assert closed.released == 10
    other = await open_session(stub)
    await refused(  # its shared ticket went with it
        stub.fetch(proto.FetchRequest(session_id=other, source=shared, number=1)),
        Status.NOT_FOUND,
    )
    await refused(
        stub.export(proto.ExportRequest(session_id=session_id, number=11, path=path)),
        Status.NOT_FOUND,
    )


async def test_idempotency_keys_replay(server: Server, sessions: Sessions) -> None:
    name, http, _stub = await sessions.new()
    token = (await create_token(sessions.users.admin, owner=name))["token"]
    path = await table_node(http, name)
    opened = sessions.stub(token, uuid.uuid4().hex)
    first = await opened.open_session(proto.OpenSessionRequest(ttl_seconds=60))
    again = await opened.open_session(proto.OpenSessionRequest(ttl_seconds=60))
    assert again.session_id == first.session_id  # a replay, not a second session
    session_id = first.session_id

    keyed = sessions.stub(token, uuid.uuid4().hex)
    request = proto.ExportRequest(session_id=session_id, number=1, path=path)
    exported = await keyed.export(request)
    assert await keyed.export(request) == exported  # not ALREADY_EXISTS: the first answer
    query = proto.QueryRequest(
        session_id=session_id, source=ticket(1), number=2, table=proto.TableView(columns=["v"])
    )
    keyed = sessions.stub(token, uuid.uuid4().hex)
    viewed = await keyed.query(query)
    assert await keyed.query(query) == viewed
    # A refusal is replayed as it was, even once the call would now succeed.
    keyed = sessions.stub(token, uuid.uuid4().hex)
    unknown = proto.ReleaseRequest(session_id=session_id, ticket=ticket(3))
    await refused(keyed.release(unknown), Status.NOT_FOUND)
    await _stub.export(proto.ExportRequest(session_id=session_id, number=3, path=path))
    await refused(keyed.release(unknown), Status.NOT_FOUND)


async def test_query_a_table(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    path = await table_node(http, name, rows=20)
    session_id = await open_session(stub)
    await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=path))
    view = proto.TableView(
        columns=["v", "t"],
        where_json=encode_filters([Key("t") >= 5]) or "",
        sort=[proto.SortKey(column="t", descending=True)],
        head=3,
    )
    info = await stub.query(
        proto.QueryRequest(session_id=session_id, source=ticket(1), number=2, table=view)
    )
    assert info.type == "table"
    assert info.path == f"~session/{session_id}/2"
    response = await http.get(f"/table/full/{url(info.path)}")
    assert response.status_code == 200, response.text
    result = parse(response.content)
    assert result.column_names == ["v", "t"]
    assert result.column("t").to_pylist() == [19, 18, 17]
    # A view of a view, then the wrong family, a missing view and an unknown column.
    again = await stub.query(
        proto.QueryRequest(
            session_id=session_id, source=ticket(2), number=3, table=proto.TableView(tail=1)
        )
    )
    assert again.revision == info.revision
    await refused(
        stub.query(
            proto.QueryRequest(
                session_id=session_id, source=ticket(1), number=4, array=proto.ArrayView()
            )
        ),
        Status.FAILED_PRECONDITION,
    )
    await refused(
        stub.query(proto.QueryRequest(session_id=session_id, source=ticket(1), number=4)),
        Status.INVALID_ARGUMENT,
    )
    await refused(
        stub.query(
            proto.QueryRequest(
                session_id=session_id,
                source=ticket(1),
                number=4,
                table=proto.TableView(columns=["nope"]),
            )
        ),
        Status.INVALID_ARGUMENT,
    )
    await refused(
        stub.query(
            proto.QueryRequest(
                session_id=session_id, source=ticket(9), number=4, table=proto.TableView()
            )
        ),
        Status.NOT_FOUND,
    )
    await refused(  # the number is taken
        stub.query(
            proto.QueryRequest(
                session_id=session_id, source=ticket(1), number=2, table=proto.TableView()
            )
        ),
        Status.ALREADY_EXISTS,
    )
    await stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(2)))
    gone = await http.get(f"/table/full/{url(info.path)}")
    assert gone.status_code == 404


async def test_query_an_array(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    values = np.arange(60, dtype="float64").reshape(6, 10)
    made = await new_array(http, name, unique("arr"), "float64", values.shape, (3, 5))
    await put_all(http, made["path"], values, (3, 5))
    session_id = await open_session(stub)
    await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=made["path"]))
    view = proto.ArrayView(
        selection=[proto.AxisSelection(start=1, stop=5), proto.AxisSelection(step=2)],
        reduce="sum",
        axis=0,
    )
    info = await stub.query(
        proto.QueryRequest(session_id=session_id, source=ticket(1), number=2, array=view)
    )
    assert info.type == "array"
    response = await http.get(f"/array/full/{url(info.path)}")
    assert response.status_code == 200, response.text
    got = np.frombuffer(response.content, response.headers["x-aiosdk-dtype"])
    np.testing.assert_allclose(got, values[1:5, ::2].sum(axis=0))
    await refused(
        stub.query(
            proto.QueryRequest(
                session_id=session_id,
                source=ticket(1),
                number=3,
                array=proto.ArrayView(reduce="sum", axis=5),
            )
        ),
        Status.INVALID_ARGUMENT,
    )


async def test_publish_fetch_across_two_users(server: Server, sessions: Sessions) -> None:
    alice, alice_http, as_alice = await sessions.new()
    bob, _bob_http, as_bob = await sessions.new()
    box = await create(alice_http, alice, unique("box"))
    path = await table_node(alice_http, box["path"])
    mine = await open_session(as_alice)
    theirs = await open_session(as_bob)
    await as_alice.export(proto.ExportRequest(session_id=mine, number=1, path=path))
    shared = raw(random_shared())
    await as_alice.publish(proto.PublishRequest(session_id=mine, source=ticket(1), shared=shared))
    await refused(  # taken
        as_alice.publish(proto.PublishRequest(session_id=mine, source=ticket(1), shared=shared)),
        Status.ALREADY_EXISTS,
    )
    await refused(  # not a shared ticket
        as_alice.publish(proto.PublishRequest(session_id=mine, source=ticket(1), shared=ticket(2))),
        Status.INVALID_ARGUMENT,
    )
    message = await refused(
        as_bob.fetch(proto.FetchRequest(session_id=theirs, source=shared, number=1)),
        Status.PERMISSION_DENIED,
    )
    assert "may not read" in message
    granted = await alice_http.put(
        f"/catalog/shares/{url(box['path'])}", json={"namespace": bob, "actions": ["read"]}
    )
    assert granted.status_code == 200, granted.text
    fetched = await as_bob.fetch(proto.FetchRequest(session_id=theirs, source=shared, number=1))
    assert fetched.type == "table"
    assert fetched.path == f"~session/{theirs}/1"
    await as_alice.release(proto.ReleaseRequest(session_id=mine, ticket=ticket(1)))
    await refused(  # the source is released: the shared ticket no longer resolves
        as_bob.fetch(proto.FetchRequest(session_id=theirs, source=shared, number=2)),
        Status.NOT_FOUND,
    )
    await as_bob.refresh_session(proto.RefreshSessionRequest(session_id=theirs))
    await refused(  # an export ticket is no fetch's source
        as_bob.fetch(proto.FetchRequest(session_id=theirs, source=ticket(1), number=3)),
        Status.INVALID_ARGUMENT,
    )


async def test_scope_variables(server: Server, sessions: Sessions) -> None:
    alice, alice_http, as_alice = await sessions.new()
    _bob, _bob_http, as_bob = await sessions.new()
    path = await table_node(alice_http, alice)
    mine = await open_session(as_alice)
    await as_alice.export(proto.ExportRequest(session_id=mine, number=1, path=path))
    name = unique("latest")
    await as_alice.bind(proto.BindRequest(session_id=mine, name=name, source=ticket(1)))
    await refused(
        as_alice.bind(proto.BindRequest(session_id=mine, name="a/b", source=ticket(1))),
        Status.INVALID_ARGUMENT,
    )
    await as_alice.close_session(proto.CloseSessionRequest(session_id=mine))
    scope = raw(scope_bytes(name))
    other = await open_session(as_alice)  # the variable outlives the session that bound it
    fetched = await as_alice.fetch(proto.FetchRequest(session_id=other, source=scope, number=1))
    assert fetched.type == "table"
    theirs = await open_session(as_bob)
    await refused(
        as_bob.fetch(proto.FetchRequest(session_id=theirs, source=scope, number=1)),
        Status.PERMISSION_DENIED,
    )
    await refused(
        as_bob.fetch(
            proto.FetchRequest(session_id=theirs, source=raw(scope_bytes(unique("none"))), number=1)
        ),
        Status.NOT_FOUND,
    )


async def test_applications(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    await table_node(http, name)
    listed = await stub.list_applications(proto.ListApplicationsRequest())
    stats = next(app for app in listed.applications if app.id == "stats")
    fields = {field.name: field.type for field in stats.fields}
    assert fields == {"summary": "table", "counter": "Counter"}
    session_id = await open_session(stub)
    summary = await stub.fetch(
        proto.FetchRequest(
            session_id=session_id,
            source=raw(application_bytes("stats", "summary")),
            number=1,
        )
    )
    assert summary.type == "table"
    response = await http.get(f"/table/full/{url(summary.path)}")
    assert response.status_code == 200, response.text
    rows = parse(response.content).to_pylist()
    assert {row["namespace"] for row in rows} == {name}  # only what this user may read
    counter = await stub.fetch(
        proto.FetchRequest(
            session_id=session_id,
            source=raw(application_bytes("stats", "counter")),
            number=2,
        )
    )
    assert counter.type == "Counter"
    assert json.loads(counter.structure_json) == {}
    typed = proto.TypedTicket(ticket=ticket(2), type="Counter")

    async def invoke(method: str, **arguments: Any) -> Any:
        answer = await stub.invoke_object(
            proto.InvokeObjectRequest(
                session_id=session_id,
                object=typed,
                method=method,
                arguments_json=json.dumps(arguments),
            )
        )
        return json.loads(answer.result_json)

    start = (await invoke("get"))["value"]
    assert await invoke("increment", by=2) == start + 2
    assert (await invoke("get"))["value"] == start + 2
    await refused(invoke("explode"), Status.INVALID_ARGUMENT)
    await refused(invoke("increment", by="two"), Status.INVALID_ARGUMENT)
    await refused(  # the type must match
        stub.invoke_object(
            proto.InvokeObjectRequest(
                session_id=session_id,
                object=proto.TypedTicket(ticket=ticket(2), type="Other"),
                method="get",
            )
        ),
        Status.FAILED_PRECONDITION,
    )
    await refused(  # a table is no plugin object
        stub.invoke_object(
            proto.InvokeObjectRequest(
                session_id=session_id,
                object=proto.TypedTicket(ticket=ticket(1), type="table"),
                method="get",
            )
        ),
        Status.FAILED_PRECONDITION,
    )
    for app_id, field in [("stats", "nothing"), ("no-such-app", "summary")]:
        await refused(
            stub.fetch(
                proto.FetchRequest(
                    session_id=session_id,
                    source=raw(application_bytes(app_id, field)),
                    number=3,
                )
            ),
            Status.NOT_FOUND,
        )


async def test_expired_sessions_are_swept(
    server: Server, sessions: Sessions, database: async_sessionmaker[AsyncSession]
) -> None:
    name, http, stub = await sessions.new()
    path = await table_node(http, name)
    session_id = await open_session(stub, ttl=1)
    await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=path))
    view = await stub.query(
        proto.QueryRequest(
            session_id=session_id, source=ticket(1), number=2, table=proto.TableView(head=1)
        )
    )
    assert (await http.get(f"/table/full/{url(view.path)}")).status_code == 200
    node = await http.get(f"/catalog/nodes/{url(view.path)}")
    data = anyio.Path(server.data_dir) / "blobs" / "tables" / node.json()["id"]
    assert await data.exists()
    with anyio.fail_after(10):  # the sweeper (every 2 s) ends it, untouched
        while True:
            async with database() as db:
                closed = await db.scalar(
                    select(TicketSession.closed_at).where(TicketSession.id == session_id)
                )
            if closed is not None:
                break
            await anyio.sleep(0.2)
    assert (await http.get(f"/table/full/{url(view.path)}")).status_code == 404
    await refused(
        stub.refresh_session(proto.RefreshSessionRequest(session_id=session_id)),
        Status.NOT_FOUND,
    )
    with anyio.fail_after(10):  # the view's data goes once the sweep committed
        while await data.exists():  # noqa: ASYNC110 - polls the file system
            await anyio.sleep(0.1)


async def test_an_expired_session_is_gone_before_the_sweep(
    server: Server, sessions: Sessions
) -> None:
    _name, _http, stub = await sessions.new()
    session_id = await open_session(stub, ttl=1)
    await anyio.sleep(1.2)
    await refused(
        stub.refresh_session(proto.RefreshSessionRequest(session_id=session_id)),
        Status.NOT_FOUND,
    )


async def changes(
    stub: proto.SessionServiceStub, session_id: str, number: int
) -> AsyncIterator[proto.ExportChange]:
    async for change in stub.subscribe(
        proto.SubscribeRequest(session_id=session_id, ticket=ticket(number))
    ):
        yield change


async def test_subscriptions(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    made = await create(http, name, unique("node"), metadata={"n": 0})
    session_id = await open_session(stub)
    await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=made["path"]))
    kinds = proto.ExportChangeKind
    with anyio.fail_after(20):
        stream = changes(stub, session_id, 1)
        ready = await anext(stream)
        assert (ready.kind, ready.revision) == (kinds.READY, made["revision"])
        patched = await http.patch(
            f"/catalog/nodes/{url(made['path'])}", json={"metadata": {"n": 1}}
        )
        assert patched.status_code == 200, patched.text
        updated = await anext(stream)
        assert (updated.kind, updated.revision) == (kinds.UPDATED, patched.json()["revision"])
        assert updated.at is not None
        await stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(1)))
        released = await anext(stream)
        assert released.kind is kinds.RELEASED
        assert [change async for change in stream] == []  # the stream ended

        await stub.export(proto.ExportRequest(session_id=session_id, number=2, path=made["path"]))
        stream = changes(stub, session_id, 2)
        assert (await anext(stream)).kind is kinds.READY
        deleted = await http.delete(f"/catalog/nodes/{url(made['path'])}")
        assert deleted.status_code == 204, deleted.text
        assert (await anext(stream)).kind is kinds.DELETED
        assert [change async for change in stream] == []

        other = await create(http, name, unique("node"))
        await stub.export(proto.ExportRequest(session_id=session_id, number=3, path=other["path"]))
        stream = changes(stub, session_id, 3)
        assert (await anext(stream)).kind is kinds.READY
        await stub.close_session(proto.CloseSessionRequest(session_id=session_id))
        assert (await anext(stream)).kind is kinds.RELEASED  # the session ended
        assert [change async for change in stream] == []
    await refused(anext(changes(stub, session_id, 3)), Status.NOT_FOUND)


async def test_subscription_to_a_view_follows_its_source(
    server: Server, sessions: Sessions
) -> None:
    name, http, stub = await sessions.new()
    path = await table_node(http, name)
    session_id = await open_session(stub)
    await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=path))
    view = await stub.query(
        proto.QueryRequest(
            session_id=session_id, source=ticket(1), number=2, table=proto.TableView(head=2)
        )
    )
    kinds = proto.ExportChangeKind
    with anyio.fail_after(20):
        stream = changes(stub, session_id, 2)
        ready = await anext(stream)
        assert (ready.kind, ready.revision) == (kinds.READY, view.revision)
        more = pyarrow.table({"t": pyarrow.array([99], pyarrow.int64()), "v": [1.0]})
        assert (await append(http, path, more)).status_code == 200
        updated = await anext(stream)
        assert updated.kind is kinds.UPDATED
        assert updated.revision > view.revision
        await stub.close_session(proto.CloseSessionRequest(session_id=session_id))
        assert (await anext(stream)).kind is kinds.RELEASED


async def test_losing_access_ends_every_use(server: Server, sessions: Sessions) -> None:
    alice, alice_http, as_alice = await sessions.new()
    bob, _bob_http, as_bob = await sessions.new()
    box = await create(alice_http, alice, unique("box"))
    path = await table_node(alice_http, box["path"])
    share = f"/catalog/shares/{url(box['path'])}"
    granted = await alice_http.put(share, json={"namespace": bob, "actions": ["read"]})
    assert granted.status_code == 200, granted.text
    mine = await open_session(as_alice)
    await as_alice.export(proto.ExportRequest(session_id=mine, number=1, path=path))
    shared = raw(random_shared())
    await as_alice.publish(proto.PublishRequest(session_id=mine, source=ticket(1), shared=shared))
    theirs = await open_session(as_bob)
    await as_bob.fetch(proto.FetchRequest(session_id=theirs, source=shared, number=1))
    query = proto.QueryRequest(
        session_id=theirs, source=ticket(1), number=2, table=proto.TableView(head=1)
    )
    await as_bob.query(query)
    revoked = await alice_http.delete(share, params={"namespace": bob})
    assert revoked.status_code == 200, revoked.text
    query.number = 3
    await refused(as_bob.query(query), Status.PERMISSION_DENIED)
    await refused(  # the view made while bob could read is his no longer either
        as_bob.bind(proto.BindRequest(session_id=theirs, name=unique("v"), source=ticket(2))),
        Status.PERMISSION_DENIED,
    )
    await refused(anext(changes(as_bob, theirs, 1)), Status.PERMISSION_DENIED)
    await as_bob.release(proto.ReleaseRequest(session_id=theirs, ticket=ticket(1)))  # allowed


def make_app() -> Application:
    """An application of every kind of field (for ``--app`` and ``ServerConfig``)."""

    async def grid(context: AppContext) -> Any:
        return np.arange(6, dtype="int32").reshape(2, 3)

    def flip(state: dict[str, Any], arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        on = not state["on"]
        return {"on": on}, on

    return Application(
        "demo",
        "A demonstration",
        {
            "grid": ArrayField("A 2x3 grid", grid),
            "switch": ObjectField("Switch", "On or off", {"on": False}, {"flip": flip}),
        },
    )


def test_ticket_flags_reach_the_server_config() -> None:
    config = server_config(
        build_parser().parse_args(
            [
                "serve",
                "--ticket-session-ttl",
                "30",
                "--max-ticket-session-ttl",
                "60",
                "--app",
                f"{__name__}:make_app",
            ]
        )
    )
    assert config.tickets == TicketSettings(session_ttl=30, max_session_ttl=60)
    assert [app.id for app in config.applications if isinstance(app, Application)] == ["demo"]
    assert server_config(build_parser().parse_args(["serve"])).tickets == TicketSettings()
    for flags in (["--app", "json"], ["--app", "no_such_module:f"], ["--app", "json:loads"]):
        with pytest.raises(ValueError, match="Application"):
            server_config(build_parser().parse_args(["serve", *flags]))
    for flags in (
        ["--ticket-session-ttl", "100", "--max-ticket-session-ttl", "50"],  # default > max
        ["--max-ticket-session-ttl", "86401"],  # over a day
    ):
        with pytest.raises(ValueError, match="max_session_ttl"):
            server_config(build_parser().parse_args(["serve", *flags]))


async def test_configured_server(tmp_path: Path) -> None:
    """Applications and ttls from the configuration; subscriptions end at shutdown."""
    config = ServerConfig(
        data_dir=tmp_path,
        tickets=TicketSettings(session_ttl=5, max_session_ttl=10, sweep_interval=0.5),
        applications=[f"{__name__}:make_app"],
    )
    async with Server(config) as running:
        channel = Channel(running.grpc_host, running.grpc_port)
        stub = proto.SessionServiceStub(
            channel, metadata={"authorization": f"Bearer {running.admin_token}"}
        )
        try:
            listed = await stub.list_applications(proto.ListApplicationsRequest())
            assert [app.id for app in listed.applications] == ["stats", "demo"]
            assert (await stub.open_session(proto.OpenSessionRequest())).ttl_seconds == 5
            asked = proto.OpenSessionRequest(ttl_seconds=3600)
            assert (await stub.open_session(asked)).ttl_seconds == 10
            session_id = await open_session(stub)
            grid = await stub.fetch(
                proto.FetchRequest(
                    session_id=session_id, source=raw(application_bytes("demo", "grid")), number=1
                )
            )
            assert grid.type == "array"
            async with make_client(running, running.admin_token) as http:
                response = await http.get(f"/array/full/{url(grid.path)}")
            assert response.status_code == 200, response.text
            values = np.frombuffer(response.content, response.headers["x-aiosdk-dtype"])
            assert values.tolist() == list(range(6))
            switch = await stub.fetch(
                proto.FetchRequest(
                    session_id=session_id, source=raw(application_bytes("demo", "switch")), number=2
                )
            )
            flipped = await stub.invoke_object(
                proto.InvokeObjectRequest(
                    session_id=session_id,
                    object=proto.TypedTicket(ticket=switch.ticket, type="Switch"),
                    method="flip",
                )
            )
            assert json.loads(flipped.result_json) is True
            stream = changes(stub, session_id, 2)
            ready = await anext(stream)
            await stub.invoke_object(  # a plugin object's revision follows its state
                proto.InvokeObjectRequest(
                    session_id=session_id,
                    object=proto.TypedTicket(ticket=switch.ticket, type="Switch"),
                    method="flip",
                )
            )
            with anyio.fail_after(10):
                updated = await anext(stream)
            assert (updated.kind, updated.revision) == (
                proto.ExportChangeKind.UPDATED,
                ready.revision + 1,
            )
            with anyio.fail_after(10):
                async with anyio.create_task_group() as group:
                    group.start_soon(running.stop)
                    await refused(anext(stream), Status.UNAVAILABLE)
        finally:
            channel.close()


async def test_a_read_only_token_reads_through_a_session_and_changes_nothing(
    server: Server, sessions: Sessions
) -> None:
    name, http, _stub = await sessions.new()
    path = await table_node(http, name)
    token = (await create_token(sessions.users.admin, owner=name, scope="read"))["token"]
    reader = make_client(server, token)
    stub = sessions.stub(token)
    try:
        session_id = await open_session(stub)
        await stub.refresh_session(proto.RefreshSessionRequest(session_id=session_id))
        await stub.export(proto.ExportRequest(session_id=session_id, number=1, path=path))
        view = await stub.query(
            proto.QueryRequest(
                session_id=session_id, source=ticket(1), number=2, table=proto.TableView(head=3)
            )
        )
        read = await reader.get(f"/table/full/{url(view.path)}")
        assert read.status_code == 200
        assert parse(read.content).num_rows == 3
        # What others would see, or what changes shared state, is refused to it.
        bind = proto.BindRequest(session_id=session_id, name=unique("latest"), source=ticket(2))
        await refused(stub.bind(bind), Status.PERMISSION_DENIED)
        publish = proto.PublishRequest(
            session_id=session_id, source=ticket(2), shared=raw(random_shared())
        )
        await refused(stub.publish(publish), Status.PERMISSION_DENIED)
        await stub.release(proto.ReleaseRequest(session_id=session_id, ticket=ticket(2)))
        closed = await stub.close_session(proto.CloseSessionRequest(session_id=session_id))
        assert closed.released == 1
    finally:
        await reader.aclose()


async def test_what_an_application_computed_for_a_user_is_theirs_alone(
    server: Server, sessions: Sessions
) -> None:
    _alice, _http, alice = await sessions.new()
    _bob, _other, bob = await sessions.new()
    mine, theirs = await open_session(alice), await open_session(bob)
    summary = proto.FetchRequest(
        session_id=mine, source=raw(application_bytes("stats", "summary")), number=1
    )
    await alice.fetch(summary)  # what alice may see: her namespaces' names and counts
    view = proto.QueryRequest(
        session_id=mine, source=ticket(1), number=2, table=proto.TableView(head=1)
    )
    await alice.query(view)  # a view of it is hers alone too
    for number in (1, 2):
        shared = raw(random_shared())
        await alice.publish(
            proto.PublishRequest(session_id=mine, source=ticket(number), shared=shared)
        )
        await refused(
            bob.fetch(proto.FetchRequest(session_id=theirs, source=shared, number=number)),
            Status.PERMISSION_DENIED,
        )
        name = unique("computed")
        await alice.bind(proto.BindRequest(session_id=mine, name=name, source=ticket(number)))
        await refused(
            bob.fetch(
                proto.FetchRequest(session_id=theirs, source=raw(scope_bytes(name)), number=number)
            ),
            Status.PERMISSION_DENIED,
        )


async def test_only_who_bound_a_scope_variable_binds_it_again(
    server: Server, sessions: Sessions
) -> None:
    _alice, http, alice = await sessions.new()
    bob_name, bob_http, bob = await sessions.new()
    mine, theirs = await open_session(alice), await open_session(bob)
    await alice.export(
        proto.ExportRequest(session_id=mine, number=1, path=await table_node(http, _alice))
    )
    await bob.export(
        proto.ExportRequest(session_id=theirs, number=1, path=await table_node(bob_http, bob_name))
    )
    name = unique("latest")
    await alice.bind(proto.BindRequest(session_id=mine, name=name, source=ticket(1)))
    message = await refused(
        bob.bind(proto.BindRequest(session_id=theirs, name=name, source=ticket(1))),
        Status.PERMISSION_DENIED,
    )
    assert "another user" in message
    await alice.bind(proto.BindRequest(session_id=mine, name=name, source=ticket(1)))  # hers


async def test_extreme_inputs_are_no_internal_error(server: Server, sessions: Sessions) -> None:
    name, http, stub = await sessions.new()
    session_id = await open_session(stub)
    await stub.export(
        proto.ExportRequest(session_id=session_id, number=1, path=await table_node(http, name))
    )
    for number, cut in ((2, {"head": 2**64 - 1}), (3, {"tail": 2**63})):
        whole = await stub.query(
            proto.QueryRequest(
                session_id=session_id, source=ticket(1), number=number, table=proto.TableView(**cut)
            )
        )
        read = await http.get(f"/table/full/{url(whole.path)}")
        assert parse(read.content).num_rows == 10
    counter = proto.FetchRequest(
        session_id=session_id, source=raw(application_bytes("stats", "counter")), number=4
    )
    fetched = await stub.fetch(counter)
    invoke = proto.InvokeObjectRequest(
        session_id=session_id,
        object=proto.TypedTicket(ticket=fetched.ticket, type="Counter"),
        method="increment",
        arguments_json="[" * 100_000,
    )
    await refused(stub.invoke_object(invoke), Status.INVALID_ARGUMENT)
