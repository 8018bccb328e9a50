"""``/api/v1/table``: table partitions as Arrow IPC streams, over loopback against the real
server, on SQLite and PostgreSQL: every Arrow type the issue names, column selection, appends
(once per Idempotency-Key), writes of an existing or the next partition, bad input, access."""

from __future__ import annotations

import base64
import tracemalloc

import anyio
import httpx
import pyarrow  # type: ignore[import-untyped]
import pyarrow.ipc  # type: ignore[import-untyped]
import pytest

from aiosdk.server import Server
from aiosdk.server.data import tables

from ._tables import (
    ARROW,
    SCHEMA,
    append,
    append_all,
    encoded_schema,
    new_table,
    parse,
    sample,
    stream,
)
from .conftest import Users, assert_error, create, get, unique, url

pytestmark = pytest.mark.anyio


async def test_append_read_partitions_and_the_whole(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    node = await new_table(http, name, "events")
    assert node["structure"]["npartitions"] == 0
    assert node["structure"]["columns"] == SCHEMA.names
    path = f"{name}/events"
    parts = [sample(0, 5), sample(5, 3), sample(8, 0), sample(8, 4)]
    await append_all(http, path, parts)
    after = await get(http, path)
    assert after["structure"]["npartitions"] == 4
    assert after["structure"]["nrows"] == [5, 3, 0, 4]
    assert after["revision"] == node["revision"] + 4

    async def check(index: int) -> None:
        response = await http.get(f"/table/partition/{url(path)}", params={"partition": index})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == ARROW
        assert parse(response.content).equals(parts[index])

    async with anyio.create_task_group() as group:
        for index in range(len(parts)):
            group.start_soon(check, index)
    whole = await http.get(f"/table/full/{url(path)}")
    assert whole.status_code == 200, whole.text
    assert int(whole.headers["content-length"]) == len(whole.content)
    table = parse(whole.content)
    assert table.schema.equals(SCHEMA)
    assert table.combine_chunks().equals(pyarrow.concat_tables(parts).combine_chunks())
    # The categorical column's dictionaries differ between partitions: each replaces the last.
    assert table.column("cat").to_pylist() == pyarrow.concat_tables(parts).column("cat").to_pylist()
    head = await http.head(f"/table/full/{url(path)}")
    assert head.status_code == 200
    assert head.headers["content-length"] == whole.headers["content-length"]


async def test_column_selection(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    parts = [sample(0, 4), sample(4, 4)]
    await append_all(http, path, parts)
    columns = ["s", "i", "cat"]
    whole = await http.get(f"/table/full/{url(path)}", params={"column": columns})
    assert whole.status_code == 200, whole.text
    expected = pyarrow.concat_tables(parts).select(columns)
    assert parse(whole.content).to_pylist() == expected.to_pylist()
    assert parse(whole.content).schema.names == columns
    one = await http.get(
        f"/table/partition/{url(path)}", params={"partition": 1, "column": ["t_tokyo"]}
    )
    assert parse(one.content).equals(parts[1].select(["t_tokyo"]))
    missing = await http.get(f"/table/full/{url(path)}", params={"column": ["nope"]})
    assert "nope" in assert_error(missing, 400, "invalid_request")["message"]


async def test_an_append_with_one_idempotency_key_is_one_partition(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    first = await append(http, path, sample(0, 3), **{"Idempotency-Key": "append-1"})
    again = await append(http, path, sample(0, 3), **{"Idempotency-Key": "append-1"})
    assert first.json() == again.json() == {"partition": 0}
    assert again.headers["idempotent-replayed"] == "true"
    other = await append(http, path, sample(3, 2), **{"Idempotency-Key": "append-2"})
    assert other.json() == {"partition": 1}
    assert (await get(http, path))["structure"]["nrows"] == [3, 2]


async def test_put_replaces_a_partition_or_writes_the_next(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    path = f"{name}/t"
    node = await new_table(http, name, "t", npartitions=2)
    assert node["structure"]["nrows"] == [0, 0]
    declared = await http.get(f"/table/partition/{url(path)}", params={"partition": 1})
    assert parse(declared.content).num_rows == 0  # declared, not written yet
    target = f"/table/partition/{url(path)}"
    for index, part in [(1, sample(10, 2)), (0, sample(0, 3)), (2, sample(20, 1))]:
        response = await http.put(
            target,
            params={"partition": index},
            content=stream(part),
            headers={"Content-Type": ARROW},
        )
        assert response.status_code == 204, response.text
    replaced = await http.put(target, params={"partition": 0}, content=stream(sample(5, 4)))
    assert replaced.status_code == 204
    assert (await get(http, path))["structure"]["nrows"] == [4, 2, 1]
    whole = parse((await http.get(f"/table/full/{url(path)}")).content)
    expected = pyarrow.concat_tables([sample(5, 4), sample(10, 2), sample(20, 1)])
    assert whole.to_pylist() == expected.to_pylist()
    beyond = await http.put(target, params={"partition": 5}, content=stream(sample()))
    assert "partition 5" in assert_error(beyond, 400, "invalid_request")["message"]
    negative = await http.put(target, params={"partition": -1}, content=stream(sample()))
    assert_error(negative, 400, "invalid_request")


async def test_pandas_metadata_and_field_metadata_do_not_count(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    """A partition whose schema differs from the table's only in metadata is accepted, and
    stored with the table's schema (every partition begins with the same bytes)."""
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    part = sample(0, 2).replace_schema_metadata({b"pandas": b'{"index_columns": []}'})
    assert (await append(http, path, part)).status_code == 200
    back = parse((await http.get(f"/table/partition/{url(path)}", params={"partition": 0})).content)
    assert back.schema.equals(SCHEMA, check_metadata=True)


async def test_bad_input_is_refused_with_typed_errors(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    target = f"/table/partition/{url(path)}"
    wrong = sample().drop_columns(["s"])
    message = assert_error(await append(http, path, wrong), 422, "invalid_request")["message"]
    assert "schema" in message
    retyped = sample().set_column(0, "i", pyarrow.array([1, 2, 3, 4, 5], pyarrow.int32()))
    message = assert_error(await append(http, path, retyped), 422, "invalid_request")["message"]
    assert "'i'" in message
    for garbage in [
        b"",
        b"not arrow at all",
        stream(sample())[:100],
        b"\xff\xff\xff\xff" + b"\x7f" * 64,
    ]:
        response = await http.post(target, content=garbage)
        assert_error(response, 422, "invalid_request")
    assert (await get(http, path))["structure"]["npartitions"] == 0
    read_beyond = await http.get(target, params={"partition": 0})
    assert_error(read_beyond, 400, "invalid_request")
    not_int = await http.get(target, params={"partition": "x"})
    assert not_int.status_code == 422
    await create(http, name, "folder")
    for not_table in [
        await http.get(f"/table/full/{url(name)}/folder"),
        await http.get(f"/table/partition/{url(name)}/folder", params={"partition": 0}),
        await append(http, f"{name}/folder", sample()),
    ]:
        message = assert_error(not_table, 400, "invalid_request")["message"]
        assert "not a table" in message


async def test_a_table_needs_a_valid_schema(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    for structure in [
        None,
        {},
        {"arrow_schema": "!!!"},
        {"arrow_schema": base64.b64encode(b"garbage").decode()},
        {"arrow_schema": encoded_schema(SCHEMA), "columns": ["x"]},
        {"arrow_schema": encoded_schema(SCHEMA), "npartitions": -1},
        {"arrow_schema": encoded_schema(SCHEMA), "npartitions": 1, "nrows": [1, 2]},
        {"arrow_schema": encoded_schema(SCHEMA), "extra": 1},
        {"arrow_schema": encoded_schema(pyarrow.schema([("a", "int8"), ("a", "int8")]))},
    ]:
        response = await http.post(
            f"/catalog/children/{name}",
            json={"key": "t", "structure_family": "table", "structure": structure},
        )
        assert_error(response, 422, "invalid_request")


async def test_oversized_bodies_are_413(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    """A body declared past ``limits.max_data_body_bytes`` is refused before it is sent (over a
    raw socket: an HTTP client will not declare more than it sends)."""
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    limit = server.config.limits.max_data_body_bytes
    head = (
        f"POST /api/v1/table/partition/{url(path)} HTTP/1.1\r\n"
        f"Host: {http.base_url.host}\r\nAuthorization: {http.headers['authorization']}\r\n"
        f"Content-Type: {ARROW}\r\nContent-Length: {limit + 1}\r\n\r\n"
    )
    async with await anyio.connect_tcp(http.base_url.host, http.base_url.port or 80) as sock:
        await sock.send(head.encode())
        answer = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await sock.receive()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


async def test_a_table_has_at_most_max_partitions(home: tuple[str, httpx.AsyncClient]) -> None:
    """Neither an append nor a write of the next partition passes the limit."""
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t", npartitions=tables.MAX_PARTITIONS)
    for response in [
        await http.put(
            f"/table/partition/{url(path)}",
            params={"partition": tables.MAX_PARTITIONS},
            content=stream(sample()),
        ),
        await append(http, path, sample()),
    ]:
        assert "at most" in assert_error(response, 400, "invalid_request")["message"]
    assert (await get(http, path))["structure"]["npartitions"] == tables.MAX_PARTITIONS


async def test_rows_header_counts_what_is_answered(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    await append_all(http, path, [sample(0, 4), sample(4, 3)])
    for partition, rows in [(0, "4"), (1, "3")]:
        response = await http.get(f"/table/partition/{url(path)}", params={"partition": partition})
        assert response.headers["x-aiosdk-rows"] == rows
    assert (await http.get(f"/table/full/{url(path)}")).headers["x-aiosdk-rows"] == "7"


async def test_compressed_bodies_are_refused(home: tuple[str, httpx.AsyncClient]) -> None:
    """Before any batch is decoded (one could expand far past its size)."""
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    for codec in ["lz4", "zstd"]:
        sink = pyarrow.BufferOutputStream()
        options = pyarrow.ipc.IpcWriteOptions(compression=codec)
        with pyarrow.ipc.new_stream(sink, SCHEMA, options=options) as writer:
            writer.write_table(sample())
        response = await http.post(f"/table/partition/{url(path)}", content=bytes(sink.getvalue()))
        assert "Compressed" in assert_error(response, 422, "invalid_request")["message"]
    assert (await get(http, path))["structure"]["npartitions"] == 0


async def test_a_declared_length_commits_no_memory_before_authorization(
    owner: tuple[str, httpx.AsyncClient], users: Users, server: Server
) -> None:
    """A keyed PUT declaring the largest body allowed, from a user who may not read the node,
    commits no memory for what it has not sent (the idempotency layer reads the body before
    any permission check), and once sent whole is answered 404."""
    alice, a = owner
    _bob, b = await users.new()
    key = unique("t")
    path = f"{alice}/{key}"
    await new_table(a, alice, key)
    limit = server.config.limits.max_data_body_bytes

    def head(length: int) -> bytes:
        return (
            f"PUT /api/v1/table/partition/{url(path)}?partition=0 HTTP/1.1\r\n"
            f"Host: {b.base_url.host}\r\nAuthorization: {b.headers['authorization']}\r\n"
            f"Idempotency-Key: {unique('k')}\r\nContent-Type: {ARROW}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    port = b.base_url.port or 80
    tracemalloc.start()
    try:
        async with await anyio.connect_tcp(b.base_url.host, port) as sock:
            await sock.send(head(limit) + b"x" * 65536)
            await anyio.sleep(0.5)  # the server has the head and the first bytes
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"{peak:,} bytes allocated for a body of 64 KiB so far"
    small = 1024 * 1024
    async with await anyio.connect_tcp(b.base_url.host, port) as sock:
        await sock.send(head(small) + b"x" * small)
        answer = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await sock.receive()
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]


async def test_access_is_that_of_the_node(
    owner: tuple[str, httpx.AsyncClient], users: Users
) -> None:
    alice, a = owner
    _bob, b = await users.new()
    key = unique("t")
    path = f"{alice}/{key}"
    await new_table(a, alice, key)
    assert (await append(a, path, sample())).status_code == 200
    for response in [
        await b.get(f"/table/full/{url(path)}"),
        await b.get(f"/table/partition/{url(path)}", params={"partition": 0}),
        await append(b, path, sample()),
        await b.put(
            f"/table/partition/{url(path)}", params={"partition": 0}, content=stream(sample())
        ),
    ]:
        assert_error(response, 404, "node_not_found")
    reader = await users.client(alice, scope="read")
    assert (await reader.get(f"/table/full/{url(path)}")).status_code == 200
    assert_error(await append(reader, path, sample()), 403, "permission_denied")
    anonymous = httpx.AsyncClient(base_url=str(a.base_url))
    async with anonymous:
        response = await anonymous.get(f"/table/full/{url(path)}")
        assert response.status_code == 401


async def test_the_openapi_document_lists_every_status(
    client: httpx.AsyncClient, database_url: str | None
) -> None:
    if database_url is not None:
        pytest.skip("the document is the same whatever the database: checked on SQLite")
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    partition = paths["/api/v1/table/partition/{path}"]
    full = paths["/api/v1/table/full/{path}"]
    for read in (partition["get"], full["get"]):
        assert {"200", "400", "404", "406", "422"} <= set(read["responses"])
        assert "409" not in read["responses"]  # a read conflicts with nothing
    for method in ("put", "post"):
        assert {"400", "403", "404", "409", "413", "422"} <= set(partition[method]["responses"])
    sparse = paths["/api/v1/sparse/full/{path}"]
    assert {"200", "400", "404", "406", "422"} <= set(sparse["get"]["responses"])
    assert "409" not in sparse["get"]["responses"]
    assert {"400", "403", "404", "409", "413", "422"} <= set(sparse["put"]["responses"])
