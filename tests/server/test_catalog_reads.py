"""Node reads are cached (:class:`~aiosdk.server.catalog.state.NodeReads`), and changes stay
immediate: over loopback against real servers, on SQLite and PostgreSQL, a node read again costs
no statement, and a change to it or to an ancestor (its metadata, a share, public or not, a move,
a delete) is seen by the very next request to the server that made it, and soon by a second
server of the same PostgreSQL database; nothing is served from memory while notifications may be
missed. Then the cache itself on the real database: a read racing a change is not kept, a change
that rolls back drops nothing, the least recently read paths go first.

The cache's expiry (:data:`~aiosdk.server.catalog.state.READS_TTL_SECONDS`) is set to ten minutes
for every test here: only the wake-ups may make a change seen, so a missing one fails the test.
Statements are counted with a ``before_cursor_execute`` listener on the engine in question.
"""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aiosdk.server import Server, ServerConfig, notify
from aiosdk.server.authorization import NAMESPACES_CHANGED, Caller
from aiosdk.server.catalog import state
from aiosdk.server.catalog.models import Node
from aiosdk.server.catalog.nodes import NodeUpdate, Viewer, update_node
from aiosdk.server.catalog.state import CatalogState, NodeReads, Wakeups
from aiosdk.server.notify import Notifier
from aiosdk.server.unit_of_work import UnitOfWork

from ._observed import (
    SETTLED,
    Observed,
    observed,
    observed_server,
    second_server,
    server,
    terminate_listeners,
    until,
)
from .conftest import POSTGRES_URL_ENV, Users, create, fresh_postgres_database, make_client, url

pytestmark = pytest.mark.anyio

__all__ = ["observed", "second_server", "server"]  # the fixtures, for pytest

NODE_READ = "LEFT OUTER JOIN catalog_shares ON catalog_shares.path IN"
"""What the statement reading a node and the shares covering it has (and no other)."""


@pytest.fixture(autouse=True)
def no_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries do not expire during a test: only a wake-up drops them."""
    monkeypatch.setattr(state, "READS_TTL_SECONDS", 600.0)


@dataclass(frozen=True)
class Seen:
    """One answer, and what it cost the server."""

    status: int
    body: Any
    etag: str | None
    statements: int
    node_reads: int


async def look(observed: Observed, http: httpx.AsyncClient, target: str) -> Seen:
    """``GET target`` (under ``/api/v1/catalog``) with ``http``."""
    before = observed.statements.count
    response = await http.get(f"/catalog/{target}")
    body = response.json() if response.status_code == 200 else response.json()["error"]["type"]
    sent = observed.statements.sent[before:]
    return Seen(
        response.status_code,
        body,
        response.headers.get("etag"),
        len(sent),
        sum(NODE_READ in statement for statement in sent),
    )


async def warm(observed: Observed, http: httpx.AsyncClient, target: str) -> Seen:
    """``GET target`` twice, once the server has heard of every change so far: the second
    answer comes from memory (the node is not read). Returns that answer."""
    await observed.settle()
    first = await look(observed, http, target)
    again = await look(observed, http, target)
    assert again.node_reads == 0, f"{target} is not cached"
    assert (again.status, again.body, again.etag) == (first.status, first.body, first.etag)
    return again


def node(path: str) -> str:
    return f"nodes/{url(path)}"


def children(path: str) -> str:
    return f"children/{url(path)}"


def count(path: str) -> str:
    return f"count/{url(path)}"


def distinct(path: str) -> str:
    return f"distinct/{url(path)}?metadata_keys=color&counts=true"


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    answered = await response
    assert answered.status_code == status, answered.text
    return answered.json() if answered.content else None


# --- What a read costs. -----------------------------------------------------------------------


async def test_a_node_read_again_costs_no_statement(observed: Observed, users: Users) -> None:
    alice, a = await users.new()
    _bob, b = await users.new()
    await create(a, alice, "lab", metadata={"color": "red"})
    await create(a, f"{alice}/lab", "scan", metadata={"color": "blue"})
    path = f"{alice}/lab/scan"
    await look(observed, b, node(alice))  # bob's token and caller are cached from now on

    await observed.settle()
    first = await look(observed, a, node(path))
    assert first.status == 200
    assert first.node_reads == 1  # the node and its shares, in one statement
    # The second read, and any after: nothing from the database (the fewest of three: a
    # background write now and then is not the request's).
    again = [await look(observed, a, node(path)) for _ in range(3)]
    assert min(seen.statements for seen in again) == 0
    assert {(seen.status, seen.etag) for seen in again} == {(200, first.etag)}
    assert all(seen.body == first.body for seen in again)
    # The entry is the path's, whoever asks: who may see it is decided on each read.
    refused = await look(observed, b, node(path))
    assert (refused.status, refused.body, refused.node_reads) == (404, "node_not_found", 0)
    as_admin = await look(observed, users.admin, node(path))
    assert as_admin.node_reads == 0
    assert as_admin.body["allowed_actions"] == ["read", "write", "admin"]

    # A container's children, count and distinct values read the container from memory too:
    # one statement fewer than the first time.
    container = f"{alice}/lab"
    for key, target in enumerate((children(container), count(container), distinct(container))):
        await create(a, alice, f"elsewhere-{key}")  # any catalog write empties the cache
        await observed.settle()
        cold = await look(observed, a, target)
        assert (cold.status, cold.node_reads) == (200, 1), target
        hot = await warm(observed, a, target)
        assert hot.statements < cold.statements, target
    assert (await look(observed, a, count(container))).body == {"count": 1}


async def test_a_missing_node_is_not_kept(observed: Observed, users: Users) -> None:
    """A 404 for a path with no node reads again: the next request may find it created."""
    alice, a = await users.new()
    path = f"{alice}/later"
    for _ in range(2):
        missing = await look(observed, a, node(path))
        assert (missing.status, missing.node_reads) == (404, 1)
    await create(a, alice, "later")
    assert (await look(observed, a, node(path))).status == 200


# --- On the server that made the change: the very next request. -----------------------------


async def test_a_metadata_update_is_seen_on_the_next_request(
    observed: Observed, users: Users
) -> None:
    alice, a = await users.new()
    await create(a, alice, "run", metadata={"color": "red"})
    path = f"{alice}/run"
    before = await warm(observed, a, node(path))
    assert (before.body["revision"], before.body["metadata"]) == (1, {"color": "red"})
    await ok(a.patch(f"/catalog/{node(path)}", json={"metadata_merge": {"color": "blue"}}))
    after = await look(observed, a, node(path))
    assert (after.status, after.body["revision"]) == (200, 2)
    assert after.body["metadata"] == {"color": "blue"}
    assert after.etag not in (None, before.etag)
    # The client's copy is stale: not a 304.
    response = await a.get(f"/catalog/{node(path)}", headers={"If-None-Match": before.etag})
    assert response.status_code == 200
    assert response.json()["revision"] == 2
    # The parent's children and distinct values show the new metadata too.
    listed = await look(observed, a, children(alice))
    assert [item["metadata"] for item in listed.body["items"]] == [{"color": "blue"}]


async def test_a_share_on_an_ancestor_is_seen_on_the_next_request(
    observed: Observed, users: Users
) -> None:
    alice, a = await users.new()
    bob, b = await users.new()
    await create(a, alice, "lab")
    await create(a, f"{alice}/lab", "runs")
    await create(a, f"{alice}/lab/runs", "scan")
    runs, scan = f"{alice}/lab/runs", f"{alice}/lab/runs/scan"
    reads = (node(scan), node(runs), children(runs), count(runs))
    for target in reads:
        assert (await warm(observed, b, target)).status == 404, target

    shared = f"/catalog/shares/{url(alice)}/lab"
    await ok(a.put(shared, json={"namespace": bob, "actions": ["read"]}))
    seen = await look(observed, b, node(scan))
    assert seen.status == 200, seen.body
    assert seen.body["allowed_actions"] == ["read"]
    assert (await look(observed, b, children(runs))).body["items"][0]["key"] == "scan"
    assert (await look(observed, b, count(runs))).body == {"count": 1}

    for target in reads:
        assert (await warm(observed, b, target)).status == 200, target
    await ok(a.delete(shared, params={"namespace": bob}))
    for target in reads:
        assert (await look(observed, b, target)).status == 404, target
    assert (await look(observed, a, node(scan))).status == 200  # alice's, still


async def test_public_and_private_again_on_an_ancestor_are_seen_on_the_next_request(
    observed: Observed, users: Users
) -> None:
    alice, a = await users.new()
    _bob, b = await users.new()
    await create(a, alice, "open")
    await create(a, f"{alice}/open", "data")
    path = f"{alice}/open/data"
    public = f"/catalog/public/{url(alice)}/open"
    assert (await warm(observed, b, node(path))).status == 404
    await ok(a.put(public, json={"public": True}))
    seen = await look(observed, b, node(path))
    assert (seen.status, seen.body["allowed_actions"]) == (200, ["read"])
    assert (await warm(observed, b, node(path))).status == 200
    await ok(a.put(public, json={"public": False}))
    assert (await look(observed, b, node(path))).status == 404


async def test_a_move_and_a_rename_are_seen_on_the_next_request(
    observed: Observed, users: Users
) -> None:
    alice, a = await users.new()
    await create(a, alice, "src")
    await create(a, f"{alice}/src", "inner", metadata={"n": 1})
    await create(a, alice, "dst")
    old, old_inner = f"{alice}/src", f"{alice}/src/inner"
    for target in (node(old), node(old_inner), children(old)):
        assert (await warm(observed, a, target)).status == 200, target

    await ok(a.post(f"/catalog/move/{url(old)}", json={"to": f"{alice}/dst/moved"}))
    for target in (node(old), node(old_inner), children(old)):
        assert (await look(observed, a, target)).status == 404, target
    moved = await look(observed, a, node(f"{alice}/dst/moved/inner"))
    assert (moved.status, moved.body["parent"]) == (200, f"{alice}/dst/moved")

    new = f"{alice}/dst/moved"
    for target in (node(new), node(f"{new}/inner")):
        assert (await warm(observed, a, target)).status == 200, target
    await ok(a.post(f"/catalog/move/{url(new)}", json={"to": f"{alice}/dst/renamed"}))
    assert (await look(observed, a, node(new))).status == 404
    assert (await look(observed, a, node(f"{new}/inner"))).status == 404
    renamed = await look(observed, a, node(f"{alice}/dst/renamed/inner"))
    assert (renamed.status, renamed.body["metadata"]) == (200, {"n": 1})


async def test_a_delete_is_seen_on_the_next_request(observed: Observed, users: Users) -> None:
    alice, a = await users.new()
    await create(a, alice, "gone")
    path = f"{alice}/gone"
    assert (await warm(observed, a, node(path))).status == 200
    await ok(a.delete(f"/catalog/{node(path)}"), 204)
    assert (await look(observed, a, node(path))).status == 404


async def test_a_recursive_delete_of_an_ancestor_is_seen_on_the_next_request(
    observed: Observed, users: Users
) -> None:
    alice, a = await users.new()
    await create(a, alice, "tree")
    await create(a, f"{alice}/tree", "branch")
    await create(a, f"{alice}/tree/branch", "leaf")
    branch, leaf = f"{alice}/tree/branch", f"{alice}/tree/branch/leaf"
    reads = (node(leaf), node(branch), children(branch), count(branch), distinct(branch))
    for target in reads:
        assert (await warm(observed, a, target)).status == 200, target
    await ok(a.delete(f"/catalog/{node(alice)}/tree", params={"recursive": "true"}), 204)
    for target in reads:
        assert (await look(observed, a, target)).status == 404, target


@pytest.mark.parametrize("change", ["share", "public", "metadata"])
async def test_a_change_to_a_namespace_root_is_seen_on_the_next_request(
    observed: Observed, users: Users, change: str
) -> None:
    alice, a = await users.new()
    bob, b = await users.new()
    await create(a, alice, "lab")
    path = f"{alice}/lab"
    if change == "metadata":
        assert (await warm(observed, a, node(alice))).body["metadata"] == {}
        await ok(a.patch(f"/catalog/{node(alice)}", json={"metadata": {"v": 1}}))
        assert (await look(observed, a, node(alice))).body["metadata"] == {"v": 1}
        return
    assert (await warm(observed, b, node(path))).status == 404
    if change == "share":
        await ok(
            a.put(f"/catalog/shares/{url(alice)}", json={"namespace": bob, "actions": ["read"]})
        )
    else:
        await ok(a.put(f"/catalog/public/{url(alice)}", json={"public": True}))
    assert (await look(observed, b, node(path))).status == 200


# --- On another server of the same PostgreSQL database. ---------------------------------------


async def test_changes_through_another_server_reach_the_cache(
    observed: Observed, second_server: Server, users: Users
) -> None:
    """Entries do not expire here (see :func:`no_expiry`): only the notification from the other
    server can make this one see its changes, and it must within five seconds."""
    alice, a = await users.new()
    bob, b = await users.new()
    await create(a, alice, "lab")
    await create(a, f"{alice}/lab", "scan", metadata={"v": 1})
    path = f"{alice}/lab/scan"
    # The same users, through the other server.
    async with make_client(second_server, a.headers["authorization"][len("Bearer ") :]) as other_a:

        async def on_this(http: httpx.AsyncClient) -> tuple[int, Any]:
            seen = await look(observed, http, node(path))
            return seen.status, seen.body if seen.status != 200 else seen.body["metadata"]

        assert (await warm(observed, a, node(path))).body["metadata"] == {"v": 1}
        await ok(other_a.patch(f"/catalog/{node(path)}", json={"metadata": {"v": 2}}))
        await until(lambda: on_this(a), (200, {"v": 2}))

        assert (await warm(observed, b, node(path))).status == 404
        shared = f"/catalog/shares/{url(alice)}/lab"
        await ok(other_a.put(shared, json={"namespace": bob, "actions": ["read"]}))
        await until(lambda: on_this(b), (200, {"v": 2}))

        assert (await warm(observed, b, node(path))).status == 200
        await ok(other_a.delete(shared, params={"namespace": bob}))
        await until(lambda: on_this(b), (404, "node_not_found"))

        assert (await warm(observed, a, node(path))).status == 200
        await ok(other_a.post(f"/catalog/move/{url(path)}", json={"to": f"{alice}/scan"}))
        await until(lambda: on_this(a), (404, "node_not_found"))

        moved = f"{alice}/scan"
        assert (await warm(observed, a, node(moved))).status == 200
        await ok(other_a.delete(f"/catalog/{node(moved)}"), 204)
        await until(lambda: look_status(observed, a, node(moved)), 404)


async def look_status(observed: Observed, http: httpx.AsyncClient, target: str) -> int:
    return (await look(observed, http, target)).status


# --- Nothing from memory while notifications may be missed. ---------------------------------


async def test_nothing_is_served_from_memory_while_the_server_is_not_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its listening connection killed (and no reconnection for a minute), a server may miss
    the other servers' notifications: every request reads the node, and sees their changes at
    once."""
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip("SQLite notifications stay in the process: they are never missed")
    monkeypatch.setattr(notify, "_RECONNECT_DELAYS", (60.0,))
    # (no health check meanwhile: it would replace the LISTEN that terminate_listeners looks for)
    monkeypatch.setattr(notify, "_HEALTH_CHECK_INTERVAL", 600.0)
    async with fresh_postgres_database(base_url) as database_url:
        config = ServerConfig(data_dir=tmp_path / "a", database_url=database_url)
        async with observed_server(config) as observed:
            server = observed.server
            other_config = ServerConfig(
                data_dir=tmp_path / "b", database_url=database_url, admin_token=server.admin_token
            )
            async with (
                Server(other_config) as other,
                make_client(server, server.admin_token) as admin,
                make_client(other, server.admin_token) as other_admin,
            ):
                users = Users(server, admin)
                try:
                    await not_listening(observed, users, other_admin, database_url)
                finally:
                    await users.aclose()


async def not_listening(
    observed: Observed, users: Users, other_admin: httpx.AsyncClient, database_url: str
) -> None:
    alice, a = await users.new()
    await create(a, alice, "scan", metadata={"v": 0})
    path = f"{alice}/scan"
    assert (await warm(observed, a, node(path))).body["metadata"] == {"v": 0}

    assert await terminate_listeners(database_url) == 2  # both servers'

    async def node_reads() -> int:
        return (await look(observed, a, node(path))).node_reads

    await until(node_reads, 1)  # this server knows it may miss notifications now
    for version in range(1, 4):
        assert await node_reads() == 1  # read again: nothing kept
        # A change it cannot hear of: the next read sees it all the same.
        await ok(other_admin.patch(f"/catalog/{node(path)}", json={"metadata": {"v": version}}))
        seen = await look(observed, a, node(path))
        assert (seen.node_reads, seen.body["metadata"]) == (1, {"v": version})


# --- The cache itself, on the real database. ---------------------------------------------------


ADMIN = Viewer(Caller("admin", is_admin=True))


@dataclass
class Reads:
    """A :class:`NodeReads` of this test's own on the server's database, with the notifier it
    listens to (as another process would have them), and how often it read the database."""

    reads: NodeReads
    notifier: Notifier
    sessions: async_sessionmaker[AsyncSession]
    catalog: CatalogState
    heard: collections.Counter[str]
    """How often each payload was heard on :data:`SETTLED`."""
    read_count: int = 0

    async def rows(
        self, path: str, during: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[Sequence[Row[Any]], bool]:
        """The rows of ``path`` through the cache (``during`` runs once the database has been
        read, before the rows may be kept), and whether the database was read."""
        before = self.read_count

        async def read() -> Sequence[Row[Any]]:
            self.read_count += 1
            async with self.sessions() as session:
                query = select(Node.id, Node.revision).where(Node.path == path)
                rows = (await session.execute(query)).all()
            if during is not None:
                await during()
            return rows

        rows = await self.reads.rows(path, read)
        return rows, self.read_count > before

    async def update(self, path: str, metadata: dict[str, Any], *, commit: bool = True) -> None:
        """Change the node's metadata as the server does (its catalog event announces it)."""
        work = UnitOfWork(self.sessions)
        try:
            await update_node(work, self.catalog, ADMIN, path, NodeUpdate(metadata=metadata))
            if commit:
                await work.commit()
        finally:
            await work.close()  # rolled back unless committed

    async def announce(self, channel: str, payload: str) -> None:
        """A committed transaction's message on ``channel``, and nothing else."""
        work = UnitOfWork(self.sessions)
        try:
            self.notifier.publish(work, channel, payload)
            await work.commit()
        finally:
            await work.close()

    async def settle(self) -> None:
        """Wait until every message committed so far has been heard. PostgreSQL delivers this
        process's own messages once more, a moment later (and the server's, which write the
        nodes the tests read): a marker committed now is heard after them (in commit order),
        on a channel of its own (it empties nothing)."""
        if self.sessions.kw["bind"].dialect.name != "postgresql":
            return  # SQLite: every message is heard when its transaction commits
        marker = uuid.uuid4().hex
        await self.announce(SETTLED, marker)

        async def times() -> int:
            return self.heard[marker]

        await until(times, 2)  # here at once, then from PostgreSQL


@pytest.fixture
async def cache(database: async_sessionmaker[AsyncSession]) -> AsyncIterator[Reads]:
    engine: AsyncEngine = database.kw["bind"]
    notifier = Notifier(engine)
    reads = NodeReads(notifier, capacity=3)
    catalog = CatalogState(Wakeups(notifier), reads=reads)
    heard: collections.Counter[str] = collections.Counter()
    notifier.subscribe(SETTLED, lambda payload: heard.update([payload]))
    await notifier.start()
    try:
        yield Reads(reads, notifier, database, catalog, heard)
    finally:
        await notifier.aclose()


async def nodes_of(users: Users, *keys: str, settle: Reads) -> list[str]:
    """The paths of new nodes in a new user's namespace, once the cache heard of them."""
    alice, a = await users.new()
    for key in keys:
        await create(a, alice, key)
    await settle.settle()
    return [f"{alice}/{key}" for key in keys]


async def test_a_read_racing_a_change_is_not_kept(cache: Reads, users: Users) -> None:
    path, elsewhere = await nodes_of(users, "raced", "elsewhere", settle=cache)
    # A change commits between the read and the keeping: what was read is not kept.
    rows, read = await cache.rows(path, lambda: cache.update(path, {"v": 1}))
    assert (read, rows[0].revision) == (True, 1)
    assert len(cache.reads) == 0
    await cache.settle()
    rows, read = await cache.rows(path)
    assert (read, rows[0].revision) == (True, 2)  # the change is seen
    rows, read = await cache.rows(path)
    assert (read, rows[0].revision) == (False, 2)  # and kept now

    # So is one racing a change of who may see what (a membership), which empties it too.
    await cache.announce(NAMESPACES_CHANGED, "someone")
    assert len(cache.reads) == 0
    await cache.settle()
    rows, read = await cache.rows(path, lambda: cache.announce(NAMESPACES_CHANGED, "someone"))
    assert (read, len(cache.reads)) == (True, 0)
    await cache.settle()

    # A change that rolls back announces nothing: what was read is kept, and stays.
    rows, read = await cache.rows(path, lambda: cache.update(path, {"v": 9}, commit=False))
    assert (read, rows[0].revision) == (True, 2)
    await cache.update(path, {"v": 9}, commit=False)
    await cache.settle()
    rows, read = await cache.rows(path)
    assert (read, rows[0].revision) == (False, 2)
    # One that commits, wherever it is in the catalog, empties the cache.
    await cache.update(elsewhere, {"v": 1})
    assert len(cache.reads) == 0
    await cache.settle()
    assert (await cache.rows(path))[1]


async def test_nothing_is_kept_while_notifications_may_be_missed(
    cache: Reads, users: Users
) -> None:
    path, other = await nodes_of(users, "x", "y", settle=cache)
    assert (await cache.rows(path))[1]
    assert not (await cache.rows(path))[1]  # kept
    listening = cache.notifier.listening
    cache.notifier.listening = False  # as a lost connection makes it
    try:
        assert not cache.reads.caching
        for _ in range(3):
            rows, read = await cache.rows(path)
            assert (read, len(rows)) == (True, 1)  # not served from memory
            assert (await cache.rows(other))[1]  # nor kept
        assert len(cache.reads) == 1  # (what was kept before: not served while not listening)
    finally:
        cache.notifier.listening = listening
    # Without a notifier at all, nothing is ever kept.
    alone = Reads(NodeReads(), cache.notifier, cache.sessions, cache.catalog, cache.heard)
    assert not alone.reads.caching
    for _ in range(2):
        assert (await alone.rows(path))[1]
    assert len(alone.reads) == 0


async def test_the_least_recently_read_paths_go_first(cache: Reads, users: Users) -> None:
    first, second, third, fourth, fifth = await nodes_of(users, *"abcde", settle=cache)
    for path in (first, second, third):
        assert (await cache.rows(path))[1]
    assert not (await cache.rows(first))[1]  # read again: the most recent now
    assert (await cache.rows(fourth))[1]  # one path too many: the least recent, second, goes
    assert len(cache.reads) == 3
    for path in (first, third, fourth):
        assert not (await cache.rows(path))[1], path
    assert (await cache.rows(second))[1]  # read and kept again, pushing out first
    assert (await cache.rows(first))[1]  # and so on
    assert (await cache.rows(fifth))[1]
    assert len(cache.reads) == 3
    # A missing node is not kept, and pushes nothing out.
    for _ in range(2):
        rows, read = await cache.rows(f"{first}-missing")
        assert (read, len(rows)) == (True, 0)
    assert not (await cache.rows(fifth))[1]
    assert len(cache.reads) == 3


async def test_entries_expire(cache: Reads, users: Users, monkeypatch: pytest.MonkeyPatch) -> None:
    [path] = await nodes_of(users, "x", settle=cache)
    monkeypatch.setattr(state, "READS_TTL_SECONDS", 0.2)
    assert (await cache.rows(path))[1]
    assert not (await cache.rows(path))[1]
    await anyio.sleep(0.3)
    assert (await cache.rows(path))[1]
