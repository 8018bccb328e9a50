"""Reads by ticket path over HTTP: ``~session/<session_id>/<number>`` wherever a read route takes
a node's path (metadata, full reads, partitions, blocks, exports, formats), for the session's
owner only, while the session and the export live and the owner may read the sources; never a
write. Sessions and exports are made with the registry on the server's own database. And the
store's sweep keeps the data of server objects as it keeps nodes'."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server
from aiosdk.server.data.cleanup import SWEEP_GRACE_SECONDS, DataCleanup
from aiosdk.server.data.store import BlobStore
from aiosdk.server.runner import BLOBS_DIRECTORY
from aiosdk.server.storage import utcnow
from aiosdk.server.tickets import registry
from aiosdk.server.tickets.models import TicketSession
from aiosdk.server.tickets.registry import Target

from . import _tables
from ._arrays import decoded, new_array, put_all, read_full
from ._arrays import sample as array_sample
from .conftest import Users, assert_error, create, get, make_client, unique, unit, url

pytestmark = pytest.mark.anyio

Sessions = async_sessionmaker[AsyncSession]


class Exports:
    """One session of ``owner``'s, exporting with the registry."""

    def __init__(self, database: Sessions, session: TicketSession) -> None:
        self.database = database
        self.session = session
        self.numbers = 0

    @classmethod
    async def open(cls, database: Sessions, owner: str) -> Exports:
        async with unit(database) as db:
            return cls(database, await registry.open_session(db, owner, 60.0))

    async def add(self, target: Target) -> str:
        """Export ``target``; its ticket path."""
        self.numbers += 1
        async with unit(self.database) as db:
            session = await registry.live_session(db, self.session.owner, self.session.id)
            await registry.add_export(db, session, self.numbers, target)
        return registry.ticket_path(self.session.id, self.numbers)

    async def node(self, node: dict[str, Any]) -> str:
        node_id = node["id"]
        return await self.add(
            Target(type=node["structure_family"], node_id=node_id, sources=(node_id,))
        )

    async def release(self, path: str) -> None:
        async with unit(self.database) as db:
            session = await registry.live_session(db, self.session.owner, self.session.id)
            await registry.release_export(db, session, int(path.rsplit("/", 1)[1]))

    async def close(self) -> None:
        async with unit(self.database) as db:
            await registry.close_session(db, self.session.owner, self.session.id)


async def table_node(http: httpx.AsyncClient, parent: str) -> dict[str, Any]:
    node = await _tables.new_table(http, parent, unique("t"))
    await _tables.append_all(http, node["path"], [_tables.sample(0, 5), _tables.sample(5, 3)])
    return await get(http, node["path"])


async def copy_data(server: Server, family: str, node_id: str, object_id: str) -> None:
    """Give the server object ``object_id`` a copy of the node's bytes (as a view would have
    written its own)."""
    root = server.data_dir / BLOBS_DIRECTORY / family
    await anyio.to_thread.run_sync(shutil.copytree, root / node_id, root / object_id)


async def test_a_table_export_reads_like_its_node(database: Sessions, users: Users) -> None:
    name, http = await users.new()
    node = await table_node(http, name)
    exports = await Exports.open(database, name)
    path = await exports.node(node)
    assert path == f"~session/{exports.session.id}/1"

    found = await get(http, path)
    assert found["id"] == node["id"]
    assert found["path"] == path
    assert found["key"] == "1"
    assert found["parent"] == f"~session/{exports.session.id}"
    assert found["namespace"] == name
    assert found["allowed_actions"] == ["read"]
    assert found["shares"] == []
    assert not found["public"]
    for same in ("structure_family", "structure", "metadata", "specs", "revision", "created_at"):
        assert found[same] == node[same], same

    whole = await http.get(f"/table/full/{url(path)}")
    assert whole.status_code == 200, whole.text
    assert _tables.parse(whole.content).equals(
        _tables.parse((await http.get(f"/table/full/{url(node['path'])}")).content)
    )
    part = await http.get(f"/table/partition/{url(path)}", params={"partition": 1})
    assert part.status_code == 200, part.text
    assert _tables.parse(part.content).equals(_tables.sample(5, 3))
    csv = await http.get(f"/table/full/{url(path)}", params={"format": "csv", "column": "i"})
    assert csv.status_code == 200, csv.text
    expected = await http.get(
        f"/table/full/{url(node['path'])}", params={"format": "csv", "column": "i"}
    )
    assert csv.content == expected.content
    formats = await http.get(f"/formats/{url(path)}")
    assert formats.status_code == 200, formats.text
    assert formats.json() == (await http.get(f"/formats/{url(node['path'])}")).json()


async def test_an_array_export_reads_like_its_node(database: Sessions, users: Users) -> None:
    name, http = await users.new()
    values = array_sample("<f8", (6, 4))
    node = await new_array(http, name, unique("a"), "<f8", (6, 4), (4, 4))
    await put_all(http, node["path"], values, (4, 4))
    exports = await Exports.open(database, name)
    path = await exports.node(node)
    np.testing.assert_array_equal(await read_full(http, path), values)
    np.testing.assert_array_equal(await read_full(http, path, "1:3,::2"), values[1:3, ::2])
    block = await http.get(f"/array/block/{url(path)}", params={"block": "1,0"})
    np.testing.assert_array_equal(decoded(block), values[4:6, 0:4])
    assert (await get(http, path))["structure"] == (await get(http, node["path"]))["structure"]


async def test_a_server_object_reads_by_ticket(
    database: Sessions, users: Users, server: Server
) -> None:
    name, http = await users.new()
    node = await table_node(http, name)
    async with unit(database) as db:
        object_id = await registry.new_object(
            db, type="table", family="table", structure=node["structure"], sources=(node["id"],)
        )
        counter = await registry.new_object(db, type="Counter", family=None, state={"value": 0})
    await copy_data(server, "tables", node["id"], object_id)
    exports = await Exports.open(database, name)
    path = await exports.add(Target(type="table", object_id=object_id, sources=(node["id"],)))
    found = await get(http, path)
    assert (found["id"], found["structure_family"], found["namespace"]) == (
        object_id,
        "table",
        name,
    )
    assert found["structure"] == node["structure"]
    assert found["metadata"] == {}
    whole = await http.get(f"/table/full/{url(path)}")
    assert whole.status_code == 200, whole.text
    assert _tables.parse(whole.content).num_rows == 8

    plugin = await exports.add(Target(type="Counter", object_id=counter))
    found = await get(http, plugin)
    assert (found["id"], found["structure_family"], found["namespace"]) == (
        counter,
        "Counter",
        name,
    )
    assert_error(await http.get(f"/table/full/{url(plugin)}"), 400, "invalid_request")


async def test_only_the_owner_reads_and_only_while_it_lives(
    database: Sessions, users: Users, server: Server
) -> None:
    name, http = await users.new()
    _, other = await users.new()
    node = await create(http, name, unique("n"))
    exports = await Exports.open(database, name)
    path = await exports.node(node)
    kept = await exports.node(node)
    await get(http, path)
    assert_error(await other.get(f"/catalog/nodes/{url(path)}"), 404, "node_not_found")
    async with make_client(server, None) as anonymous:
        response = await anonymous.get(f"/catalog/nodes/{url(path)}")
    assert response.status_code in (401, 404), response.text
    async with make_client(server, server.admin_token) as admin:
        # The admin token may read any node, but a user's session is the user's alone.
        assert_error(await admin.get(f"/catalog/nodes/{url(path)}"), 404, "node_not_found")

    await exports.release(path)
    assert_error(await http.get(f"/catalog/nodes/{url(path)}"), 404, "node_not_found")
    await get(http, kept)
    await exports.close()
    assert_error(await http.get(f"/catalog/nodes/{url(kept)}"), 404, "node_not_found")

    again = await Exports.open(database, name)
    expiring = await again.node(node)
    await get(http, expiring)
    async with unit(database) as db:
        await db.execute(
            update(TicketSession)
            .where(TicketSession.id == again.session.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_error(await http.get(f"/catalog/nodes/{url(expiring)}"), 404, "node_not_found")


async def test_access_follows_the_sources_now(database: Sessions, users: Users) -> None:
    alice, alice_http = await users.new()
    bob, bob_http = await users.new()
    node = await table_node(bob_http, bob)
    shared = await bob_http.put(f"/catalog/shares/{url(node['path'])}", json={"namespace": alice})
    assert shared.status_code == 200, shared.text
    async with unit(database) as db:
        view = await registry.new_object(
            db, type="table", family="table", structure=node["structure"], sources=(node["id"],)
        )
    exports = await Exports.open(database, alice)
    path = await exports.node(node)
    view_path = await exports.add(Target(type="table", object_id=view, sources=(node["id"],)))
    assert (await get(alice_http, path))["namespace"] == bob  # the source's
    assert (await get(alice_http, view_path))["namespace"] == bob
    unshared = await bob_http.delete(
        f"/catalog/shares/{url(node['path'])}", params={"namespace": alice}
    )
    assert unshared.status_code == 200, unshared.text
    for refused in (path, view_path):
        assert_error(await alice_http.get(f"/catalog/nodes/{url(refused)}"), 404, "node_not_found")
        assert_error(await alice_http.get(f"/table/full/{url(refused)}"), 404, "node_not_found")


async def test_exports_are_read_only(database: Sessions, users: Users) -> None:
    name, http = await users.new()
    node = await table_node(http, name)
    exports = await Exports.open(database, name)
    path = await exports.node(node)
    target = url(path)
    body = _tables.stream(_tables.sample(0, 2))
    arrow = {"Content-Type": _tables.ARROW}
    attempts = [
        http.post(f"/table/partition/{target}", content=body, headers=arrow),
        http.put(
            f"/table/partition/{target}", params={"partition": 0}, content=body, headers=arrow
        ),
        http.patch(f"/catalog/nodes/{target}", json={"metadata": {"x": 1}}),
        http.delete(f"/catalog/nodes/{target}"),
        http.post(f"/catalog/children/{target}", json={"key": "child"}),
        http.post(f"/catalog/move/{target}", json={"to": f"{name}/{unique('m')}"}),
        http.put(f"/catalog/shares/{target}", json={"namespace": unique("x")}),
        http.put(f"/catalog/public/{target}", json={"public": True}),
    ]
    for attempt in attempts:
        assert_error(await attempt, 403, "permission_denied")
    after = await get(http, node["path"])
    assert after["revision"] == node["revision"]
    assert after["structure"] == node["structure"]


async def test_malformed_ticket_paths_are_not_found(database: Sessions, users: Users) -> None:
    name, http = await users.new()
    node = await create(http, name, unique("n"))
    exports = await Exports.open(database, name)
    await exports.node(node)
    sid = exports.session.id
    for path in (
        "~session",
        f"~session/{sid}",
        f"~session/{sid}/0",
        f"~session/{sid}/01x",
        f"~session/{sid}/01",
        f"~session/{sid}/-1",
        f"~session/{sid}/2",
        f"~session/{sid}/99999999999",
        f"~session/{sid}/\uff11",  # a fullwidth 1
        f"~session/{sid}/1/more",
        f"~session/{unique('nosuch')}/1",
    ):
        assert_error(await http.get(f"/catalog/nodes/{url(path)}"), 404, "node_not_found")
    await get(http, f"~session/{sid}/1/")  # the one trailing slash any path may have


async def test_the_sweep_keeps_the_data_of_server_objects(
    tmp_path: Path, database: Sessions, users: Users
) -> None:
    name, http = await users.new()
    node = await create(http, name, unique("n"))
    async with unit(database) as db:
        view = await registry.new_object(db, type="table", family="table", structure={})
        result = await registry.new_object(db, type="array", family="array", structure={})
    root = tmp_path / "blobs"
    made = {
        "node": root / "tables" / node["id"],
        "view": root / "tables" / view,
        "result": root / "arrays" / result,
        "orphan": root / "tables" / ("7" * 32),
    }

    def arrange() -> None:
        then = time.time() - SWEEP_GRACE_SECONDS - 60
        for directory in made.values():
            directory.mkdir(parents=True)
            (directory / "part-0.arrows").write_bytes(b"x")
            os.utime(directory, (then, then))

    await anyio.to_thread.run_sync(arrange)
    swept = await DataCleanup(await BlobStore.directory(root), database).sweep()
    assert swept.directories == 1
    exists = {key: await anyio.Path(path).exists() for key, path in made.items()}
    assert exists == {"node": True, "view": True, "result": True, "orphan": False}


async def test_an_exported_container_lists_its_children(database: Sessions, users: Users) -> None:
    alice, alice_http = await users.new()
    bob, bob_http = await users.new()
    box = await create(bob_http, bob, unique("box"))
    child = await create(bob_http, box["path"], "child")
    shared = await bob_http.put(f"/catalog/shares/{url(box['path'])}", json={"namespace": alice})
    assert shared.status_code == 200, shared.text
    exports = await Exports.open(database, alice)
    path = await exports.node(box)
    listed = await alice_http.get(f"/catalog/children/{url(path)}")
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(item["id"], item["path"]) for item in items] == [(child["id"], child["path"])]
    assert items[0]["allowed_actions"] == ["read"]
