"""The events of a container (aiosdk.server.catalog.events): gapless, in commit order, pruned."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server.accounts.models import Namespace
from aiosdk.server.catalog import events
from aiosdk.server.catalog.models import CatalogEvent, EventKind, Node
from aiosdk.server.catalog.state import CatalogState, Wakeups
from aiosdk.server.storage import create_engine, session_factory
from aiosdk.server.storage.models import Base
from aiosdk.server.unit_of_work import UnitOfWork

from .conftest import POSTGRES_URL_ENV, fresh_postgres_database

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a new database holding the schema, and the namespace ``alice`` with a root."""
    if request.param == "sqlite":
        async with _database(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}") as made:
            yield made
        return
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is not set")
    async with fresh_postgres_database(base_url) as url, _database(url) as made:
        yield made


class _database:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> async_sessionmaker[AsyncSession]:
        self.engine = await anyio.to_thread.run_sync(create_engine, self.url)
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        made = session_factory(self.engine)
        async with made.begin() as session:
            session.add(Namespace(name="alice", kind="user"))
            await session.flush()
            session.add(_node("root", None, "alice"))
        return made

    async def __aexit__(self, *exc_info: object) -> None:
        await self.engine.dispose()


def _node(node_id: str, parent: Node | None, key: str, **values: object) -> Node:
    path = key if parent is None else f"{parent.path}/{key}"
    return Node(
        id=node_id,
        parent_id=None if parent is None else parent.id,
        namespace="alice",
        key=key,
        path=path,
        depth=path.count("/") + 1,
        structure_family=values.pop("structure_family", "container"),
        node_metadata=values.pop("metadata", {}),
        specs=[],
        tags=[],
        **values,
    )


async def _root(sessions: async_sessionmaker[AsyncSession]) -> Node:
    async with sessions() as session:
        root = await session.get(Node, "root")
        assert root is not None
        return root


async def _create(
    sessions: async_sessionmaker[AsyncSession], wakeups: Wakeups, parent: Node, key: str
) -> int:
    work = UnitOfWork(sessions)
    try:
        node = _node(None, parent, key, metadata={"key": key})  # type: ignore[arg-type]
        work.session.add(node)
        sequence = await events.record(work, wakeups, parent.id, EventKind.CREATED, node)
        await work.commit()
        return sequence
    finally:
        await work.close()


async def _events(sessions: async_sessionmaker[AsyncSession]) -> list[CatalogEvent]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(CatalogEvent)
                .where(CatalogEvent.container_id == "root")
                .order_by(CatalogEvent.sequence)
            )
        )


async def test_sequences_are_gapless_under_concurrent_writers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wakeups = Wakeups()
    root = await _root(sessions)
    returned: list[int] = []

    async def writer(number: int) -> None:
        for i in range(15):
            returned.append(await _create(sessions, wakeups, root, f"w{number}-{i}"))

    async with anyio.create_task_group() as group:
        for number in range(4):
            group.start_soon(writer, number)

    assert sorted(returned) == list(range(1, 61))
    recorded = await _events(sessions)
    assert [event.sequence for event in recorded] == list(range(1, 61))
    assert {event.key for event in recorded} == {f"w{n}-{i}" for n in range(4) for i in range(15)}
    assert all(event.kind == "created" and event.revision == 1 for event in recorded)
    assert all(event.node_metadata == {"key": event.key} for event in recorded)
    assert (await _root(sessions)).child_sequence == 60


async def test_a_rolled_back_event_takes_no_number_and_wakes_nobody(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wakeups = Wakeups()
    root = await _root(sessions)
    with wakeups.waiter("root") as woken:
        work = UnitOfWork(sessions)
        node = _node("lost", root, "lost")
        work.session.add(node)
        assert await events.record(work, wakeups, "root", EventKind.CREATED, node) == 1
        await work.close()  # never committed
        assert not woken.is_set()
        assert await _create(sessions, wakeups, root, "kept") == 1
        assert woken.is_set()
    assert [(e.sequence, e.key) for e in await _events(sessions)] == [(1, "kept")]
    assert wakeups.watchers("root") == 0


async def test_updates_and_deletions(sessions: async_sessionmaker[AsyncSession]) -> None:
    state = CatalogState()
    root = await _root(sessions)
    await _create(sessions, state.wakeups, root, "a")
    work = UnitOfWork(sessions)
    try:
        node = (await work.session.scalars(select(Node).where(Node.key == "a"))).one()
        with state.wakeups.waiter(node.id) as own:  # the child's own watchers wake too
            node.revision = 2
            node.node_metadata = {"color": "red"}
            assert await events.record(work, state.wakeups, "root", "updated", node) == 2
            assert await events.record(work, state.wakeups, "root", "deleted", node) == 3
            await work.session.delete(node)
            await work.commit()
            assert own.is_set()
    finally:
        await work.close()
    recorded = await _events(sessions)
    assert [(e.kind, e.revision, e.node_metadata) for e in recorded] == [
        ("created", 1, {"key": "a"}),
        ("updated", 2, {"color": "red"}),
        ("deleted", 2, None),
    ]
    assert len({e.node_id for e in recorded}) == 1
    with pytest.raises(ValueError, match="kind"):
        await events.record(UnitOfWork(sessions), state.wakeups, "root", "moved", node)


async def test_old_events_are_pruned(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEP", 10)
    monkeypatch.setattr(events, "PRUNE_EVERY", 5)
    wakeups = Wakeups()
    root = await _root(sessions)
    for i in range(23):
        await _create(sessions, wakeups, root, f"k{i}")
    # Pruned at 15 (≤ 5) and at 20 (≤ 10): the newest ten, and those since the last pruning.
    assert [e.sequence for e in await _events(sessions)] == list(range(11, 24))
