"""The registry of sessions and tickets on the server's own database (SQLite and PostgreSQL):
sessions' lives, export numbers and their tombstones, shared tickets, scope variables, the
collection of server objects, access to sources, concurrent writers; and the migration that
makes its tables from a database of the previous schema."""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk._core.ticket_bytes import export_bytes, random_shared
from aiosdk.server.auth import Principal
from aiosdk.server.authorization import caller_of
from aiosdk.server.catalog.nodes import Viewer
from aiosdk.server.errors import ConflictError, InvalidRequestError, NotFoundError
from aiosdk.server.storage import default_database_url, session_factory, utcnow
from aiosdk.server.storage.migrations import (
    downgrade_database,
    schema_differences,
    upgrade_database,
)
from aiosdk.server.tickets import registry
from aiosdk.server.tickets.models import (
    TicketExport,
    TicketObject,
    TicketScope,
    TicketSession,
    TicketShared,
)
from aiosdk.server.tickets.registry import Target, TicketExistsError

from .conftest import POSTGRES_URL_ENV, Users, create, fresh_postgres_database, unique, unit, url
from .test_migrations import HEAD, Database

pytestmark = pytest.mark.anyio

Sessions = async_sessionmaker[AsyncSession]
TABLE = "table"


async def viewer_of(db: AsyncSession, name: str) -> Viewer:
    """The catalog viewer of user ``name``, as a request of theirs would have it."""
    return Viewer(await caller_of(db, Principal(name=name, is_admin=False, token_id="")))


async def opened(database: Sessions, owner: str, ttl: float = 60.0) -> TicketSession:
    async with unit(database) as db:
        return await registry.open_session(db, owner, ttl)


async def live(db: AsyncSession, session: TicketSession) -> TicketSession:
    return await registry.live_session(db, session.owner, session.id)


async def data_object(database: Sessions, sources: tuple[str, ...] = ()) -> str:
    """A table object (no data: the registry does not look at it)."""
    async with unit(database) as db:
        return await registry.new_object(
            db, type=TABLE, family=TABLE, structure={"npartitions": 0}, sources=sources
        )


async def export(database: Sessions, session: TicketSession, number: int, target: Target) -> None:
    async with unit(database) as db:
        await registry.add_export(db, await live(db, session), number, target)


async def object_exists(database: Sessions, object_id: str) -> bool:
    async with database() as db:
        return await db.get(TicketObject, object_id) is not None


def node_target(node: dict[str, object]) -> Target:
    node_id = str(node["id"])
    return Target(type=str(node["structure_family"]), node_id=node_id, sources=(node_id,))


# --- sessions ------------------------------------------------------------------------------


def test_ttls_are_clamped() -> None:
    assert registry.clamp_ttl(None) == registry.DEFAULT_TTL_SECONDS == 300
    assert registry.clamp_ttl(0.01) == registry.MIN_TTL_SECONDS == 1
    assert registry.clamp_ttl(-5) == 1
    assert registry.clamp_ttl(1e12) == registry.MAX_TTL_SECONDS == 86400
    assert registry.clamp_ttl(math.inf) == 86400
    assert registry.clamp_ttl(30, maximum=10) == 10
    assert registry.clamp_ttl(None, default=42) == 42
    with pytest.raises(InvalidRequestError):
        registry.clamp_ttl(math.nan)
    assert registry.ticket_path("abc", 7) == "~session/abc/7"


async def test_a_session_lives_until_closed_and_only_for_its_owner(database: Sessions) -> None:
    owner, other = unique("alice"), unique("bob")
    session = await opened(database, owner, ttl=30)
    assert session.ttl == 30
    assert session.closed_at is None
    assert timedelta(seconds=29) < session.expires_at - session.created_at <= timedelta(seconds=31)
    async with unit(database) as db:
        assert (await live(db, session)).id == session.id
        with pytest.raises(NotFoundError):
            await registry.live_session(db, other, session.id)
        with pytest.raises(NotFoundError):
            await registry.live_session(db, owner, uuid.uuid4().hex)
        with pytest.raises(NotFoundError):
            await registry.refresh_session(db, other, session.id)
        with pytest.raises(NotFoundError):
            await registry.close_session(db, other, session.id)
        before = session.expires_at
        refreshed = await registry.refresh_session(db, owner, session.id)
        assert refreshed.expires_at >= before
    async with unit(database) as db:
        assert await registry.close_session(db, owner, session.id) == (0, [])
    async with unit(database) as db:
        with pytest.raises(NotFoundError, match="closed, expired, or never opened"):
            await live(db, session)
        with pytest.raises(NotFoundError):
            await registry.refresh_session(db, owner, session.id)
        assert await registry.close_session(db, owner, session.id) == (0, [])  # idempotent
        with pytest.raises(ValueError, match="ttl"):
            await registry.open_session(db, owner, 0.5)


async def test_closing_releases_everything_the_session_exported(
    database: Sessions, users: Users
) -> None:
    name, http = await users.new()
    node = await create(http, name, unique("n"))
    session = await opened(database, name)
    view = await data_object(database, (node["id"],))
    plugin_id: str
    async with unit(database) as db:
        plugin_id = await registry.new_object(db, type="Counter", family=None, state={"value": 1})
    await export(database, session, 1, node_target(node))
    await export(database, session, 2, Target(type=TABLE, object_id=view, sources=(node["id"],)))
    await export(database, session, 3, Target(type="Counter", object_id=plugin_id))
    await export(database, session, 4, Target(type=TABLE, object_id=view, sources=(node["id"],)))
    shared = random_shared()
    async with unit(database) as db:
        await registry.publish(db, await live(db, session), 1, shared)
        await registry.release_export(db, await live(db, session), 4)
    async with unit(database) as db:
        released, removed = await registry.close_session(db, name, session.id)
    assert released == 3
    assert removed == [view]  # the plugin object had no data
    assert not await object_exists(database, view)
    assert not await object_exists(database, plugin_id)
    async with database() as db:
        rows = await db.scalar(
            select(func.count())
            .select_from(TicketExport)
            .where(TicketExport.session_id == session.id)
        )
        assert rows == 0
        with pytest.raises(NotFoundError):
            await registry.shared_target(db, shared)


async def test_an_expired_session_is_gone_at_once_and_swept_later(database: Sessions) -> None:
    owner = unique("alice")
    session = await opened(database, owner)
    view = await data_object(database)
    await export(database, session, 1, Target(type=TABLE, object_id=view))
    shared = random_shared()
    async with unit(database) as db:
        await registry.publish(db, await live(db, session), 1, shared)
    past = utcnow() - timedelta(seconds=1)
    async with unit(database) as db:
        await db.execute(
            update(TicketSession).where(TicketSession.id == session.id).values(expires_at=past)
        )
    async with unit(database) as db:
        with pytest.raises(NotFoundError):
            await live(db, session)
        with pytest.raises(NotFoundError):
            await registry.shared_target(db, shared)
        with pytest.raises(NotFoundError):
            await registry.refresh_session(db, owner, session.id)
    assert await object_exists(database, view)  # until the sweep
    async with unit(database) as db:
        ended, removed = await registry.expire_sessions(db)
    assert ended >= 1
    assert view in removed
    assert not await object_exists(database, view)
    async with unit(database) as db:
        assert await registry.close_session(db, owner, session.id) == (0, [])
        # Kept for a while (closing again answers 0), then deleted.
        later = utcnow() + timedelta(seconds=registry.RETAIN_CLOSED_SECONDS + 60)
        await registry.expire_sessions(db, later)
    async with unit(database) as db:
        with pytest.raises(NotFoundError):
            await registry.close_session(db, owner, session.id)


async def test_closing_an_expired_session_releases_it_answering_zero(database: Sessions) -> None:
    owner = unique("alice")
    session = await opened(database, owner)
    view = await data_object(database)
    await export(database, session, 1, Target(type=TABLE, object_id=view))
    async with unit(database) as db:
        await db.execute(
            update(TicketSession)
            .where(TicketSession.id == session.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    async with unit(database) as db:
        assert await registry.close_session(db, owner, session.id) == (0, [view])


# --- exports -------------------------------------------------------------------------------


async def test_export_numbers_are_never_reused(database: Sessions, users: Users) -> None:
    name, http = await users.new()
    node = await create(http, name, unique("n"))
    session = await opened(database, name)
    target = node_target(node)
    await export(database, session, 1, target)
    async with unit(database) as db:
        current = await live(db, session)
        assert await registry.export_target(db, current, 1) == target
        with pytest.raises(TicketExistsError, match="used already"):
            await registry.add_export(db, current, 1, target)
    for number in (0, -1, 2**32):
        async with unit(database) as db:
            with pytest.raises(InvalidRequestError, match="export number"):
                await registry.add_export(db, await live(db, session), number, target)
    await export(database, session, 2**32 - 1, target)  # the largest fits
    async with unit(database) as db:
        assert await registry.release_export(db, await live(db, session), 1) == []
    async with unit(database) as db:
        current = await live(db, session)
        with pytest.raises(NotFoundError, match="never made, or released"):
            await registry.export_target(db, current, 1)
        assert await registry.release_export(db, current, 1) == []  # released: nothing to do
        with pytest.raises(NotFoundError):
            await registry.release_export(db, current, 5)  # never made
        with pytest.raises(TicketExistsError):
            await registry.add_export(db, current, 1, target)  # its tombstone stays
        tombstone = await db.get(TicketExport, (session.id, 1))
        assert tombstone is not None
        assert tombstone.released
        assert (tombstone.node_id, tombstone.object_id, tombstone.sources) == (None, None, [])
    with pytest.raises(ValueError, match="exactly one"):
        Target(type=TABLE)
    with pytest.raises(ValueError, match="exactly one"):
        Target(type=TABLE, node_id="a", object_id="b")


async def test_nothing_is_added_to_an_ended_session(database: Sessions) -> None:
    owner = unique("alice")
    session = await opened(database, owner)
    view = await data_object(database)
    await export(database, session, 1, Target(type=TABLE, object_id=view))
    async with unit(database) as db:
        await registry.close_session(db, owner, session.id)
    async with unit(database) as db:
        # ``session`` is the row as it was read while live: the registry looks again.
        with pytest.raises(NotFoundError):
            await registry.add_export(db, session, 2, Target(type=TABLE, object_id=view))
        with pytest.raises(NotFoundError):
            await registry.release_export(db, session, 1)
        with pytest.raises(NotFoundError):
            await registry.bind(db, session, unique("v"), 1, owner)


# --- server objects ------------------------------------------------------------------------


async def test_an_object_lives_while_an_export_or_a_variable_refers_to_it(
    database: Sessions,
) -> None:
    owner = unique("alice")
    first, second = await opened(database, owner), await opened(database, unique("bob"))
    view = await data_object(database)
    target = Target(type=TABLE, object_id=view, revision=3)
    await export(database, first, 1, target)
    shared = random_shared()
    async with unit(database) as db:
        await registry.publish(db, await live(db, first), 1, shared)
    async with unit(database) as db:
        fetched = await registry.shared_target(db, shared)
        assert fetched == target
        await registry.add_export(db, await live(db, second), 7, fetched)
    async with unit(database) as db:
        assert await registry.release_export(db, await live(db, first), 1) == []
    assert await object_exists(database, view)  # the second session's export keeps it
    name = unique("latest")
    async with unit(database) as db:
        assert await registry.bind(db, await live(db, second), name, 7, "bob") == []
    async with unit(database) as db:
        assert await registry.release_export(db, await live(db, second), 7) == []
    assert await object_exists(database, view)  # the variable keeps it
    async with database() as db:
        assert await registry.scope_target(db, name) == target
    # Rebinding to something else lets it go.
    other = await data_object(database)
    await export(database, second, 8, Target(type=TABLE, object_id=other))
    async with unit(database) as db:
        assert await registry.bind(db, await live(db, second), name, 8, "bob") == [view]
    assert not await object_exists(database, view)
    async with unit(database) as db:
        with pytest.raises(NotFoundError, match="released"):
            await registry.get_object(db, view)
        with pytest.raises(NotFoundError, match="released meanwhile"):
            await registry.add_export(db, await live(db, second), 9, target)
        # Rebinding to the same object keeps it.
        assert await registry.bind(db, await live(db, second), name, 8, "bob") == []
        scope = await db.get(TicketScope, name)
        assert scope is not None
        assert scope.bound_by == "bob"


async def test_a_variable_outlives_the_session_that_bound_it(database: Sessions) -> None:
    owner = unique("alice")
    session = await opened(database, owner)
    view = await data_object(database)
    await export(database, session, 1, Target(type=TABLE, object_id=view))
    name = unique("kept")
    async with unit(database) as db:
        await registry.bind(db, await live(db, session), name, 1, owner)
    async with unit(database) as db:
        assert await registry.close_session(db, owner, session.id) == (1, [])
    assert await object_exists(database, view)
    async with database() as db:
        assert (await registry.scope_target(db, name)).object_id == view
    another = await opened(database, owner)
    async with unit(database) as db:
        with pytest.raises(NotFoundError, match="No scope variable"):
            await registry.scope_target(db, unique("unbound"))
        await registry.add_export(
            db, await live(db, another), 1, Target(type=TABLE, object_id=view)
        )
        for bad in ("", "a/b", ".", "x" * 256):
            with pytest.raises(InvalidRequestError, match="scope variable name"):
                await registry.bind(db, await live(db, another), bad, 1, owner)


async def test_an_application_object_is_made_once_and_never_collected(
    database: Sessions,
) -> None:
    app = unique("app")
    async with unit(database) as db:
        first = await registry.app_object(db, app, "counter", "Counter", {"value": 0})
    async with unit(database) as db:
        assert await registry.app_object(db, app, "counter", "Counter", {"value": 9}) == first
        assert await registry.app_object(db, app, "other", "Counter", {"value": 0}) != first
    session = await opened(database, unique("alice"))
    await export(database, session, 1, Target(type="Counter", object_id=first))
    async with unit(database) as db:
        assert await registry.release_export(db, await live(db, session), 1) == []
    assert await object_exists(database, first)
    async with unit(database) as db:
        assert await registry.lock_object_state(db, first) == {"value": 0}
        assert await registry.update_object_state(db, first, {"value": 5}) == 2
    async with unit(database) as db:
        assert await registry.lock_object_state(db, first) == {"value": 5}
        found = await registry.get_object(db, first)
        assert (found.app_id, found.field, found.type, found.family) == (
            app,
            "counter",
            "Counter",
            None,
        )
    view = await data_object(database)
    async with unit(database) as db:
        with pytest.raises(InvalidRequestError, match="not a plugin object"):
            await registry.lock_object_state(db, view)
        with pytest.raises(NotFoundError):
            await registry.lock_object_state(db, uuid.uuid4().hex)
        with pytest.raises(NotFoundError):
            await registry.update_object_state(db, uuid.uuid4().hex, {})


async def test_concurrent_applications_objects_are_one(database: Sessions) -> None:
    app = unique("app")

    async def make(ids: list[str]) -> None:
        async with unit(database) as db:
            ids.append(await registry.app_object(db, app, "f", "Counter", {"value": 0}))

    ids: list[str] = []
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(make, ids)
    assert len(set(ids)) == 1


# --- shared tickets ------------------------------------------------------------------------


async def test_shared_tickets_are_stored_by_digest_and_taken_once(
    database: Sessions, users: Users
) -> None:
    name, http = await users.new()
    node = await create(http, name, unique("n"))
    session = await opened(database, name)
    await export(database, session, 1, node_target(node))
    shared = random_shared()
    async with unit(database) as db:
        await registry.publish(db, await live(db, session), 1, shared)
    async with unit(database) as db:
        current = await live(db, session)
        with pytest.raises(TicketExistsError, match="taken already"):
            await registry.publish(db, current, 1, shared)
        with pytest.raises(InvalidRequestError, match="shared ticket"):
            await registry.publish(db, current, 1, export_bytes(1))
        with pytest.raises(InvalidRequestError, match="malformed"):
            await registry.publish(db, current, 1, b"h123")
        with pytest.raises(NotFoundError):
            await registry.publish(db, current, 2, random_shared())  # no export 2
    async with database() as db:
        row = await db.get(TicketShared, hashlib.sha256(shared).hexdigest())
        assert row is not None
        assert (row.session_id, row.number) == (session.id, 1)
        assert await registry.shared_target(db, shared) == node_target(node)
        with pytest.raises(NotFoundError, match="never published"):
            await registry.shared_target(db, random_shared())
    async with unit(database) as db:
        await registry.release_export(db, await live(db, session), 1)
    async with database() as db:
        with pytest.raises(NotFoundError):
            await registry.shared_target(db, shared)
        assert await db.get(TicketShared, registry.shared_digest(shared)) is None


# --- access --------------------------------------------------------------------------------


async def test_readable_means_read_on_every_source_now(database: Sessions, users: Users) -> None:
    alice, alice_http = await users.new()
    bob, _ = await users.new()
    first = await create(alice_http, alice, unique("a"))
    second = await create(alice_http, alice, unique("b"))
    view = Target(type=TABLE, object_id="x", sources=(first["id"], second["id"]))
    async with database() as db:
        assert await registry.readable(db, await viewer_of(db, alice), view)
        assert not await registry.readable(db, await viewer_of(db, bob), view)
        assert await registry.readable(db, await viewer_of(db, bob), Target("Counter", None, "x"))
        assert await registry.readable(db, Viewer(None), Target("Counter", None, "x"))
        assert not await registry.readable(db, Viewer(None), view)
    shared = await alice_http.put(f"/catalog/shares/{url(first['path'])}", json={"namespace": bob})
    assert shared.status_code in (200, 201), shared.text
    async with database() as db:
        bob_viewer = await viewer_of(db, bob)
        assert await registry.readable(db, bob_viewer, node_target(first))
        assert not await registry.readable(db, bob_viewer, view)  # not the second source
    deleted = await alice_http.delete(f"/catalog/nodes/{url(second['path'])}")
    assert deleted.status_code == 204, deleted.text
    async with database() as db:
        assert not await registry.readable(db, await viewer_of(db, alice), view)


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrent_exports_of_one_number_one_wins(database: Sessions) -> None:
    session = await opened(database, unique("alice"))
    view = await data_object(database)
    outcomes: list[str] = []

    async def add() -> None:
        try:
            await export(database, session, 1, Target(type=TABLE, object_id=view))
        except TicketExistsError:
            outcomes.append("exists")
        else:
            outcomes.append("added")

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(add)
    assert sorted(outcomes) == ["added"] + ["exists"] * 5


async def test_releases_racing_fetches_never_leave_a_dangling_export(
    database: Sessions,
) -> None:
    """The last release of an object and a fetch of it (a new export of the same target) at
    once: either the fetch finds it gone, or the object stays for the fetched export."""
    owner = unique("alice")
    first, second = await opened(database, owner), await opened(database, owner)
    rounds = 12
    views = [await data_object(database) for _ in range(rounds)]
    for number, view in enumerate(views, 1):
        await export(database, first, number, Target(type=TABLE, object_id=view))

    async def release(number: int) -> None:
        async with unit(database) as db:
            await registry.release_export(db, await live(db, first), number)

    async def fetch(number: int, view: str) -> None:
        with suppress(NotFoundError):
            await export(database, second, number, Target(type=TABLE, object_id=view))

    async with anyio.create_task_group() as group:
        for number, view in enumerate(views, 1):
            group.start_soon(release, number)
            group.start_soon(fetch, number, view)
    async with database() as db:
        for number, view in enumerate(views, 1):
            exported = await db.get(TicketExport, (second.id, number))
            assert (exported is not None) == (await db.get(TicketObject, view) is not None)


async def test_concurrent_first_binds_of_a_name(database: Sessions) -> None:
    owner = unique("alice")
    session = await opened(database, owner)
    view = await data_object(database)
    await export(database, session, 1, Target(type=TABLE, object_id=view))
    name = unique("v")
    outcomes: list[str] = []

    async def bind() -> None:
        try:
            async with unit(database) as db:
                await registry.bind(db, await live(db, session), name, 1, owner)
        except ConflictError:
            outcomes.append("retry")
        else:
            outcomes.append("bound")

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(bind)
    assert "bound" in outcomes
    async with database() as db:
        assert (await registry.scope_target(db, name)).object_id == view


# --- the migration -------------------------------------------------------------------------

TICKET_TABLES = {
    "ticket_sessions",
    "ticket_exports",
    "ticket_objects",
    "ticket_shared",
    "ticket_scope",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, empty database of one backend (dropped after)."""
    if request.param == "sqlite":
        yield Database("sqlite", tmp_path, default_database_url(tmp_path))
        return
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is not set or empty")
    async with fresh_postgres_database(base_url) as database_url:
        yield Database("postgresql", tmp_path, database_url)


async def _tables(database: Database) -> set[str]:
    async with database.engine() as engine, engine.connect() as connection:
        return await connection.run_sync(lambda c: set(inspect(c).get_table_names()))


async def test_a_database_of_the_previous_schema_gets_the_ticket_tables(
    empty_database: Database,
) -> None:
    database = empty_database
    await database.load_previous_main()
    async with database.engine() as engine:
        await upgrade_database(engine, "0003")
    await database.execute(
        "INSERT INTO namespaces (name, kind, created_at)"
        " VALUES ('olduser', 'user', '2026-06-01 00:00:00')"
    )
    assert not TICKET_TABLES & await _tables(database)
    async with database.engine() as engine:
        assert await upgrade_database(engine) == ("0003", HEAD)
        assert await schema_differences(engine) == []
        sessions = session_factory(engine)
        session = await opened(sessions, "olduser")
        view = await data_object(sessions)
        await export(sessions, session, 1, Target(type=TABLE, object_id=view))
        async with sessions() as db:
            assert (await live(db, session)).owner == "olduser"
        assert await downgrade_database(engine, "0003") == (HEAD, "0003")
    assert not TICKET_TABLES & await _tables(database)
    async with database.engine() as engine:
        assert await upgrade_database(engine) == ("0003", HEAD)
        assert await schema_differences(engine) == []
        async with engine.connect() as connection:
            kept = await connection.scalar(text("SELECT count(*) FROM namespaces"))
        assert kept == 1
