"""Random access and paging of a container's views against the real server: every index and many
slices of a 1,000-entry container checked against its full listing, what each access costs in
requests (counted on the wire), and a 10,000-entry listing that streams page by page."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import httpx
import pytest
from _structures import stored
from sqlalchemy import insert, select

import aiosdk
from aiosdk import DESCENDING, Key
from aiosdk.server import ServerThread
from aiosdk.server.catalog.models import Node
from aiosdk.server.storage import create_engine, default_database_url
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio


class Recorder(httpx.AsyncBaseTransport):
    """httpx's own transport, keeping every request it sends (what the client puts on the wire)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def since(self, mark: int, route: str = "/catalog/") -> list[httpx.Request]:
        return [r for r in self.requests[mark:] if route in r.url.path]


async def seed(server: ServerThread, parent: str, children: Iterable[dict[str, Any]]) -> None:
    """Insert children of ``parent`` straight into the server's database: arrays (with the
    structure the server would keep) unless a child says its ``structure_family``.

    Only the bulk of a big container is made this way, because one request per node would take
    minutes; every node the tests read still comes through the API.
    """
    url = server.server.config.database_url or default_database_url(server.data_dir)
    engine = await anyio.to_thread.run_sync(create_engine, url)
    try:
        async with engine.begin() as connection:
            row = (
                await connection.execute(
                    select(Node.id, Node.namespace, Node.depth).where(Node.path == parent)
                )
            ).one()
            rows = [
                {
                    "parent_id": row.id,
                    "namespace": row.namespace,
                    "key": child["key"],
                    "path": f"{parent}/{child['key']}",
                    "depth": row.depth + 1,
                    "structure_family": child.get("structure_family", "array"),
                    "metadata": child.get("metadata", {}),
                    "specs": [],
                    "tags": [],
                    "structure": child.get(
                        "structure", stored() if child.get("structure_family") is None else None
                    ),
                }
                for child in children
            ]
            for start in range(0, len(rows), 2000):
                await connection.execute(insert(Node), rows[start : start + 2000])
    finally:
        await engine.dispose()


@pytest.fixture
async def owner(
    aiosdk_accounts: AsyncAccounts,
) -> AsyncIterator[tuple[aiosdk.AsyncClient, Recorder, str]]:
    """A user's client whose requests are recorded, and the user's namespace."""
    user = await aiosdk_accounts.user("views")
    recorder = Recorder()
    try:
        client = await aiosdk_accounts.client(user, http_transport=recorder)
        yield client, recorder, user.username
    finally:
        await recorder.aclose()


KEYS = [f"k{i:04d}" for i in range(1000)]


@pytest.fixture
async def thousand(
    owner: tuple[aiosdk.AsyncClient, Recorder, str], server: ServerThread
) -> aiosdk.AsyncContainer:
    client, _, namespace = owner
    container = await client.catalog.create_container(f"{namespace}/thousand")
    await seed(
        server,
        container.path,
        ({"key": key, "metadata": {"i": i, "parity": i % 2}} for i, key in enumerate(KEYS)),
    )
    return container


async def test_every_index_matches_the_full_listing(thousand: aiosdk.AsyncContainer) -> None:
    listed = [key async for key in thousand]
    assert listed == KEYS
    assert [key async for key in thousand] == KEYS
    nodes = [node async for node in thousand.values()]
    assert [(n.key, n.metadata["i"]) for n in nodes] == [(k, i) for i, k in enumerate(KEYS)]
    keys = thousand.keys()
    found: dict[int, str] = {}

    async def at(i: int) -> None:
        found[i] = await keys[i]

    with anyio.fail_after(300):
        for start in range(-1000, 1000, 50):  # 50 at a time: one request each
            async with anyio.create_task_group() as tg:
                for i in range(start, start + 50):
                    tg.start_soon(at, i)
    assert [found[i] for i in range(-1000, 1000)] == KEYS + KEYS
    for i in (1000, 1001, -1001, 10**6):
        with pytest.raises(IndexError):
            await keys[i]
    values = thousand.values()
    for i in (0, 1, 499, 998, 999, -1, -2, -500, -1000):
        node = await values[i]
        assert (node.key, node.metadata["i"]) == (KEYS[i], KEYS.index(KEYS[i]))
    key, node = await thousand.items()[-3]
    assert (key, node.key) == (KEYS[-3], KEYS[-3])
    assert await keys.first() == KEYS[0]
    assert await keys.last() == KEYS[-1]
    assert await keys.head(7) == KEYS[:7]
    assert await keys.tail(7) == KEYS[-7:]
    assert await keys.head(0) == []
    assert await keys.tail(0) == []
    assert await keys.__len__() == await thousand.count() == 1000


SLICE_BOUNDS = [None, 0, 1, 7, 100, 999, 1000, 1500, -1, -7, -100, -999, -1000, -1500]
SLICE_STEPS = [None, 1, 3, 250, -1, -3]


async def test_slices_match_the_full_listing(thousand: aiosdk.AsyncContainer) -> None:
    keys = thousand.keys()
    slices = [
        slice(*bounds) for bounds in itertools.product(SLICE_BOUNDS, SLICE_BOUNDS, SLICE_STEPS)
    ]
    with anyio.fail_after(600):
        for s in slices[::3]:  # a third of them: every shape, in a bounded time
            assert await keys[s] == KEYS[s], s
    values = thousand.values()
    for s in [
        slice(None, 3),
        slice(-3, None),
        slice(10, 20, 2),
        slice(-5, -1),
        slice(995, 2, -400),
    ]:
        assert [n.key for n in await values[s]] == KEYS[s], s
    assert [k for k, _ in await thousand.items()[-4:-1]] == KEYS[-4:-1]
    with pytest.raises(ValueError, match="zero"):
        await keys[::0]


async def test_views_of_a_sorted_search_match_its_listing(thousand: aiosdk.AsyncContainer) -> None:
    evens = thousand.search(Key("parity") == 0).sort(("i", DESCENDING))
    expected = [k for i, k in enumerate(KEYS) if i % 2 == 0][::-1]
    assert [k async for k in evens] == expected
    assert await evens.count() == 500
    for i in (0, 1, 250, 499, -1, -2, -500):
        assert await evens.keys()[i] == expected[i]
        assert (await evens.values()[i]).key == expected[i]
    for s in [slice(None, 5), slice(-5, None), slice(3, -3, 7), slice(None, None, -9)]:
        assert await evens.keys()[s] == expected[s], s
    assert thousand.sorting == []
    assert evens.sorting == [("i", DESCENDING)]
    assert await thousand.count() == 1000  # the search is a new container


async def test_each_access_costs_one_small_request(
    thousand: aiosdk.AsyncContainer, owner: tuple[aiosdk.AsyncClient, Recorder, str]
) -> None:
    _, recorder, _ = owner
    values = thousand.values()

    async def requests_of(access: Any) -> list[httpx.Request]:
        mark = len(recorder.requests)
        await access
        return recorder.since(mark)

    sent = await requests_of(values[500])
    assert len(sent) == 1
    assert sent[0].url.path.endswith(f"/catalog/children/{thousand.path}")
    assert dict(sent[0].url.params) == {"page_size": "1", "offset": "500"}
    sent = await requests_of(values[-1])
    assert len(sent) == 1  # reversed order, never a count
    assert dict(sent[0].url.params) == {"page_size": "1", "reverse": "true"}
    sent = await requests_of(values[-10])
    assert dict(sent[0].url.params) == {"page_size": "1", "offset": "9", "reverse": "true"}
    for access, page_size in [
        (values[:3], "3"),
        (values[-3:], "3"),
        (values.first(), "1"),
        (values.last(), "1"),
        (values.head(5), "5"),
        (values.tail(5), "5"),
        (thousand.keys()[10:20], "10"),
    ]:
        sent = await requests_of(access)
        assert [r.url.params["page_size"] for r in sent] == [page_size]
    sent = await requests_of(thousand.keys()[:])  # 1000 entries: one full page (and its end)
    assert next(r.url.params["page_size"] for r in sent) == "1000"
    assert len(sent) <= 2
    sent = await requests_of(thousand.keys()[5:-5])  # mixed signs: one count, then one read
    assert [r.url.path.split("/catalog/")[1].split("/")[0] for r in sent] == ["count", "children"]
    sent = await requests_of(thousand.keys()[0])
    assert sent[0].url.params["fields"] == "keys"  # keys travel without metadata
    sent = await requests_of(thousand.count())
    assert len(sent) == 1


async def test_ten_thousand_entries_stream_page_by_page(
    owner: tuple[aiosdk.AsyncClient, Recorder, str], server: ServerThread
) -> None:
    client, recorder, namespace = owner
    big = await client.catalog.create_container(f"{namespace}/big")
    expected = [f"e{i:05d}" for i in range(10_000)]
    await seed(server, big.path, ({"key": k, "metadata": {"i": i}} for i, k in enumerate(expected)))
    mark = len(recorder.requests)
    seen: list[str] = []
    async for node in big.values():
        seen.append(node.key)
        listed = recorder.since(mark, "/catalog/children/")
        # Lazily: the page holding this entry has been asked for, and no page after it.
        assert len(listed) == -(-len(seen) // 100)
        del node
    assert seen == expected
    listed = recorder.since(mark, "/catalog/children/")
    assert len(listed) == 100
    assert {r.url.params["page_size"] for r in listed} == {"100"}
    assert "page_token" not in listed[0].url.params
    assert all("page_token" in r.url.params and "offset" not in r.url.params for r in listed[1:])


async def test_iteration_survives_changes_while_it_runs(
    owner: tuple[aiosdk.AsyncClient, Recorder, str], server: ServerThread
) -> None:
    client, _, namespace = owner
    box = await client.catalog.create_container(f"{namespace}/moving")
    # Keys come in pages of 1000: three pages.
    await seed(server, box.path, ({"key": f"m{i:04d}"} for i in range(0, 6000, 2)))
    seen: list[str] = []
    removed: set[str] = set()
    async for key in box.keys():
        seen.append(key)
        if len(seen) == 1200:  # in the second page (m2000..m3998): change what is ahead and behind
            for gone in ("m0000", "m2500", "m4500", "m4600", "m5998"):
                await (await box[gone]).delete()
                removed.add(gone)
            for new in ("m0001", "m4401", "m5999"):
                await box.create_container(new)
    survivors = [f"m{i:04d}" for i in range(0, 6000, 2) if f"m{i:04d}" not in removed]
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(survivors) <= set(seen)  # every surviving entry once
    assert {"m4401", "m5999"} <= set(seen)
    assert "m0001" not in seen
    assert not {"m4500", "m4600", "m5998"} & set(seen)  # removed before their page was read
