"""The array client against the real server: round trips of every dtype and dimensionality
(0-d, zero-length axes, partial edge blocks), selections against numpy's own answer, blocks
streamed in order with bounded prefetch, patches that extend, exports parsed back, concurrent
writers, cancellation, typed errors before any request, progress, and the peak memory of a
256 MiB read (in a subprocess). Also the ordered prefetch on its own (pure logic, no server)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from faults.scripted import Respond, ScriptedServer, fail

import aiosdk
from aiosdk._core.concurrency import Prefetch
from aiosdk.catalog.arrays import AsyncArrayClient, auto_chunks, check_dtype
from aiosdk.catalog.containers import node_from_item
from aiosdk.server import ServerThread
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio

DTYPES = [
    "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16",
    "M8[ns]", "M8[D]", "m8[s]", "S5", "U7",
]  # fmt: skip


async def _group(accounts: AsyncAccounts, hint: str) -> tuple[aiosdk.AsyncClient, Any]:
    user = await accounts.user(hint)
    client = await accounts.client(user)
    _USERS[client] = user
    return client, await client.catalog.create_container(f"{user.username}/{hint}")


_USERS: dict[aiosdk.AsyncClient, Any] = {}  # whose client it is (for a second client)


def _sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        flat = rng.random(n) < 0.5
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    elif dt.kind == "f":
        flat = rng.standard_normal(n).astype(dt)
    elif dt.kind == "c":
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    elif dt.kind in "Mm":
        flat = rng.integers(-(10**9), 10**9, n).astype(dt)
    elif dt.kind == "U":
        flat = np.array([["", "a", "héllo wörld", "xyz"][i % 4] for i in range(n)], dtype=dt)
    else:
        flat = np.array([[b"", b"a\x00b", b"hello world", b"\xff"][i % 4] for i in range(n)], dt)
    return flat.reshape(shape)


def _busy(client: aiosdk.AsyncClient) -> int:
    """Requests the client has in flight, and connections its pool holds as busy."""
    pool = client._ctx.transport._pool
    if pool is None:
        return 0
    fast = getattr(pool.transport, "_pool", None)
    return int(pool.active) + len(getattr(fast, "_active", ()))


# -- round trips -----------------------------------------------------------------------------


async def test_every_dtype_round_trips_with_partial_edge_blocks(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    _, grp = await _group(aiosdk_accounts, "dtypes")
    for i, dtype in enumerate(DTYPES):
        data = _sample(dtype, (7, 5), seed=i)
        arr = await grp.write_array(data, key=f"a{i}", chunks=(3, 2), metadata={"dtype": dtype})
        assert isinstance(arr, AsyncArrayClient)
        assert (arr.shape, arr.chunks, arr.blocks, arr.ndim) == ((7, 5), (3, 2), (3, 3), 2)
        assert arr.dtype == check_dtype(dtype)
        assert arr.nbytes == data.nbytes
        again = await grp.get(f"a{i}")
        assert isinstance(again, AsyncArrayClient)
        back = await again.read()
        assert back.dtype == arr.dtype
        np.testing.assert_array_equal(back, data, err_msg=dtype)
        np.testing.assert_array_equal(await arr.read_block((2, 2)), data[6:, 4:])  # the corner
        np.testing.assert_array_equal(await arr.read(np.s_[::-2, 1]), data[::-2, 1])


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((), ()),
        ((0,), (1,)),
        ((3, 0, 2), (2, 1, 2)),
        ((1,), (1,)),
        ((17,), (4,)),
        ((5, 6, 7), (2, 5, 3)),
        ((2, 1, 3, 1, 2), (1, 1, 2, 1, 2)),
    ],
)
async def test_every_dimensionality_round_trips(
    aiosdk_accounts: AsyncAccounts, shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    _, grp = await _group(aiosdk_accounts, "dims")
    data = _sample("f8", shape)
    arr = await grp.write_array(data, key="a", chunks=chunks)
    assert arr.shape == shape
    assert arr.chunks == chunks
    back = await arr.read()
    assert back.shape == shape
    np.testing.assert_array_equal(back, data)
    blocks = [(index, block) async for index, block in arr.iter_blocks(concurrency=3)]
    assert [index for index, _ in blocks] == list(itertools.product(*map(range, arr.blocks)))
    for index, block in blocks:
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))
        np.testing.assert_array_equal(block, data[region] if region else data)


async def test_awkward_input_is_converted_and_auto_chunks_are_contiguous(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    _, grp = await _group(aiosdk_accounts, "input")
    big_endian = np.arange(60, dtype=">i4").reshape(6, 10)
    arr = await grp.write_array(big_endian, key="be")
    assert arr.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(await arr.read(), big_endian)
    strided = np.arange(400, dtype="f8").reshape(20, 20)[::2, 1::3].T  # neither C nor F
    arr = await grp.write_array(strided, key="strided", chunks=(3, 4), dims=["x", "y"])
    assert arr.dims == ("x", "y")
    np.testing.assert_array_equal(await arr.read(), strided)
    listed = await grp.write_array([[1, 2], [3, 4]], key="list")
    np.testing.assert_array_equal(await listed.read(), [[1, 2], [3, 4]])
    # Blocks of at most 16 MiB, each a contiguous run of the array (whole trailing axes).
    assert auto_chunks((4096, 8192), 8) == (256, 8192)
    assert auto_chunks((2**25,), 8) == (2**21,)
    assert auto_chunks((3, 5000, 1000), 8) == (1, 1667, 1000)
    assert auto_chunks((10, 0, 4), 8) == (10, 1, 4)
    assert auto_chunks((), 8) == ()


# -- selections ------------------------------------------------------------------------------


def _random_index(rng: random.Random, n: int) -> Any:
    roll = rng.random()
    if roll < 0.2:
        return rng.randrange(-n, n)
    bound = n + 3

    def part() -> int | None:
        return None if rng.random() < 0.25 else rng.randrange(-bound, bound)

    step = rng.choice([None, 1, 2, 3, 5, -1, -2, -3, -7, n + 1, -(n + 1)])
    return slice(part(), part(), step)


async def test_selections_match_numpy(aiosdk_accounts: AsyncAccounts) -> None:
    _, grp = await _group(aiosdk_accounts, "slices")
    data = _sample("i8", (19, 13, 4))
    arr = await grp.write_array(data, key="a", chunks=(5, 4, 3))
    rng = random.Random(1234)
    selections: list[Any] = [np.s_[10:20, ::2], np.s_[...], np.s_[..., -1], np.s_[-1, ..., 1:]]
    selections += [np.s_[::-1, ::-1, ::-1], np.s_[3], np.s_[-19], np.s_[2:2], np.s_[5:1]]
    for _ in range(50):
        axes = tuple(_random_index(rng, n) for n in data.shape[: rng.randrange(1, 4)])
        selections.append(axes if len(axes) > 1 or rng.random() < 0.5 else axes[0])
    for selection in selections:
        expected = data[selection]
        got = await arr.read(selection, concurrency=4)
        assert got.shape == expected.shape, selection
        np.testing.assert_array_equal(got, expected, err_msg=str(selection))
    # read_block's slice is relative to the block
    block = data[5:10, 4:8, 3:4]
    within: list[Any] = [
        np.s_[::-2],
        np.s_[1:, -1],
        np.s_[..., 0],
        np.s_[-1, -1, -1],
        np.s_[4:0:-3],
    ]
    for selection in within:
        got = await arr.read_block((1, 1, 1), slice=selection)
        np.testing.assert_array_equal(got, block[selection], err_msg=str(selection))
    # numpy's errors for numpy's mistakes
    with pytest.raises(IndexError, match="out of bounds"):
        await arr.read(np.s_[19])
    with pytest.raises(IndexError, match="too many indices"):
        await arr.read(np.s_[1, 2, 3, 4])
    with pytest.raises(IndexError, match="single ellipsis"):
        await arr.read(np.s_[..., 1, ...])
    with pytest.raises(ValueError, match="step cannot be zero"):
        await arr.read(np.s_[::0])
    for fancy in [np.s_[None, 1], np.s_[[1, 2]], np.s_[True], np.s_[data[:, 0, 0] > 0]]:
        with pytest.raises(aiosdk.ConfigurationError, match="basic indexing"):
            await arr.read(fancy)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_large_blocks_land_in_the_result_as_numpy_has_them(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    # Blocks of 4 MiB: on asyncio the fast transport receives a piece whose place in the result
    # is contiguous straight into it (whole blocks, rows of blocks, reversed rows); a piece
    # that is not (some columns) comes as spans, as every piece does on trio.
    _, grp = await _group(aiosdk_accounts, "into")
    data = _sample("f8", (600, 4096), seed=5)
    arr = await grp.write_array(data, key="a", chunks=(128, 4096))
    for selection in [None, np.s_[100:500], np.s_[::-1], np.s_[:, 1000:3000], np.s_[-1]]:
        expected = data if selection is None else data[selection]
        got = await arr.read(selection, concurrency=3)
        np.testing.assert_array_equal(got, expected, err_msg=str(selection))


# -- streaming blocks ------------------------------------------------------------------------


async def test_iter_blocks_is_ordered_and_breaking_out_leaves_nothing_in_flight(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    client, grp = await _group(aiosdk_accounts, "iter")
    data = _sample("f4", (40, 30))
    arr = await grp.write_array(data, key="a", chunks=(7, 9))
    seen = []
    async for index, block in arr.iter_blocks(concurrency=4):
        seen.append(index)
        i, j = index
        np.testing.assert_array_equal(block, data[i * 7 : i * 7 + 7, j * 9 : j * 9 + 9])
        await anyio.lowlevel.checkpoint()
    assert seen == list(itertools.product(range(6), range(4)))
    async for _ in arr.iter_blocks(concurrency=8):
        break  # the iterator is dropped here: its fetches are cancelled
    with anyio.fail_after(10):
        while _busy(client):  # noqa: ASYNC110 (the transport's counters)
            await anyio.sleep(0.01)
    iterator = arr.iter_blocks(concurrency=8)
    await iterator.__anext__()
    await iterator.aclose()
    assert _busy(client) == 0
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
    np.testing.assert_array_equal(await arr.read(), data)  # the connections still work


async def test_prefetch_is_bounded_ordered_and_cancelled_when_dropped() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    gates = {i: anyio.Event() for i in range(20)}

    async def fetch(i: int) -> int:
        started.append(i)
        try:
            await gates[i].wait()
        except anyio.get_cancelled_exc_class():
            cancelled.append(i)
            raise
        return i * 10

    for i in (2, 1, 0):  # out of order: results still come in order
        gates[i].set()
    prefetch: Prefetch[int, int] = Prefetch(iter(range(20)), fetch, 3)
    assert await prefetch.__anext__() == 0
    await anyio.sleep(0.01)
    assert started == [0, 1, 2, 3]  # three ahead: 1, 2 (done, waiting to be taken) and 3
    assert await prefetch.__anext__() == 10
    assert await prefetch.__anext__() == 20
    await anyio.sleep(0.01)
    assert started == [0, 1, 2, 3, 4, 5]  # 3, 4, 5 in flight: no more, however long we wait
    del prefetch  # dropped (a `break`): everything in flight is cancelled
    await anyio.sleep(0.01)
    assert sorted(cancelled) == [3, 4, 5]

    async def fails(i: int) -> int:
        if i == 2:
            raise KeyError("two")
        if i > 2:
            await anyio.sleep_forever()
        return i

    failing: Prefetch[int, int] = Prefetch(iter(range(9)), fails, 4)
    assert await failing.__anext__() == 0
    assert await failing.__anext__() == 1
    with pytest.raises(KeyError, match="two"):  # in its turn, and not an ExceptionGroup
        await failing.__anext__()
    with pytest.raises(StopAsyncIteration):  # and then it is over
        await failing.__anext__()
    with pytest.raises(aiosdk.ConfigurationError):
        Prefetch(iter(()), fetch, 0)


# -- writes ----------------------------------------------------------------------------------


async def test_patch_extends_and_blocks_are_written_by_concurrent_writers(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    client, grp = await _group(aiosdk_accounts, "writes")
    data = _sample("i4", (10, 6))
    arr = await grp.write_array(data, key="a", chunks=(4, 4))
    more = _sample("i4", (5, 6), seed=1)
    await arr.patch(more, offset=(10, 0), extend=True)
    assert arr.shape == (15, 6)
    np.testing.assert_array_equal(await arr.read(), np.concatenate([data, more]))
    await arr.patch(np.full((2, 2), -1, "i4"), offset=(3, 3))  # across four blocks
    expected = np.concatenate([data, more])
    expected[3:5, 3:5] = -1
    np.testing.assert_array_equal(await arr.read(), expected)
    with pytest.raises(aiosdk.UnprocessableEntityError):
        await arr.patch(more, offset=(14, 0))  # past the end, without extend
    with pytest.raises(aiosdk.ConfigurationError, match="dimension"):
        await arr.patch(more[0], offset=(0,))

    # Two readers of one node write disjoint blocks at the same time, from two clients.
    zeros = await grp.write_array(np.zeros((32, 8), "f8"), key="z", chunks=(2, 8))
    other = await aiosdk_accounts.client(_USERS[client])
    writers = [zeros, await other.catalog.get(zeros.path)]
    assert isinstance(writers[1], AsyncArrayClient)

    async def write(writer: AsyncArrayClient, parity: int) -> None:
        for i in range(parity, 16, 2):
            await writer.write_block(np.full((2, 8), i, "f8"), (i, 0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, writers[0], 0)
        tg.start_soon(write, writers[1], 1)
    expected = np.repeat(np.arange(16.0), 2)[:, None] * np.ones(8)
    np.testing.assert_array_equal(await zeros.read(), expected)


async def test_bad_dtypes_and_shapes_are_refused_before_any_request(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    client, grp = await _group(aiosdk_accounts, "bad")
    for dtype in ["O", "V8", "f16", "M8", "M8[10s]", [("a", "i4")], "(2,)i4"]:
        with pytest.raises(aiosdk.ConfigurationError):
            check_dtype(dtype)
    with pytest.raises(aiosdk.ConfigurationError, match="cannot hold"):
        await grp.write_array(np.array([{}, None]), key="objects")
    with pytest.raises(aiosdk.ConfigurationError, match="chunks"):
        await grp.write_array(np.zeros((4, 4)), key="c", chunks=(2,))
    with pytest.raises(aiosdk.ConfigurationError, match="chunks"):
        await grp.write_array(np.zeros((4, 4)), key="c", chunks=(0, 2))
    with pytest.raises(aiosdk.ConfigurationError, match="blocks of"):
        await grp.write_array(np.zeros((4, 4)), key="c", chunks=(2**15, 2**15))
    with pytest.raises(aiosdk.ConfigurationError, match="dims"):
        await grp.write_array(np.zeros((4, 4)), key="c", dims=["x", "x"])
    with pytest.raises(aiosdk.ConfigurationError, match="concurrency"):
        await grp.write_array(np.zeros(4), key="c", concurrency=0)
    with pytest.raises(aiosdk.ConfigurationError, match="progress"):
        await grp.write_array(np.zeros(4), key="c", progress="yes")
    assert "c" not in [key async for key in grp]  # nothing was created
    arr = await grp.write_array(np.zeros((5, 4), "u2"), key="ok", chunks=(2, 4))
    with pytest.raises(aiosdk.ConfigurationError, match=r"shape \(1, 4\)"):
        await arr.write_block(np.zeros((2, 4), "u2"), (2, 0))  # the edge block is 1 x 4
    with pytest.raises(aiosdk.ConfigurationError, match="no block"):
        await arr.write_block(np.zeros((2, 4), "u2"), (3, 0))
    with pytest.raises(aiosdk.ConfigurationError, match="cannot write"):
        await arr.write_block(np.zeros((2, 4), "f8"), (0, 0))  # floats into uint16
    with pytest.raises(aiosdk.ConfigurationError, match="format"):
        await arr.export(io.BytesIO())
    await arr.write_block(np.ones((1, 4), "u1"), (2, 0))  # a safe cast is fine
    np.testing.assert_array_equal((await arr.read())[4], [1, 1, 1, 1])
    del client


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


async def test_block_puts_go_without_an_idempotency_key_and_patches_with_one(
    scripted: ScriptedServer,
) -> None:
    # A block's PUT sets its bytes (twice is once), so it carries no key the server would have
    # to buffer, fingerprint and store; a PATCH (which may extend the array) keeps its key.
    # Against the scripted server, which records the requests it gets.
    item = {
        "id": "1",
        "key": "a",
        "path": "u/a",
        "structure_family": "array",
        "structure": {"shape": [4, 4], "chunks": [2, 4], "data_type": "<f8"},
    }
    node = Respond(200, {"Content-Type": "application/json"}, json.dumps(item).encode())
    scripted.script(fail(503, retry_after="0"), Respond(204), node)
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        arr = node_from_item(client._ctx, item)
        assert isinstance(arr, AsyncArrayClient)
        await arr.write_block(np.ones((2, 4)), (1, 0))
        await arr.patch(np.ones((1, 4)), offset=(0, 0))
    refused, retried = scripted.seen("PUT")
    (patched,) = scripted.seen("PATCH")
    assert refused.body == retried.body == np.ones((2, 4)).tobytes()  # the 503 was retried
    assert refused.idempotency_key is None
    assert retried.idempotency_key is None
    assert patched.idempotency_key is not None


# -- export, formats, progress ---------------------------------------------------------------


async def test_export_streams_to_files_and_parses_back(
    aiosdk_accounts: AsyncAccounts, tmp_path: Path
) -> None:
    _, grp = await _group(aiosdk_accounts, "export")
    data = _sample("f8", (30, 7))
    arr = await grp.write_array(data, key="a", chunks=(8, 7))
    formats = await arr.formats()
    assert {"application/x-npy", "text/csv", "application/octet-stream"} <= set(formats)
    done: list[int] = []
    await arr.export(tmp_path / "a.npy", progress=lambda n, total: done.append(n))
    assert done
    assert done == sorted(done)
    loaded = await anyio.to_thread.run_sync(np.load, tmp_path / "a.npy")
    np.testing.assert_array_equal(loaded, data)
    await arr.export(str(tmp_path / "part.csv"), slice=np.s_[::-3, 2:5])
    parsed = await anyio.to_thread.run_sync(
        lambda: np.loadtxt(tmp_path / "part.csv", delimiter=",", ndmin=2)
    )
    np.testing.assert_array_equal(parsed, data[::-3, 2:5])
    buffer = io.BytesIO(b"head")
    buffer.seek(0, io.SEEK_END)
    await arr.export(buffer, "application/x-npy")  # written from where the file stands
    assert buffer.getvalue().startswith(b"head\x93NUMPY")
    np.testing.assert_array_equal(np.load(io.BytesIO(buffer.getvalue()[4:])), data)
    with pytest.raises(aiosdk.StatusError):
        await arr.export(tmp_path / "a.unknown-format")
    left = await anyio.to_thread.run_sync(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert left == ["a.npy", "part.csv"]  # no temporary file left behind


@pytest.mark.parametrize("cancels", ["once", "again-and-again"])
async def test_an_export_cancelled_by_asyncio_itself_leaves_no_file(
    aiosdk_accounts: AsyncAccounts, tmp_path: Path, cancels: str
) -> None:
    # Task.cancel() goes through anyio's shields, the one around removing the half-written
    # file too; "again-and-again" cancels on every turn of the loop until the export is done.
    _, grp = await _group(aiosdk_accounts, "export-cancel")
    arr = await grp.write_array(np.ones((512, 1024), "f8"), key="a", chunks=(64, 1024))
    loop = asyncio.get_running_loop()
    started: list[bool] = []
    task: asyncio.Task[Any] | None = None

    def cancel() -> None:
        assert task is not None
        if not task.done():
            task.cancel()
            if cancels == "again-and-again":
                loop.call_soon(cancel)

    def progress(done: int, total: int | None) -> None:
        if done and not started:
            started.append(True)
            loop.call_soon(cancel)

    task = asyncio.ensure_future(arr.export(tmp_path / "a.npy", progress=progress))
    await asyncio.wait([task])
    assert task.cancelled()
    assert started
    left = await anyio.to_thread.run_sync(lambda: list(tmp_path.iterdir()))
    assert left == []  # neither the file nor its temporary part


async def test_progress_counts_every_byte_once(aiosdk_accounts: AsyncAccounts) -> None:
    _, grp = await _group(aiosdk_accounts, "progress")
    data = _sample("c16", (64, 33))
    reports: list[tuple[int, int | None]] = []
    arr = await grp.write_array(
        data, key="a", chunks=(9, 10), progress=lambda d, t: reports.append((d, t))
    )
    assert reports[-1] == (data.nbytes, data.nbytes)
    reports.clear()
    await arr.read(np.s_[1:60:2, ::-1], progress=lambda d, t: reports.append((d, t)))
    expected = data[1:60:2, ::-1].nbytes
    assert reports[-1] == (expected, expected)
    assert all(t == expected for _, t in reports)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    await arr.read(progress=True)  # no terminal here: no bar, no error


# -- cancellation, backends, memory, missing numpy -------------------------------------------


async def test_cancelling_a_big_read_stops_all_its_requests(aiosdk_accounts: AsyncAccounts) -> None:
    client, grp = await _group(aiosdk_accounts, "cancel")
    data = np.ones((2048, 4096), "f8")  # 64 MiB, 64 blocks of 1 MiB
    arr = await grp.write_array(data, key="a", chunks=(32, 4096))
    started = anyio.Event()

    def progress(done: int, total: int | None) -> None:
        started.set()

    async with anyio.create_task_group() as tg:

        async def read() -> None:
            await arr.read(concurrency=8, progress=progress)
            raise AssertionError("the read should have been cancelled")

        tg.start_soon(read)
        await started.wait()
        assert _busy(client) > 0
        tg.cancel_scope.cancel()
    assert _busy(client) == 0
    np.testing.assert_array_equal(await arr.read(np.s_[-1]), data[-1])


class _Stop(Exception):
    """What a progress callback raises to make an upload fail after its first block."""


@pytest.mark.parametrize("how", ["failure", "anyio-cancel"])
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_failed_or_cancelled_write_array_leaves_no_node(
    aiosdk_accounts: AsyncAccounts, how: str
) -> None:
    _, grp = await _group(aiosdk_accounts, "failed-write")
    data = np.ones((64, 1024), "f8")  # 16 blocks of 32 KiB

    with anyio.CancelScope() as scope:

        def progress(done: int, total: int | None) -> None:
            if done:
                if how == "failure":
                    raise _Stop
                scope.cancel()

        if how == "failure":
            with pytest.raises(_Stop):
                await grp.write_array(
                    data, key="a", chunks=(4, 1024), progress=progress, concurrency=2
                )
        else:
            await grp.write_array(data, key="a", chunks=(4, 1024), progress=progress, concurrency=2)
    assert scope.cancelled_caught == (how == "anyio-cancel")
    assert await grp.get("a", None) is None


@pytest.mark.parametrize("cancels", ["once", "again-and-again"])
async def test_write_array_cancelled_by_asyncio_itself_leaves_no_node(
    aiosdk_accounts: AsyncAccounts, cancels: str
) -> None:
    # Task.cancel() goes through anyio's shields: a timeout of asyncio's, an asyncio task group,
    # the blocking facade's Ctrl-C; "again-and-again" cancels the task on every turn of the
    # loop until it is done, the deletion of the half-made node included.
    _, grp = await _group(aiosdk_accounts, "native-cancel")
    data = np.ones((64, 1024), "f8")
    loop = asyncio.get_running_loop()
    task: asyncio.Task[Any] | None = None

    def cancel() -> None:
        assert task is not None
        if not task.done():
            task.cancel()
            if cancels == "again-and-again":
                loop.call_soon(cancel)

    started: list[bool] = []

    def progress(done: int, total: int | None) -> None:
        if done and not started:
            started.append(True)
            loop.call_soon(cancel)

    task = asyncio.ensure_future(
        grp.write_array(data, key="a", chunks=(4, 1024), progress=progress, concurrency=2)
    )
    await asyncio.wait([task])
    assert task.cancelled()
    assert await grp.get("a", None) is None


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_arrays_under_trio(aiosdk_accounts: AsyncAccounts) -> None:
    client, grp = await _group(aiosdk_accounts, "trio")
    data = _sample("i2", (9, 9))
    arr = await grp.write_array(data, key="a", chunks=(2, 5))
    np.testing.assert_array_equal(await arr.read(np.s_[::-1, 3:]), data[::-1, 3:])
    blocks = [index async for index, _ in arr.iter_blocks(concurrency=2)]
    assert len(blocks) == 10
    async for _ in arr.iter_blocks():
        break
    with anyio.fail_after(10):
        while _busy(client):  # noqa: ASYNC110 (the transport's counters)
            await anyio.sleep(0.01)


_PEAK_PROBE = """
import json, resource, sys, tracemalloc
import anyio
import aiosdk

async def main(url, token, path):
    async with aiosdk.AsyncClient(url, token=token) as client:
        arr = await client.catalog.get(path)
        await arr.read(np.s_[0])  # connections open, numpy warmed up
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        x = await arr.read()
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        print(json.dumps({"peak": peak, "nbytes": x.nbytes, "sum": float(x[::512, ::512].sum())}))

import numpy as np
anyio.run(main, *sys.argv[1:])
"""


async def test_peak_memory_of_a_256_mib_read_stays_near_one_copy(
    aiosdk_accounts: AsyncAccounts, server: ServerThread
) -> None:
    """MEMORY: the client's peak (tracemalloc, in a fresh subprocess that reads a 256 MiB
    float64 array once) is at most 1.25 times the array: one result, spans in flight."""
    user = await aiosdk_accounts.user("peak")
    client = await aiosdk_accounts.client(user)
    grp = await client.catalog.create_container(f"{user.username}/peak")
    data = np.random.default_rng(7).random((4096, 8192))
    arr = await grp.write_array(data, key="a")
    token = (await client.tokens.create("peak", expires_in=600)).secret.reveal()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", _PEAK_PROBE, server.http_url, token, arr.path]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["nbytes"] == data.nbytes
    assert result["sum"] == pytest.approx(float(data[::512, ::512].sum()))
    assert result["peak"] <= 1.25 * data.nbytes, result


def test_missing_numpy_is_a_missing_dependency_error() -> None:
    probe = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ImportError("numpy is hidden")
        sys.meta_path.insert(0, Block())
        import aiosdk
        from aiosdk.catalog.arrays import AsyncArrayClient, check_dtype
        assert "numpy" not in sys.modules
        try:
            check_dtype("f8")
        except aiosdk.MissingDependencyError as exc:
            print("missing:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "missing: arrays needs numpy" in done.stdout
    assert "aiosdk[dataframe]" in done.stdout
