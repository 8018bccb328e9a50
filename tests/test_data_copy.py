"""Copying between two real servers (two embedded ones): a tree of containers, arrays, tables,
sparse arrays and a dataset arrives identical, metadata and specs included; running the copy
again writes nothing (no revision moves); a damaged block or partition at the destination is
the only thing written back; a node of another kind in the way is a ConflictError."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import aiosdk

pytestmark = pytest.mark.anyio


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[aiosdk.AsyncClient, aiosdk.AsyncClient]]:
    async with aiosdk.embedded() as first, aiosdk.embedded() as second:
        for admin in (first, second):
            await admin.admin.create_user("alice", password=secrets.token_urlsafe(12))
        yield first, second


async def _seed(client: aiosdk.AsyncClient) -> aiosdk.AsyncContainer:
    root = await client.catalog.create_container(
        "alice/source", metadata={"pi": "alice", "n": 1}, specs=["run"]
    )
    rng = np.random.default_rng(7)
    await root.write_array(
        rng.standard_normal((300, 70)), key="frames", chunks=(64, 32), metadata={"unit": "V"}
    )
    inner = await root.create_container("inner", metadata={"depth": 2}, tags=["nested", "b"])
    await inner.write_array(np.arange(10, dtype="<i4"), key="ints", chunks=(4,))
    frame = pd.DataFrame({"t": np.arange(1000), "v": rng.random(1000), "s": ["x"] * 1000})
    await root.write_dataframe(frame, key="events", partitions=3, metadata={"kind": "log"})
    await root.write_sparse(
        np.array([[0, 2, 4], [1, 3, 0]]), np.array([1.5, -2.0, 3.0]), shape=(5, 4), key="sp"
    )
    await root.write_dataset(
        {"temp": (("time", "x"), rng.random((6, 3))), "time": (("time",), np.arange(6.0))},
        key="ds",
    )
    return root


async def _snapshot(node: aiosdk.AsyncNode) -> dict[str, Any]:
    """Everything a copy must preserve, by path relative to ``node``, with each revision."""
    found: dict[str, Any] = {}

    async def walk(n: aiosdk.AsyncNode, rel: str) -> None:
        entry: dict[str, Any] = {
            "family": n.structure_family,
            "metadata": dict(n.metadata),
            "specs": list(n.specs),
            "tags": sorted(n.tags),
            "revision": n.revision,
        }
        if isinstance(n, aiosdk.AsyncContainer):
            async for key, child in n.items():
                await walk(child, f"{rel}/{key}")
        elif n.structure_family == "array":
            entry["data"] = (await n.read()).tobytes()  # type: ignore[attr-defined]
            entry["revision"] = await _block_etags(n)  # block writes leave the revision as is
            entry["structure"] = {k: n.structure()[k] for k in ("data_type", "shape", "chunks")}  # type: ignore[index]
        elif n.structure_family == "table":
            entry["data"] = await n.read(as_="arrow")  # type: ignore[attr-defined]
        elif n.structure_family == "sparse":
            coo = await n.read()  # type: ignore[attr-defined]
            entry["data"] = (coo.coords.tobytes(), coo.data.tobytes(), coo.shape)
        found[rel] = entry

    await walk(node, "")
    return found


async def _block_etags(array: Any) -> list[str]:
    """The ETag of every block: a block rewritten gets a new one."""
    tags = []
    for index in itertools.product(*(range(n) for n in array.blocks)):
        response = await array._ctx.request(
            "GET",
            f"/array/block/{array.path}",
            params={"block": ",".join(map(str, index))},
            headers={"Accept": "application/octet-stream"},
        )
        tags.append(response.headers["etag"])
    return tags


def _without_revisions(snapshot: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path, entry in snapshot.items():
        entry = dict(entry)
        entry.pop("revision")
        if isinstance(entry.get("data"), pa.Table):
            entry["data"] = entry["data"].to_pylist()
        out[path] = entry
    return out


async def test_a_tree_arrives_identical_and_a_second_run_writes_nothing(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    destination = await second.catalog.get("alice")
    done: list[int] = []

    copied = await aiosdk.copy(
        source, destination, key="copy", concurrency=4, progress=lambda d, _t: done.append(d)
    )

    assert copied.path == "alice/copy"
    want = _without_revisions(await _snapshot(source))
    after_first = await _snapshot(copied)
    assert _without_revisions(after_first) == want
    assert done
    assert done[-1] > 300 * 70 * 8  # the bytes moved were counted

    again = await aiosdk.copy(source, destination, key="copy")
    assert await _snapshot(again) == after_first  # same content, and not one revision moved


async def test_a_rerun_writes_back_only_what_differs(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    destination = await second.catalog.get("alice")
    copied = await aiosdk.copy(source, destination, key="copy")
    frames = await second.catalog.get("alice/copy/frames")
    events = await second.catalog.get("alice/copy/events")
    await frames.write_block(np.zeros((64, 32)), (1, 1))  # type: ignore[attr-defined]
    damage = pa.table({"t": [1], "v": [0.5], "s": ["y"]}).cast(events.schema)  # type: ignore[attr-defined]
    await events.write_partition(damage, 2)  # type: ignore[attr-defined]
    await copied.update_metadata({"n": 99})
    before = await _snapshot(copied)

    repaired = await aiosdk.copy(source, destination, key="copy")

    after = await _snapshot(repaired)
    assert _without_revisions(after) == _without_revisions(await _snapshot(source))
    changed = {path for path in after if after[path]["revision"] != before[path]["revision"]}
    assert changed == {"", "/frames", "/events"}  # the metadata, one block, one partition
    assert after["/events"]["revision"] == before["/events"]["revision"] + 1
    assert after[""]["revision"] == before[""]["revision"] + 1
    rewritten = [
        i
        for i, (old, new) in enumerate(
            zip(before["/frames"]["revision"], after["/frames"]["revision"], strict=True)
        )
        if old != new
    ]
    assert rewritten == [1 * 3 + 1]  # block (1, 1) of a 5 x 3 grid, and no other


async def test_a_node_of_another_kind_in_the_way_is_a_conflict(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    destination = await second.catalog.create_container("alice/copy")
    await destination.create_container("frames")  # where the array would go
    with pytest.raises(aiosdk.ConflictError, match="frames"):
        await aiosdk.copy(source, await second.catalog.get("alice"), key="copy")
    still = await second.catalog.get("alice/copy/frames")
    assert still.structure_family == "container"  # not overwritten


async def test_bad_arguments_are_configuration_errors(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    frames = await source.get("frames")
    with pytest.raises(aiosdk.ConfigurationError, match="container"):
        await aiosdk.copy(source, frames)  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError, match="concurrency"):
        await aiosdk.copy(source, await second.catalog.get("alice"), concurrency=0)


async def test_a_copy_into_itself_is_refused_before_anything_is_written(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    inner = await source.get("inner")
    before = [key async for key in source]
    for into in (inner, source):
        with pytest.raises(aiosdk.ConfigurationError, match="inside it"):
            await aiosdk.copy(source, into, key="again")
    assert [key async for key in source] == before
    assert "again" not in [key async for key in inner]
    # The same paths on another server are another tree: copied.
    await _seed(second)
    copied = await aiosdk.copy(source, await second.catalog.get(inner.path), key="again")
    assert copied.path == f"{inner.path}/again"


async def test_a_rerun_brings_tags_in_line(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    destination = await second.catalog.get("alice")
    await aiosdk.copy(source, destination, key="copy")
    inner = await second.catalog.get("alice/copy/inner")
    assert sorted(inner.tags) == ["b", "nested"]
    await inner._ctx.request("PATCH", f"/catalog/nodes/{inner.path}", json={"tags": ["stale"]})
    before = (await inner.refresh()).revision

    repaired = await aiosdk.copy(source, destination, key="copy")

    assert _without_revisions(await _snapshot(repaired)) == _without_revisions(
        await _snapshot(source)
    )
    after = await second.catalog.get("alice/copy/inner")
    assert sorted(after.tags) == ["b", "nested"]
    assert after.revision == before + 1  # one change, not one per field


async def test_a_table_with_extra_partitions_at_the_destination_is_made_identical(
    two_servers: tuple[aiosdk.AsyncClient, aiosdk.AsyncClient],
) -> None:
    first, second = two_servers
    source = await _seed(first)
    destination = await second.catalog.get("alice")
    await aiosdk.copy(source, destination, key="copy")
    events = await second.catalog.get("alice/copy/events")
    extra = pa.table({"t": [5], "v": [0.25], "s": ["z"]}).cast(events.schema)  # type: ignore[attr-defined]
    assert await events.append_partition(extra) == 3  # type: ignore[attr-defined]

    repaired = await aiosdk.copy(source, destination, key="copy")

    assert _without_revisions(await _snapshot(repaired)) == _without_revisions(
        await _snapshot(source)
    )
    events = await second.catalog.get("alice/copy/events")
    assert events.npartitions == 3  # type: ignore[attr-defined]
    assert events.metadata == {"kind": "log"}
