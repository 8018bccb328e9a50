"""The array store across processes and over time: writers in two processes sharing the data
directory lose nothing, the sweep removes what no node owns and never a live node's bytes, an
extension writes what lies inside the old shape last."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server
from aiosdk.server.data.cleanup import SWEEP_GRACE_SECONDS, DataCleanup
from aiosdk.server.data.store import BlobStore

from ._arrays import decoded, new_array, put_all, sample
from .conftest import url

pytestmark = pytest.mark.anyio

Home = tuple[str, httpx.AsyncClient]

_OTHER_WRITER = """
import asyncio, json, sys
from pathlib import Path
import numpy as np
from aiosdk.server.data.arrays import ArrayData
from aiosdk.server.data.store import BlobStore
from aiosdk.server.data.structures import ArrayStructure

async def main(root, node_id, structure, positions):
    blobs = await BlobStore.directory(Path(root))
    data = ArrayData(blobs, node_id, ArrayStructure.of(json.loads(structure)))
    print("ready", flush=True)
    sys.stdin.readline()
    for i in json.loads(positions):
        await data.write_region((i,), (1,), np.array([i + 1], "<i8").tobytes())

asyncio.run(main(*sys.argv[1:]))
"""


async def test_region_writes_from_two_processes_lose_nothing(home: Home, server: Server) -> None:
    """Every write is a part of the one (edge) chunk: each reads, changes and writes back the
    whole chunk; the other process's writes go straight to the store, this one's through the
    server, at the same time."""
    name, http = home
    count = 400
    node = await new_array(http, name, "a", "<i8", (count,), (512,))
    target = f"/array/full/{url(node['path'])}"
    other = [i for i in range(count) if i % 2]

    async def ours() -> None:
        for i in range(0, count, 2):
            response = await http.patch(
                target,
                params={"offset": str(i), "shape": "1"},
                content=np.array([i + 1], "<i8").tobytes(),
            )
            assert response.status_code == 204, response.text

    argv = [
        sys.executable,
        "-c",
        _OTHER_WRITER,
        str(server.data_dir / "blobs"),
        node["id"],
        json.dumps(node["structure"]),
        json.dumps(other),
    ]
    async with await anyio.open_process(argv) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        said = b""
        while b"\n" not in said:
            said += await process.stdout.receive()
        assert said == b"ready\n"
        await process.stdin.send(b"go\n")  # (both start writing now)
        await ours()
        assert await process.wait() == 0
    np.testing.assert_array_equal(
        decoded(await http.get(target)), np.arange(1, count + 1, dtype="<i8")
    )


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_the_sweep_removes_orphans_and_never_a_live_nodes_data(
    home: Home, server: Server, database: async_sessionmaker[AsyncSession]
) -> None:
    name, http = home
    live = await new_array(http, name, "live", "<f8", (4,), (2,))
    values = sample("<f8", (4,))
    await put_all(http, live["path"], values, (2,))
    others = [await new_array(http, name, f"live{i}", "<f8", (4,), (2,)) for i in (2, 3)]
    for other in others:
        await put_all(http, other["path"], values, (2,))
    root = server.data_dir / "blobs"
    old = SWEEP_GRACE_SECONDS + 60

    def arrange() -> dict[str, Path]:
        for other in others:  # (so that the orphans are not most of what is old)
            _age(root / "arrays" / other["id"], old)
        made = {
            "live": root / "arrays" / live["id"],
            "orphan": root / "arrays" / ("0" * 32),
            "orphan table": root / "tables" / ("1" * 32),
            "new": root / "arrays" / ("2" * 32),  # a node being created: not yet committed
            "old temporary": root / "arrays" / live["id"] / "c" / ".0.abc.partial",
            "new temporary": root / "arrays" / live["id"] / "c" / ".1.abc.partial",
        }
        for key in ("orphan", "orphan table", "new"):
            (made[key] / "c").mkdir(parents=True)
            (made[key] / "c" / "0").write_bytes(b"x" * 16)
        made["old temporary"].write_bytes(b"half")
        made["new temporary"].write_bytes(b"half")
        for key in ("live", "orphan", "orphan table", "old temporary"):
            _age(made[key], old)
        return made

    made = await anyio.to_thread.run_sync(arrange)
    cleanup = DataCleanup(await BlobStore.directory(root), database)
    swept = await cleanup.sweep()
    assert (swept.directories, swept.temporary_files) == (2, 1)
    exists = {key: await anyio.Path(path).exists() for key, path in made.items()}
    assert exists == {
        "live": True,
        "orphan": False,
        "orphan table": False,
        "new": True,
        "old temporary": False,
        "new temporary": True,
    }
    response = await http.get(f"/array/full/{url(live['path'])}")
    np.testing.assert_array_equal(decoded(response), values)
    # Past its grace period, a node's directory still goes only once its node is gone.
    await anyio.to_thread.run_sync(_age, made["new"], old)
    assert (await cleanup.sweep()).directories == 1
    assert (await cleanup.sweep(grace=0)).directories == 0
    assert await anyio.Path(made["live"]).exists()


async def test_a_sweep_that_would_remove_most_of_the_data_removes_none(
    tmp_path: Path, database: async_sessionmaker[AsyncSession]
) -> None:
    """A store most of whose directories have no node in the database (a server started on
    a new or another database) is not swept: the data is kept for the right database."""
    root = tmp_path / "blobs"
    old = SWEEP_GRACE_SECONDS + 60

    def arrange() -> list[Path]:
        made = [root / "arrays" / (f"{i}" * 32) for i in range(3)]
        for directory in made:
            (directory / "c").mkdir(parents=True)
            (directory / "c" / "0").write_bytes(b"x" * 16)
            _age(directory, old)
        return made

    made = await anyio.to_thread.run_sync(arrange)
    swept = await DataCleanup(await BlobStore.directory(root), database).sweep()
    assert swept.directories == 0
    assert all([await anyio.Path(directory).exists() for directory in made])


async def test_an_extension_writes_inside_and_past_the_old_shape(home: Home) -> None:
    """A region across the old edge on both axes: the part inside, the two parts past it (one
    per axis) all land, and the cells of the new shape the region leaves out read as the fill
    value."""
    name, http = home
    node = await new_array(http, name, "a", "<i4", (5, 4), (2, 3), fill_value=-1)
    path = url(node["path"])
    before = sample("<i4", (5, 4), 1)
    await put_all(http, node["path"], before, (2, 3))
    region = sample("<i4", (4, 5), 2)
    response = await http.patch(
        f"/array/full/{path}",
        params={"offset": "3,2", "shape": "4,5", "extend": "true"},
        content=region.tobytes(),
    )
    assert response.status_code == 204, response.text
    expected: Any = np.full((7, 7), -1, "<i4")
    expected[:5, :4] = before
    expected[3:7, 2:7] = region
    np.testing.assert_array_equal(decoded(await http.get(f"/array/full/{path}")), expected)


async def test_a_write_cancelled_by_asyncio_while_another_process_writes_leaves_no_lock(
    tmp_path: Path,
) -> None:
    """A write waiting for the array's lock, which another process holds, cancelled with
    asyncio's own ``Task.cancel()`` (it goes through anyio's shields): once the other lets go,
    the lock is free (a descriptor got for the cancelled write and dropped would hold it, and
    every later write, from any process, would wait forever)."""
    from aiosdk.server.data.arrays import ArrayData
    from aiosdk.server.data.structures import ArrayStructure, validate_array_structure

    blobs = await BlobStore.directory(tmp_path)
    structure = validate_array_structure({"data_type": "<i8", "shape": [4], "chunks": [2]})
    data = ArrayData(blobs, "n1", ArrayStructure.of(structure))
    lock = tmp_path / "arrays" / "n1" / ".lock"
    await anyio.Path(lock.parent).mkdir(parents=True)

    def hold() -> int:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return descriptor

    other = await anyio.to_thread.run_sync(hold)
    entered = False

    async def write() -> None:
        nonlocal entered
        async with data.writing():
            entered = True

    task = asyncio.ensure_future(write())
    for _ in range(20):  # a few tries of the lock
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not entered
    await anyio.to_thread.run_sync(os.close, other)

    def free() -> bool:
        probe = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(probe)
        return True

    assert await anyio.to_thread.run_sync(free)
    with anyio.fail_after(30):
        async with data.writing():  # and the next write gets its turn
            pass
