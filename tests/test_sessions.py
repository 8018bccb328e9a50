"""Sessions and tickets end to end, against the real server: the issue's snippet as written,
lifetimes (release, close, expiry without keep-alive), keep-alive, publish/fetch across two users
and refusals, scope variables, pipelined exports, table and array views checked against pandas
and numpy, subscriptions, applications and plugin objects, malformed tickets on both sides, and
a forceful retry through a TCP proxy applied once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pytest
from faults.conftest import RetryLog
from faults.proxy import TcpProxy
from faults.scripted import ScriptedServer

import aiosdk
from aiosdk.catalog.queries import Key
from aiosdk.catalog.tables import AsyncTableClient
from aiosdk.proto import (
    CloseSessionRequest,
    ExportRequest,
    OpenSessionRequest,
    PublishRequest,
    RefreshSessionRequest,
    ReleaseRequest,
    SessionInfo,
    SessionServiceStub,
    Ticket,
)
from aiosdk.server import ServerThread
from aiosdk.testing.accounts import AsyncAccounts, TestUser
from aiosdk.tickets import (
    ApplicationTicket,
    ExportTicket,
    ScopeTicket,
    ServerObject,
    SharedTicket,
)

pytestmark = pytest.mark.anyio

WITHIN = 15.0
"""How long a condition may take to hold (generous: the suite runs under load)."""
ROWS = 200


def _frame(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame(
        {
            "t": rng.permutation(rows).astype(np.int64),  # unique: sorts have no ties
            "v": rng.uniform(0, 10, rows),
            "k": (np.arange(rows) % 7).astype(np.int64),
            "s": [("red", "green", "blue", "grey")[i % 4] for i in range(rows)],
        }
    )


async def _frame_async(rows: int = ROWS) -> pd.DataFrame:
    return await anyio.to_thread.run_sync(_frame, rows)


@pytest.fixture
async def alice(aiosdk_accounts: AsyncAccounts) -> tuple[TestUser, aiosdk.AsyncClient]:
    user = await aiosdk_accounts.user("alice")
    return user, await aiosdk_accounts.client(user)


@pytest.fixture
async def events(alice: tuple[TestUser, aiosdk.AsyncClient]) -> tuple[str, pd.DataFrame]:
    """alice's ``<alice>/experiments/run42/events`` table and the frame it holds."""
    user, client = alice
    await client.catalog.create_container(f"{user.username}/experiments")
    run = await client.catalog.create_container(f"{user.username}/experiments/run42")
    frame = await _frame_async()
    await run.write_dataframe(frame, key="events")
    return f"{user.username}/experiments/run42/events", frame


async def _node(client: aiosdk.AsyncClient, path: str) -> Any:
    """``GET /catalog/nodes/<path>``: the node's JSON (NotFoundError for a 404)."""
    return (await client._ctx.request("GET", f"/catalog/nodes/{path}")).json()


async def _raw(client: aiosdk.AsyncClient, method: str, request: Any) -> Any:
    """One SessionService call as given, through the client's request path."""
    return await client._ctx.grpc_unary(
        SessionServiceStub,
        lambda stub: getattr(stub, method)(request),
        idempotent=False,
        what=method,
    )


async def _changes(stream: AsyncIterator[Any], sink: list[Any]) -> None:
    async for change in stream:
        sink.append(change)


async def _until_changed(received: list[Any], table: AsyncTableClient, *, count: int = 1) -> None:
    """Change ``table``'s metadata until ``received`` holds ``count`` changes (a subscription
    opened concurrently misses the changes from before it is open)."""
    with anyio.fail_after(WITHIN):
        for n in itertools.count():
            if len(received) >= count:
                return
            await table.update_metadata({"n": n})
            with anyio.move_on_after(0.2):
                while len(received) < count:  # noqa: ASYNC110  # (another task's list)
                    await anyio.sleep(0.02)


# -- the issue's snippet ------------------------------------------------------------------------


async def test_the_issue_snippet_end_to_end(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    user, client = alice
    path, frame = events
    async with client.session() as s:  # gRPC session; kept alive in the background
        t = await s.export(path)
        assert isinstance(t, ExportTicket)
        view = await s.query(t, where=Key("v") > 3, columns=["t", "v"], sort="-t", head=1000)
        df = await s.open(view).read()  # data by ticket, over the same HTTP data path
        expected = frame[frame.v > 3].sort_values("t", ascending=False)[["t", "v"]].head(1000)
        pd.testing.assert_frame_equal(df, expected.reset_index(drop=True))
        shared = SharedTicket.random_ticket()
        await s.publish(view, shared)
        await s.bind("latest_events", view)
        app = await s.fetch(ApplicationTicket.app_ticket("stats", "summary"))
        summary = await s.open(app).read()
        assert list(summary.columns) == ["namespace", "structure_family", "nodes"]
        mine = summary[summary.namespace == user.username].set_index("structure_family")
        assert mine.loc["table", "nodes"] == 1
        keys = list(zip(summary.namespace, summary.structure_family, strict=True))
        assert keys == sorted(keys)
        obj = await s.fetch_object(
            ServerObject(type="Counter", ticket=ApplicationTicket.app_ticket("stats", "counter"))
        )
        before = (await obj.get())["value"]
        assert await obj.invoke("increment", by=2) == before + 2
        table = await client.catalog.get(path)
        assert isinstance(table, AsyncTableClient)
        received: list[Any] = []
        async with anyio.create_task_group() as group:

            async def subscribe() -> None:
                async for change in s.subscribe(t):  # notified when the export changes
                    received.append(change)
                    break

            group.start_soon(subscribe)
            await _until_changed(received, table)
        (change,) = received
        assert change.kind == "updated"
        assert change.revision > 1
        await s.release(t)
        with pytest.raises(aiosdk.NotFoundError):
            await s.query(t, head=1)
        view_path = s.info(view).path
        assert (await _node(client, view_path))["structure_family"] == "table"
    # Leaving the block closed the session; the server released every export of it.
    assert s.closed
    with pytest.raises(aiosdk.NotFoundError):
        await _node(client, view_path)
    async with client.session() as other:
        with pytest.raises(aiosdk.NotFoundError):  # its source was released
            await other.fetch(shared)
        latest = await other.fetch(ScopeTicket.scope_ticket("latest_events"))  # outlives it
        got = await other.open(latest).read()
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))


# -- lifetimes ----------------------------------------------------------------------------------


async def test_a_released_export_is_not_found(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, client = alice
    path, _frame = events
    async with client.session() as s:
        t = await s.export(path)
        info = s.info(t)
        assert info.type == "table"
        assert info.path == f"~session/{s.session_id}/{t.number}"
        assert (await _node(client, info.path))["structure_family"] == "table"
        await s.release(t)
        uses = {
            "query": lambda: s.query(t, head=1),
            "publish": lambda: s.publish(t, SharedTicket.random_ticket()),
            "bind": lambda: s.bind(f"x{t.number}", t),
        }
        for what, use in uses.items():
            with pytest.raises(aiosdk.NotFoundError) as missing:  # (see `what`)
                await use()
            assert not isinstance(missing.value, aiosdk.SessionExpiredError), what
        await s.release(t)  # releasing again does nothing
        with pytest.raises(aiosdk.NotFoundError):
            await _node(client, info.path)
        with pytest.raises(aiosdk.NotFoundError):  # a number never used
            await s.query(ExportTicket.export_ticket(4_000_000_000), head=1)
        # The session itself is fine.
        again = await s.export(path)
        assert again.number != t.number


async def test_closing_a_session_releases_everything_it_exported(
    alice: tuple[TestUser, aiosdk.AsyncClient],
    events: tuple[str, pd.DataFrame],
    aiosdk_accounts: AsyncAccounts,
) -> None:
    _user, client = alice
    path, frame = events
    name = aiosdk_accounts.name("closing").replace("-", "_")
    shared = SharedTicket.random_ticket()
    async with client.session() as s:
        t = await s.export(path)
        view = await s.query(t, where=Key("k") == 3)
        await s.publish(view, shared)
        await s.bind(name, view)
        paths = [s.info(t).path, s.info(view).path]
        for ticket_path in paths:
            await _node(client, ticket_path)
    assert s.closed
    for ticket_path in paths:
        with pytest.raises(aiosdk.NotFoundError):
            await _node(client, ticket_path)
    for call in (lambda: s.export(path), lambda: s.query(t, head=1), lambda: s.release(view)):
        with anyio.fail_after(WITHIN), pytest.raises(aiosdk.SessionClosedError):
            await call()
    async with client.session() as other:
        with pytest.raises(aiosdk.NotFoundError):
            await other.fetch(shared)
        bound = await other.fetch(ScopeTicket.scope_ticket(name))  # a scope variable stays
        got = await other.open(bound).read()
        pd.testing.assert_frame_equal(got, frame[frame.k == 3].reset_index(drop=True))


async def test_an_expired_session_releases_everything_it_exported(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    """A session nobody refreshes (raw calls, no keep-alive) ends after its ttl."""
    _user, client = alice
    path, _frame = events
    opened: SessionInfo = await _raw(client, "open_session", OpenSessionRequest(ttl_seconds=0.2))
    assert opened.ttl_seconds == 1  # at least 1 s
    sid = opened.session_id
    info = await _raw(client, "export", ExportRequest(session_id=sid, number=1, path=path))
    assert info.path == f"~session/{sid}/1"
    await _node(client, info.path)
    shared = SharedTicket.random_ticket()
    publish = PublishRequest(
        session_id=sid, source=Ticket(info.ticket.ticket), shared=shared.pb_ticket
    )
    await _raw(client, "publish", publish)
    async with client.session() as s:
        await s.release(await s.fetch(shared))  # it resolves while the session lives
        with anyio.fail_after(WITHIN):  # reads by ticket refresh nothing
            while True:
                try:
                    await _node(client, info.path)
                except aiosdk.NotFoundError:
                    break
                await anyio.sleep(0.1)
        with pytest.raises(aiosdk.NotFoundError):
            await s.fetch(shared)
    with pytest.raises(aiosdk.NotFoundError):
        await _raw(client, "refresh_session", RefreshSessionRequest(session_id=sid))
    with pytest.raises(aiosdk.NotFoundError):
        await _raw(client, "release", ReleaseRequest(session_id=sid, ticket=Ticket(b"e\1\0\0\0")))
    # Closing an expired session is no error (idempotent), and releases nothing more.
    closed = await _raw(client, "close_session", CloseSessionRequest(session_id=sid))
    assert closed.released == 0


async def test_the_keep_alive_outlives_the_ttl(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, client = alice
    path, _frame = events
    async with client.session(ttl=2) as s:
        assert s.ttl == 2
        t = await s.export(path)
        await anyio.sleep(3 * s.ttl)  # three lifetimes: the keep-alive refreshed it meanwhile
        view = await s.query(t, head=5)
        assert len(await s.open(view).read()) == 5
        assert not s.closed


async def test_a_session_closed_behind_its_back_fails_typed_and_at_once(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, client = alice
    path, _frame = events
    async with client.session(ttl=1) as s:
        t = await s.export(path)
        await _raw(client, "close_session", CloseSessionRequest(session_id=s.session_id))
        with anyio.fail_after(WITHIN):
            with pytest.raises(aiosdk.NotFoundError):
                await s.query(t, head=1)
            while True:  # the keep-alive's NOT_FOUND (or that answer) marks it dead
                try:
                    await s.export(path)
                except aiosdk.SessionExpiredError:
                    break
                except aiosdk.NotFoundError:
                    await anyio.sleep(0.05)
            for _ in range(3):
                with pytest.raises(aiosdk.SessionExpiredError):
                    await s.query(t, head=1)
    # Leaving the block of a dead session raises nothing.


# -- two users ----------------------------------------------------------------------------------


async def test_publish_and_fetch_across_users_with_refusals(
    alice: tuple[TestUser, aiosdk.AsyncClient],
    events: tuple[str, pd.DataFrame],
    aiosdk_accounts: AsyncAccounts,
) -> None:
    user, owner = alice
    path, frame = events
    bob_user, carol_user = await aiosdk_accounts.user("bob"), await aiosdk_accounts.user("carol")
    bob, carol = await aiosdk_accounts.client(bob_user), await aiosdk_accounts.client(carol_user)
    experiments = await owner.catalog.get(f"{user.username}/experiments")
    await experiments.share(bob_user.username)
    name = aiosdk_accounts.name("shared").replace("-", "_")
    expected = frame[frame.s == "red"].reset_index(drop=True)
    async with (
        owner.session() as mine,
        bob.session() as bobs,
        carol.session() as carols,
    ):
        t = await mine.export(path)
        view = await mine.query(t, where=Key("s") == "red")
        shared = SharedTicket.random_ticket()
        await mine.publish(view, shared)
        await mine.bind(name, view)
        with pytest.raises(aiosdk.ConflictError):  # a shared ticket is taken once
            await mine.publish(t, shared)
        # Another user's ticket path is no path of theirs.
        with pytest.raises(aiosdk.NotFoundError):
            await _node(bob, mine.info(view).path)
        got = await bobs.fetch(shared)
        assert isinstance(got, ExportTicket)
        pd.testing.assert_frame_equal(await bobs.open(got).read(), expected)
        scoped = await bobs.fetch(ScopeTicket.scope_ticket(name))
        pd.testing.assert_frame_equal(await bobs.open(scoped).read(), expected)
        for ticket in (shared, ScopeTicket.scope_ticket(name)):
            with pytest.raises(aiosdk.PermissionDeniedError, match="may not read"):
                await carols.fetch(ticket)
        with pytest.raises(aiosdk.NotFoundError):  # carol may not read the path itself
            await carols.export(path)
        release = ReleaseRequest(session_id=mine.session_id, ticket=view.pb_ticket)
        with pytest.raises(aiosdk.NotFoundError):  # another user's session
            await _raw(bob, "release", release)
        # Released at its source: the shared ticket stops resolving; bob's export stays.
        await mine.release(view)
        with pytest.raises(aiosdk.NotFoundError):
            await bobs.fetch(shared)
        pd.testing.assert_frame_equal(await bobs.open(got).read(), expected)
        # Access is checked at every use: once unshared, bob reads nothing by ticket.
        await experiments.unshare(bob_user.username)
        with pytest.raises(aiosdk.NotFoundError):
            await bobs.open(got).read()
        with pytest.raises((aiosdk.NotFoundError, aiosdk.PermissionDeniedError)):
            await bobs.query(got, head=1)
        with pytest.raises(aiosdk.PermissionDeniedError):
            await bobs.fetch(ScopeTicket.scope_ticket(name))


async def test_pipelined_exports(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, client = alice
    path, frame = events
    async with client.session() as s:
        tickets = await asyncio.gather(*(s.export(path) for _ in range(64)))
        assert len({t.number for t in tickets}) == 64
        views = await asyncio.gather(
            *(s.query(t, where=Key("k") == i % 7) for i, t in enumerate(tickets[:16]))
        )
        assert len({v.number for v in views} | {t.number for t in tickets}) == 80
        for i, view in enumerate(views):
            got = await s.open(view).read()
            pd.testing.assert_frame_equal(got, frame[frame.k == i % 7].reset_index(drop=True))
        await asyncio.gather(*(s.release(t) for t in tickets))
        with pytest.raises(aiosdk.NotFoundError):
            await s.query(tickets[-1], head=1)


# -- views --------------------------------------------------------------------------------------


TABLE_VIEWS: list[tuple[dict[str, Any], Any]] = [
    ({}, lambda f: f),
    ({"columns": ["s", "t"]}, lambda f: f[["s", "t"]]),
    ({"where": Key("v") >= 5}, lambda f: f[f.v >= 5]),
    ({"where": Key("v") < 2.5}, lambda f: f[f.v < 2.5]),
    ({"where": Key("k") != 2}, lambda f: f[f.k != 2]),
    ({"where": Key("s").in_(["red", "blue"])}, lambda f: f[f.s.isin(["red", "blue"])]),
    ({"where": Key("s").not_in(["red", "blue"])}, lambda f: f[~f.s.isin(["red", "blue"])]),
    (
        {"where": [Key("k") == 1, Key("v") > 1]},
        lambda f: f[(f.k == 1) & (f.v > 1)],
    ),
    ({"sort": "t"}, lambda f: f.sort_values("t")),
    ({"sort": ["-k", "t"]}, lambda f: f.sort_values(["k", "t"], ascending=[False, True])),
    ({"head": 7}, lambda f: f.head(7)),
    ({"tail": 7}, lambda f: f.tail(7)),
    (
        {"where": Key("v") > 3, "sort": "-v", "tail": 10, "columns": ["v", "k"]},
        lambda f: f[f.v > 3].sort_values("v", ascending=False).tail(10)[["v", "k"]],
    ),
    ({"where": Key("k") > 100}, lambda f: f[f.k > 100]),  # no row
]


async def test_table_views_match_pandas(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, client = alice
    path, frame = events
    async with client.session() as s:
        t = await s.export(path)
        for arguments, expected in TABLE_VIEWS:
            view = await s.query(t, **arguments)
            assert s.info(view).type == "table"
            got = await s.open(view).read()
            want = expected(frame).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, want, obj=repr(arguments))
        # A view of a view.
        first = await s.query(t, where=Key("v") > 2, sort="t")
        second = await s.query(first, head=3, columns=["t"])
        got = await s.open(second).read()
        pd.testing.assert_frame_equal(got, frame[frame.v > 2].sort_values("t")[["t"]].head(3)
                                      .reset_index(drop=True))  # fmt: skip
        for bad in (
            {"columns": ["nope"]},
            {"where": Key("nope") == 1},
            {"sort": "nope"},
            {"where": Key("a.b") == 1},  # a key of several segments names no column
        ):
            with pytest.raises(aiosdk.BadRequestError):
                await s.query(t, **bad)
        with pytest.raises((aiosdk.BadRequestError, ValueError)):
            await s.query(t, head=1, tail=1)


def _array() -> np.ndarray[Any, Any]:
    return np.random.default_rng(5).normal(size=(20, 30))


ARRAY_VIEWS: list[dict[str, Any]] = [
    {"slice": np.s_[2:18:3, 5:]},
    {"slice": np.s_[4]},
    {"slice": np.s_[-3:, ::2]},
    {"slice": np.s_[::-4, 3:-3]},
    {"slice": np.s_[:, 7]},
    {"reduce": "sum", "axis": 0},
    {"reduce": "mean", "axis": 1},
    {"reduce": "min"},
    {"reduce": "max"},
    {"slice": np.s_[1:9, 3:], "reduce": "mean", "axis": 0},
    {"slice": np.s_[5], "reduce": "sum"},
]


def _numpy_view(array: np.ndarray[Any, Any], arguments: dict[str, Any]) -> Any:
    selected = array[arguments["slice"]] if "slice" in arguments else array
    reduce = arguments.get("reduce")
    if reduce is None:
        return selected
    return getattr(np, reduce)(selected, axis=arguments.get("axis"))


async def test_array_views_match_numpy(alice: tuple[TestUser, aiosdk.AsyncClient]) -> None:
    user, client = alice
    grp = await client.catalog.create_container(f"{user.username}/arrays")
    array = _array()
    await grp.write_array(array, key="a", chunks=(7, 11))
    async with client.session() as s:
        t = await s.export(f"{user.username}/arrays/a")
        assert s.info(t).type == "array"
        for arguments in ARRAY_VIEWS:
            view = await s.query(t, **arguments)
            got = await s.open(view).read()
            want = _numpy_view(array, arguments)
            assert np.shape(got) == np.shape(want), arguments
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=repr(arguments))
        for bad in ({"reduce": "sum", "axis": 2}, {"reduce": "median"}, {"slice": np.s_[99]}):
            with pytest.raises((aiosdk.BadRequestError, ValueError)):
                await s.query(t, **bad)
        with pytest.raises(aiosdk.BadRequestError):  # a table view of an array
            await s.query(t, columns=["x"])


# -- subscriptions ------------------------------------------------------------------------------


async def test_a_subscription_delivers_changes_and_stops_on_break(
    client: aiosdk.AsyncClient,
    alice: tuple[TestUser, aiosdk.AsyncClient],
    events: tuple[str, pd.DataFrame],
) -> None:
    _user, owner = alice
    path, _frame = events
    table = await owner.catalog.get(path)
    assert isinstance(table, AsyncTableClient)
    before = (await client.get_status()).active_streams
    async with owner.session() as s:
        t = await s.export(path)
        view = await s.query(t, head=3)  # a view follows its source
        for ticket in (t, view):
            received: list[Any] = []
            async with anyio.create_task_group() as group:

                async def take(ticket: ExportTicket = ticket, sink: list[Any] = received) -> None:
                    async for change in s.subscribe(ticket):
                        sink.append(change)
                        if len(sink) == 2:
                            break

                group.start_soon(take)
                await _until_changed(received, table, count=2)
            assert [c.kind for c in received] == ["updated", "updated"]
            assert received[0].revision < received[1].revision
            assert received[0].at is not None
        with anyio.fail_after(WITHIN):  # the streams ended with the breaks
            while (await client.get_status()).active_streams > before:  # noqa: ASYNC110
                await anyio.sleep(0.05)


async def test_a_subscription_ends_when_released_or_deleted(
    alice: tuple[TestUser, aiosdk.AsyncClient], events: tuple[str, pd.DataFrame]
) -> None:
    _user, owner = alice
    path, _frame = events
    table = await owner.catalog.get(path)
    assert isinstance(table, AsyncTableClient)
    async with owner.session() as s:
        for end in ("released", "deleted"):
            t = await s.export(path)
            received: list[Any] = []
            with anyio.fail_after(WITHIN):
                async with anyio.create_task_group() as group:
                    group.start_soon(_changes, s.subscribe(t), received)
                    await _until_changed(received, table)  # open by now
                    if end == "released":
                        await s.release(t)
                    else:
                        await table.delete()
            # The iterator ended on its own after its last change.
            assert received[-1].kind == end
            assert {c.kind for c in received[:-1]} <= {"updated"}


async def test_cancelling_a_subscription_releases_its_stream(
    client: aiosdk.AsyncClient,
    alice: tuple[TestUser, aiosdk.AsyncClient],
    events: tuple[str, pd.DataFrame],
) -> None:
    _user, owner = alice
    path, _frame = events
    before = (await client.get_status()).active_streams
    async with owner.session() as s:
        t = await s.export(path)
        with anyio.fail_after(WITHIN):
            async with anyio.create_task_group() as group:
                group.start_soon(_changes, s.subscribe(t), [])
                while (await client.get_status()).active_streams <= before:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                group.cancel_scope.cancel()
            while (await client.get_status()).active_streams > before:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert s.info(t).type == "table"  # the session lives on


# -- applications and objects -------------------------------------------------------------------


async def test_applications_and_plugin_objects(
    alice: tuple[TestUser, aiosdk.AsyncClient], aiosdk_accounts: AsyncAccounts
) -> None:
    user, client = alice
    await client.catalog.create_container(f"{user.username}/one")
    await client.catalog.create_container(f"{user.username}/two")
    async with client.session() as s:
        apps = {app.id: app for app in await s.applications()}
        stats = apps["stats"]
        assert stats.name == "Server statistics"
        fields = {f.name: f.type for f in stats.fields}
        assert fields == {"summary": "table", "counter": "Counter"}
        summary_ticket = await s.fetch(ApplicationTicket.app_ticket("stats", "summary"))
        summary = await s.open(summary_ticket).read()
        mine = summary[summary.namespace == user.username]
        assert dict(zip(mine.structure_family, mine.nodes, strict=True))["container"] >= 2
        assert summary.nodes.dtype == np.int64
        # Another user sees only what they may read.
        other = await aiosdk_accounts.client(await aiosdk_accounts.user("other"))
        async with other.session() as theirs:
            app = await theirs.fetch(ApplicationTicket.app_ticket("stats", "summary"))
            seen = await theirs.open(app).read()
            assert user.username not in set(seen.namespace)
        for missing in (("nope", "summary"), ("stats", "nope")):
            with pytest.raises(aiosdk.NotFoundError):
                await s.fetch(ApplicationTicket.app_ticket(*missing))
        # One counter for everyone, whichever session fetches it.
        counter = ServerObject(
            type="Counter", ticket=ApplicationTicket.app_ticket("stats", "counter")
        )
        one = await s.fetch_object(counter)
        two = await s.fetch_object(counter)
        assert one.type == "Counter"
        value = await one.invoke("increment")
        assert await two.invoke("increment", by=3) == value + 3
        assert await one.get() == {"value": value + 3}
        await one.invoke("reset")
        assert await two.get() == {"value": 0}
        for bad in ({"by": "x"}, {"nope": 1}):
            with pytest.raises(aiosdk.BadRequestError):
                await one.invoke("increment", **bad)
        with pytest.raises((aiosdk.BadRequestError, aiosdk.NotFoundError)):
            await one.invoke("explode")
        again = await s.fetch_object(ServerObject(type="Counter", ticket=one.ticket))
        assert await again.get() == {"value": 0}
        with pytest.raises(aiosdk.ConfigurationError):  # a type that is not its type
            await s.fetch_object(ServerObject(type="Table", ticket=one.ticket))
        with pytest.raises(aiosdk.ConfigurationError):  # data, no plugin object
            await s.fetch_object(ServerObject(type="Counter", ticket=summary_ticket))
        with pytest.raises(aiosdk.ConfigurationError):  # a plugin object, no data
            s.open(one.ticket)


# -- malformed tickets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"e", b"e\0\0\0\0", b"e\1\0\0", b"e\1\0\0\0\0", b"s/", b"s/a/b", b"a/x", b"a/x/f/",
     b"h" + b"\0" * 15, b"h" + b"\0" * 65, b"zz", b"s/\xff", b"x" * 2000],
)  # fmt: skip
async def test_malformed_tickets_are_rejected_on_both_sides(
    alice: tuple[TestUser, aiosdk.AsyncClient], raw: bytes
) -> None:
    _user, client = alice
    with pytest.raises(aiosdk.MalformedTicketError) as client_side:
        aiosdk.tickets.Ticket.from_bytes(raw)
    assert isinstance(client_side.value, ValueError)
    assert "malformed" in str(client_side.value)
    async with client.session() as s:
        with pytest.raises(aiosdk.BadRequestError) as server_side:
            await _raw(
                client, "release", ReleaseRequest(session_id=s.session_id, ticket=Ticket(raw))
            )
        assert server_side.value.grpc_status == "INVALID_ARGUMENT"
        assert "ticket" in server_side.value.message
        assert not s.closed


async def test_ticket_classes_refuse_other_kinds() -> None:
    export = ExportTicket.export_ticket(7)
    scope = ScopeTicket.scope_ticket("latest")
    shared = SharedTicket.random_ticket()
    with pytest.raises(aiosdk.MalformedTicketError):
        ExportTicket(scope.bytes)
    with pytest.raises(aiosdk.MalformedTicketError):
        ScopeTicket(export.bytes)
    with pytest.raises(aiosdk.MalformedTicketError):
        SharedTicket(b"h" + b"\1" * 8)
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError, match="export number"):
            ExportTicket.export_ticket(bad)
    assert aiosdk.tickets.Ticket.from_bytes(export.bytes) == export
    assert hash(aiosdk.tickets.Ticket.from_bytes(shared.bytes)) == hash(shared)
    assert shared.bytes[1:].hex() not in repr(shared)  # a bearer secret
    assert export.pb_ticket == Ticket(export.bytes)


# -- a forceful retry through a TCP proxy -------------------------------------------------------


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    """The retries the SDK logs (as the fault tests' fixture of that name)."""
    import logging

    logger = logging.getLogger("aiosdk")
    handler = RetryLog()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture
def grpc_proxy(server: ServerThread) -> Iterator[tuple[TcpProxy, ScriptedServer]]:
    """A TCP proxy in front of the real gRPC port, and a scripted discovery naming it."""
    relay = TcpProxy(server.grpc_host, server.grpc_port).start()
    scripted = ScriptedServer().start()
    scripted.grpc_port = relay.port
    yield relay, scripted
    scripted.stop()
    relay.stop()


async def test_forceful_retries_of_lost_replies_apply_once(
    server: ServerThread,
    client: aiosdk.AsyncClient,
    grpc_proxy: tuple[TcpProxy, ScriptedServer],
    retry_log: RetryLog,
) -> None:
    relay, scripted = grpc_proxy
    counter = ServerObject(type="Counter", ticket=ApplicationTicket.app_ticket("stats", "counter"))
    async with (
        aiosdk.AsyncClient(
            scripted.url, token=server.admin_token, retry_mode="forceful"
        ) as proxied,
        proxied.session() as s,
    ):
        obj = await s.fetch_object(counter)
        before = (await obj.get())["value"]
        relay.drop_next_grpc_reply()
        assert await obj.invoke("increment", by=5) == before + 5
        assert relay.dropped == 1
        assert retry_log.retries  # the reply was lost and the call retried ...
        assert await obj.get() == {"value": before + 5}  # ... applied once: a replay
        # A publish (replayed by its idempotency key) and a fetch (the same request again gets
        # that export's answer) whose replies were lost: neither retry is refused as taken.
        shared = SharedTicket.random_ticket()
        relay.drop_next_grpc_reply()
        await s.publish(obj.ticket, shared)
        assert relay.dropped == 2
        relay.drop_next_grpc_reply()
        fetched = await s.fetch(shared)
        assert relay.dropped == 3
        again = await s.fetch_object(ServerObject(type="Counter", ticket=fetched))
        assert await again.get() == {"value": before + 5}
        assert len(retry_log.retries) >= 3
