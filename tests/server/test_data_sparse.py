"""``/api/v1/sparse``: a COO sparse array's entries as one Arrow IPC stream, over loopback on
SQLite and PostgreSQL; bad structures and bodies are typed 4xx; access is the node's."""

from __future__ import annotations

from typing import Any

import httpx
import numpy
import pyarrow  # type: ignore[import-untyped]
import pyarrow.ipc  # type: ignore[import-untyped]
import pytest

from ._tables import ARROW, parse, stream
from .conftest import Users, assert_error, create, get, url

pytestmark = pytest.mark.anyio


def coo(rows: list[int], cols: list[int], data: list[float]) -> Any:
    return pyarrow.table(
        {
            "coord_0": pyarrow.array(rows, pyarrow.int64()),
            "coord_1": pyarrow.array(cols, pyarrow.int64()),
            "data": pyarrow.array(data, pyarrow.float64()),
        }
    )


def compressed(table: Any, codec: str) -> bytes:
    """``table`` as an IPC stream of compressed batches (which no client sends)."""
    sink = pyarrow.BufferOutputStream()
    options = pyarrow.ipc.IpcWriteOptions(compression=codec)
    with pyarrow.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


async def test_every_data_type_allowed_is_taken(home: tuple[str, httpx.AsyncClient]) -> None:
    """Each data type, as numpy's ``dtype.str`` or without its byte order."""
    name, http = home
    for index, data_type in enumerate(
        ["|b1", "b1", "|i1", "u1", "<i2", "<u2", "i4", "<u4", "<i8", "u8", "<f2", "f4", "<f8"]
    ):
        node = await create(
            http,
            name,
            f"s{index}",
            structure_family="sparse",
            structure={"shape": [3], "data_type": data_type},
        )
        assert node["structure"]["data_type"] == numpy.dtype(data_type).str


async def test_write_and_read_back(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    node = await create(
        http,
        name,
        "m",
        structure_family="sparse",
        structure={"shape": [4, 5], "data_type": "<f8"},
    )
    assert node["structure"] == {
        "layout": "COO",
        "shape": [4, 5],
        "data_type": "<f8",
        "nnz": 0,
        "dims": None,
    }
    target = f"/sparse/full/{url(name)}/m"
    empty = await http.get(target)
    assert parse(empty.content).num_rows == 0
    entries = coo([0, 3, 1], [4, 0, 2], [1.5, -2.0, 3.25])
    response = await http.put(target, content=stream(entries), headers={"Content-Type": ARROW})
    assert response.status_code == 204, response.text
    assert (await get(http, f"{name}/m"))["structure"]["nnz"] == 3
    back = await http.get(target)
    assert back.headers["content-type"] == ARROW
    assert parse(back.content).to_pylist() == entries.to_pylist()


async def test_bad_structures_and_bodies(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    for structure in [
        None,
        {"shape": [4], "data_type": "<c16"},
        {"shape": [], "data_type": "<f8"},
        {"shape": [-1], "data_type": "<f8"},
        {"shape": [3], "data_type": "<f8", "layout": "CSR"},
        {"shape": [3], "data_type": "<f8", "dims": ["a", "b"]},
        *({"shape": [3], "data_type": bad} for bad in ["i3", "u16", "f3", "b2", "<f16", "|b8"]),
    ]:
        response = await http.post(
            f"/catalog/children/{name}",
            json={"key": "s", "structure_family": "sparse", "structure": structure},
        )
        assert_error(response, 422, "invalid_request")
    await create(
        http, name, "m", structure_family="sparse", structure={"shape": [4, 5], "data_type": "<f8"}
    )
    target = f"/sparse/full/{url(name)}/m"
    for body in [
        b"garbage",
        stream(coo([4], [0], [1.0])),  # outside the shape
        stream(coo([-1], [0], [1.0])),
        stream(coo([0], [0], [1.0]).drop_columns(["coord_1"])),
        stream(
            pyarrow.table(
                {"coord_0": [0], "coord_1": [0], "data": pyarrow.array([1], pyarrow.int32())}
            )
        ),
        stream(
            pyarrow.table(
                {"coord_0": [0], "coord_1": [0], "data": pyarrow.array([None], pyarrow.float64())}
            )
        ),
        compressed(coo([0], [0], [1.0]), "lz4"),
        compressed(coo([0], [0], [1.0]), "zstd"),
    ]:
        assert_error(await http.put(target, content=body), 422, "invalid_request")
    assert (await get(http, f"{name}/m"))["structure"]["nnz"] == 0


async def test_access_is_that_of_the_node(
    owner: tuple[str, httpx.AsyncClient], home: tuple[str, httpx.AsyncClient], users: Users
) -> None:
    user = owner[0]
    alice, a = home
    _bob, b = await users.new()
    await create(
        a, alice, "m", structure_family="sparse", structure={"shape": [2], "data_type": "<i8"}
    )
    target = f"/sparse/full/{url(alice)}/m"
    assert_error(await b.get(target), 404, "node_not_found")
    assert_error(await b.put(target, content=b""), 404, "node_not_found")
    reader = await users.client(user, scope="read")
    assert (await reader.get(target)).status_code == 200
    assert_error(await reader.put(target, content=b""), 403, "permission_denied")
    await create(a, alice, "folder")
    for not_sparse in [
        await a.get(f"/sparse/full/{url(alice)}/folder"),
        await a.put(f"/sparse/full/{url(alice)}/folder", content=b""),
    ]:
        message = assert_error(not_sparse, 400, "invalid_request")["message"]
        assert "not a sparse array" in message
