"""Concurrent writers in one container, over loopback against the real server, on SQLite and
PostgreSQL: every create, change and delete succeeds (none is refused by a lock), and a lock the
database could not get in time is a 503 with ``Retry-After``, never a 500."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aiosdk.server import Server, ServerConfig
from aiosdk.server.storage import db

from .conftest import Users, all_keys, assert_error, children, create, get, make_client, url

pytestmark = pytest.mark.anyio

WRITERS = 64


async def gather(*calls: object) -> list[httpx.Response]:
    """Run the request coroutines ``calls`` at once; their responses, in order."""
    answers: list[httpx.Response | None] = [None] * len(calls)

    async def run(index: int, call: object) -> None:
        answers[index] = await call  # type: ignore[misc]

    async with anyio.create_task_group() as tasks:
        for index, call in enumerate(calls):
            tasks.start_soon(run, index, call)
    return [answer for answer in answers if answer is not None]


def limits() -> httpx.Limits:
    return httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS)


async def test_concurrent_creates_changes_and_deletes_in_one_container(
    server: Server, users: Users
) -> None:
    name, _ = await users.new()
    token_client = await users.client(name)
    async with httpx.AsyncClient(
        base_url=str(token_client.base_url),
        headers=token_client.headers,
        limits=limits(),
        timeout=60,
    ) as http:
        group = await create(http, name, "busy")
        keys = [f"k{i:03d}" for i in range(WRITERS)]

        created = await gather(
            *(
                http.post(f"/catalog/children/{url(group['path'])}", json={"key": key})
                for key in keys
            )
        )
        assert [r.status_code for r in created] == [201] * WRITERS, [
            r.text for r in created if r.status_code != 201
        ][:3]
        assert await all_keys(http, group["path"]) == keys

        patched = await gather(
            *(
                http.patch(
                    f"/catalog/nodes/{url(group['path'])}/{key}",
                    json={"metadata_merge": {"i": i}},
                )
                for i, key in enumerate(keys)
            )
        )
        assert [r.status_code for r in patched] == [200] * WRITERS, [
            r.text for r in patched if r.status_code != 200
        ][:3]
        # Without a revision, concurrent merges into one node all apply.
        merged = await gather(
            *(
                http.patch(
                    f"/catalog/nodes/{url(group['path'])}", json={"metadata_merge": {key: 1}}
                )
                for key in keys
            )
        )
        assert [r.status_code for r in merged] == [200] * WRITERS, [
            r.text for r in merged if r.status_code != 200
        ][:3]
        assert (await get(http, group["path"]))["metadata"] == dict.fromkeys(keys, 1)
        assert (await get(http, f"{group['path']}/k007"))["metadata"] == {"i": 7}

        deleted = await gather(
            *(http.delete(f"/catalog/nodes/{url(group['path'])}/{key}") for key in keys)
        )
        assert [r.status_code for r in deleted] == [204] * WRITERS, [
            r.text for r in deleted if r.status_code != 204
        ][:3]
        assert await all_keys(http, group["path"]) == []

        # All at once: creates, changes and deletes of different children.
        await gather(*(create(http, group["path"], key) for key in keys[: WRITERS // 2]))
        mixed = await gather(
            *(
                http.post(f"/catalog/children/{url(group['path'])}", json={"key": f"n{i:03d}"})
                for i in range(WRITERS // 2)
            ),
            *(
                http.patch(
                    f"/catalog/nodes/{url(group['path'])}/{key}", json={"metadata": {"x": 1}}
                )
                for key in keys[: WRITERS // 4]
            ),
            *(
                http.delete(f"/catalog/nodes/{url(group['path'])}/{key}")
                for key in keys[WRITERS // 4 : WRITERS // 2]
            ),
        )
        assert all(r.status_code < 300 for r in mixed), [
            r.text for r in mixed if r.status_code >= 300
        ][:3]
        expected = sorted(keys[: WRITERS // 4] + [f"n{i:03d}" for i in range(WRITERS // 2)])
        assert await all_keys(http, group["path"]) == expected


@pytest.fixture
async def impatient_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Server]:
    """A server on SQLite that waits 0.2 s for a lock, not 10."""
    monkeypatch.setattr(db, "_SQLITE_BUSY_TIMEOUT_MS", 200)
    async with Server(ServerConfig(data_dir=tmp_path)) as running:
        yield running


class _WriteLock:
    """The SQLite database's write lock, held by another connection (in a worker thread)."""

    def __init__(self, database: Path) -> None:
        self.database = database

    async def __aenter__(self) -> None:
        def lock() -> sqlite3.Connection:
            connection = sqlite3.connect(self.database, isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            return connection

        self.connection = await anyio.to_thread.run_sync(lock)

    async def __aexit__(self, *exc_info: object) -> None:
        def unlock() -> None:
            self.connection.rollback()
            self.connection.close()

        await anyio.to_thread.run_sync(unlock)


async def test_a_lock_not_got_in_time_is_503_with_retry_after(impatient_server: Server) -> None:
    server = impatient_server
    async with make_client(server, server.admin_token) as admin:
        answer = await admin.post("/admin/users", json={"username": "locked"})
        assert answer.status_code == 201, answer.text
        async with _WriteLock(server.data_dir / "aiosdk.db"):
            refused = await admin.post("/catalog/children/locked", json={"key": "x"})
            error = assert_error(refused, 503, "unavailable")
            assert "retry" in error["message"].lower()
            assert int(refused.headers["retry-after"]) >= 1
            patched = await admin.patch("/catalog/nodes/locked", json={"metadata": {"a": 1}})
            assert_error(patched, 503, "unavailable")
            assert (await admin.get("/catalog/nodes/locked")).status_code == 200  # reads go on
        assert (await admin.post("/catalog/children/locked", json={"key": "x"})).status_code == 201


async def test_a_container_deleted_while_children_are_created_in_it(users: Users) -> None:
    """A delete that is not recursive never takes a child with it: either the creates that
    succeeded come first (the delete is refused, not_empty), or the delete does (they find no
    container). The checks a write depends on are in its transaction."""
    name, _ = await users.new()
    token_client = await users.client(name)
    async with httpx.AsyncClient(
        base_url=str(token_client.base_url),
        headers=token_client.headers,
        limits=limits(),
        timeout=60,
    ) as http:
        for attempt in range(6):
            group = await create(http, name, f"doomed{attempt}")
            target = url(group["path"])
            answers = await gather(
                http.delete(f"/catalog/nodes/{target}"),
                *(
                    http.post(f"/catalog/children/{target}", json={"key": f"c{i:02d}"})
                    for i in range(WRITERS // 2)
                ),
            )
            deleted, creates = answers[0], answers[1:]
            assert all(r.status_code in (201, 404, 409) for r in creates), [
                r.text for r in creates
            ][:3]
            made = [r for r in creates if r.status_code == 201]
            if deleted.status_code == 204:
                assert not made, f"deleted with {len(made)} children just created in it"
                gone = await http.get(f"/catalog/nodes/{target}")
                assert gone.status_code == 404
            else:
                assert_error(deleted, 409, "not_empty")
                assert len(await all_keys(http, group["path"])) == len(made)


async def _tree(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every node below ``path`` as its parent's children listing answers it."""
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"fields": "keys", "page_size": 1000}
        if token:
            params["page_token"] = token
        page = await children(http, path, **params)
        for item in page["items"]:
            assert item["path"] == f"{path}/{item['key']}", (path, item)
            found.append(item)
            if item["structure_family"] == "container":
                found += await _tree(http, item["path"])
        token = page["next_page_token"]
        if token is None:
            return found


async def test_creates_while_an_ancestor_moves_land_under_it(users: Users) -> None:
    """A container moved again and again while children are created two levels below it:
    afterwards every node's path is its parent's and its key (none left at a path under an
    old one), and is where a GET finds it. A create finds its parent where it asked, or 404."""
    name, _ = await users.new()
    token_client = await users.client(name)
    async with httpx.AsyncClient(
        base_url=str(token_client.base_url),
        headers=token_client.headers,
        limits=limits(),
        timeout=60,
    ) as http:
        await create(http, name, "a")
        await create(http, f"{name}/a", "b")
        where = {"a": f"{name}/a"}
        done = anyio.Event()
        codes: dict[int, int] = {}

        async def creator(n: int) -> None:
            i = 0
            while not done.is_set():
                i += 1
                target = f"{where['a']}/b"
                made = await http.post(
                    f"/catalog/children/{url(target)}", json={"key": f"k{n}-{i}"}
                )
                codes[made.status_code] = codes.get(made.status_code, 0) + 1
                if made.status_code == 201 and i % 3 == 0:  # and one level deeper
                    await http.post(
                        f"/catalog/children/{url(made.json()['path'])}", json={"key": "inner"}
                    )

        async def mover() -> None:
            try:
                for j in range(12):
                    moved = await http.post(
                        f"/catalog/move/{url(where['a'])}", json={"to": f"{name}/a{j}"}
                    )
                    assert moved.status_code == 200, moved.text
                    where["a"] = moved.json()["path"]
                    await anyio.sleep(0.01)
            finally:
                done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(mover)
            for n in range(6):
                tasks.start_soon(creator, n)
        assert set(codes) <= {201, 404}, codes
        assert codes.get(201, 0) > 0
        nodes = await _tree(http, name)
        assert len(nodes) > 2
        for node in nodes:
            assert (await get(http, node["path"]))["id"] == node["id"]


async def test_a_recursive_delete_racing_creates_in_it(users: Users) -> None:
    """A create whose container is deleted (recursively) while it runs finds no container:
    404, never a 409 that says the new key exists."""
    name, _ = await users.new()
    token_client = await users.client(name)
    async with httpx.AsyncClient(
        base_url=str(token_client.base_url),
        headers=token_client.headers,
        limits=limits(),
        timeout=60,
    ) as http:
        for attempt in range(6):
            group = await create(http, name, f"gone{attempt}")
            target = url(group["path"])
            answers = await gather(
                *(
                    http.post(f"/catalog/children/{target}", json={"key": f"c{i:02d}"})
                    for i in range(WRITERS // 4)
                ),
                http.delete(f"/catalog/nodes/{target}", params={"recursive": "true"}),
                *(
                    http.post(f"/catalog/children/{target}", json={"key": f"d{i:02d}"})
                    for i in range(WRITERS // 4)
                ),
            )
            deleted = answers[WRITERS // 4]
            creates = answers[: WRITERS // 4] + answers[WRITERS // 4 + 1 :]
            assert deleted.status_code == 204, deleted.text
            assert all(r.status_code in (201, 404) for r in creates), [
                r.text for r in creates if r.status_code not in (201, 404)
            ][:3]
            assert (await http.get(f"/catalog/nodes/{target}")).status_code == 404
            assert await all_keys(http, name) == []
