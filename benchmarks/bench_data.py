"""Structured data side by side in one run: aiosdk vs raw aiohttp, Tiled and Arrow Flight.

Usage: python benchmarks/bench_data.py [--quick] [--no-tiled] [--runs N]

The content (written once to a temporary directory, the same bytes for every side): a float64
array of 4096 x 8192 (256 MiB; chunks of 256 x 8192, 16 MiB, 16 blocks) and a table of
1,000,000 rows x 10 float64 columns (80 MB) in 16 partitions of equal rows; random numbers, so
nothing compresses. ``--quick``: 512 x 8192 (32 MiB, chunks of 4 MiB) and 100,000 rows, 2 runs.
Each server runs as its own process pinned to one core, the client on the other, one server at
a time (Tiled, then Flight, then aiosdk); seeding goes through each side's API and is not timed.
Figures are medians of N runs (min..max), with the client's minor page faults (``ru_minflt``)
and CPU time per run beside them. Measured (issue 10):

(a) the array read into numpy: ``await arr.read()`` vs raw aiohttp ``GET /api/v1/array/full/
    {path}`` (one stream of raw bytes, ``await resp.read()``, ``numpy.frombuffer``), taking
    turns within each run: goal aiosdk >= 1.0x raw aiohttp's throughput; for information also
    raw aiohttp fetching the blocks (``GET /api/v1/array/block``, 8 at a time) into one
    preallocated array, the requests aiosdk makes;
(b) the same array with Tiled's default client (``from_uri(...)["array"].read()``; and with
    ``Accept-Encoding: identity``, for information): goal aiosdk >= 20x;
(c) the table: ``await tbl.read(as_="arrow")`` (one ``GET /api/v1/table/full``, the
    partitions' record batches joined, received into one buffer) vs Arrow Flight
    (benchmarks/_flight_side.py, the table in memory, ``do_get(ticket).read_all()`` in as many
    batches as aiosdk has partitions;
    one batch for information): goal >= 0.8x; ``await tbl.read()`` (pandas) vs Tiled's
    ``read()`` (pandas), both seeded twice, with the same 16 partitions and with one (what
    Tiled's ``write_table`` of a DataFrame does), each layout against its like: goal >= 20x
    (our 16 partitions against Tiled's one for information: a DataFrame of 16 partitions is
    one copy of the columns, one partition's numeric columns are views of the received
    buffer); raw aiohttp
    ``GET /api/v1/table/full/{path}`` into a pyarrow Table for information;
(d) the client's peak RSS during (a): a fresh subprocess per measurement (this script with
    ``--probe``) reads the array once and reports its peak RSS during the read (``VmHWM``, reset
    just before the read; ``ru_maxrss``, shown too, carries this process's RSS over the exec),
    its RSS before the read and the read's page faults (``ru_minflt``); goal: what the read
    adds <= 1.25x the array's size (the total, interpreter and libraries included, is shown
    beside it); raw aiohttp for comparison;
(e) writes: ``await grp.write_array(...)`` vs raw aiohttp creating the node and ``PUT``-ting
    its blocks, 8 at a time (and, for information, ``PATCH``-ing the whole array in one body);
    ``await grp.write_dataframe(...)`` vs raw aiohttp creating the node and ``PUT``-ting the
    partitions' Arrow IPC streams (serialized beforehand) all at once. Each run writes a new
    node, deleted afterwards (untimed). The issue sets no goal here.

Tiled runs from its own virtualenv, never imported here (``AIOSDK_BENCH_TILED_PYTHON``, default
/work/tiled-venv/bin/python; see bench_catalog.py, whose helpers this script uses): its server is
``python -m tiled serve catalog --init``, its client benchmarks/_tiled_data_side.py. Progress goes
to stderr, the table to stdout. The table states the malloc settings the client ran with.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import platform
import resource
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

import aiosdk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _flight_side import batch_layout
from _harness import (
    Pinning,
    ServerProcess,
    Summary,
    default_server_command,
    machine_line,
    plan_pinning,
)
from bench_catalog import Skip, TiledServer, progress, run_json, tiled_python

HERE = Path(__file__).resolve().parent
NAMESPACE = "bench"
CONTAINER = "data"
SEED = 20240610
MiB = 1024 * 1024
MB = 1_000_000
RSS_GOAL = 1.25
BLOCK_CONCURRENCY = 8  # raw aiohttp's block uploads in flight, as aiosdk's default


@dataclass(frozen=True)
class Plan:
    shape: tuple[int, int]
    chunks: tuple[int, int]
    rows: int
    columns: int
    partitions: int
    runs: int

    @property
    def array_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 8

    @property
    def table_bytes(self) -> int:
        return self.rows * self.columns * 8

    def describe(self) -> str:
        chunk = self.chunks[0] * self.chunks[1] * 8 / MiB
        return (
            f"array float64 {self.shape[0]}x{self.shape[1]} ({self.array_bytes / MiB:.0f} MiB),"
            f" chunks {self.chunks[0]}x{self.chunks[1]} ({chunk:g}"
            f" MiB, {-(-self.shape[0] // self.chunks[0])} blocks); table {self.rows:,} rows x "
            f"{self.columns} float64 ({self.table_bytes / MB:.0f} MB) in {self.partitions}"
            " partitions"
        )


FULL = Plan(shape=(4096, 8192), chunks=(256, 8192), rows=1_000_000, columns=10, partitions=16,
            runs=5)  # fmt: skip
QUICK = Plan(shape=(512, 8192), chunks=(64, 8192), rows=100_000, columns=10, partitions=16, runs=2)


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Measure:
    """Per-run seconds, minor page faults and client CPU seconds of one operation."""

    nbytes: int
    seconds: list[float] = field(default_factory=list)
    minflt: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def rate(self, unit: int) -> Summary:
        return Summary([self.nbytes / unit / s for s in self.seconds])


@dataclass
class Results:
    figures: dict[str, Measure] = field(default_factory=dict)
    rss: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def measure(self, key: str, nbytes: int) -> Measure:
        return self.figures.setdefault(key, Measure(nbytes))


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


async def timed_async(measure: Measure, call: Callable[[], Awaitable[object]]) -> None:
    gc.collect()
    faults, cpu, started = minflt(), time.process_time(), time.perf_counter()
    result = await call()
    measure.seconds.append(time.perf_counter() - started)
    measure.cpu.append(time.process_time() - cpu)
    measure.minflt.append(minflt() - faults)
    del result
    gc.collect()


def timed_sync(measure: Measure, call: Callable[[], object]) -> None:
    gc.collect()
    faults, cpu, started = minflt(), time.process_time(), time.perf_counter()
    result = call()
    measure.seconds.append(time.perf_counter() - started)
    measure.cpu.append(time.process_time() - cpu)
    measure.minflt.append(minflt() - faults)
    del result
    gc.collect()


def malloc_line() -> str:
    tunables = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = "?"
    try:
        from numpy._core.multiarray import _get_madvise_hugepage

        hugepage = "on" if _get_madvise_hugepage() else "off"
    except ImportError:
        hugepage = "?"
    settings = ", ".join(f"{k}={v}" for k, v in sorted(tunables.items())) or "none (defaults)"
    return (
        f"malloc: {libc or platform.libc_ver()}, MALLOC_*/GLIBC_TUNABLES: {settings}; "
        f"transparent hugepages {thp}; numpy madvise(hugepage) {hugepage}; "
        f"page size {resource.getpagesize()} B"
    )


# -- the content -------------------------------------------------------------------------------


def write_content(plan: Plan, directory: Path) -> tuple[Path, Path]:
    """The array (``.npy``) and the table (Arrow IPC file) every side serves."""
    rng = np.random.default_rng(SEED)
    array_path, table_path = directory / "array.npy", directory / "table.arrow"
    np.save(array_path, rng.random(plan.shape))
    table = pa.table({f"c{i}": rng.random(plan.rows) for i in range(plan.columns)})
    with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return array_path, table_path


def load_array(path: Path, mmap: bool = True) -> np.ndarray[Any, Any]:
    array: np.ndarray[Any, Any] = np.load(path, mmap_mode="r" if mmap else None)
    return array


def load_table(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


# -- Tiled -------------------------------------------------------------------------------------


def measure_tiled(plan: Plan, pinning: Pinning, array: Path, table: Path, out: Results) -> None:
    try:
        python = tiled_python()
        script = str(HERE / "_tiled_data_side.py")
        with tempfile.TemporaryDirectory(prefix="tiled-data-bench-") as tmp:
            directory = Path(tmp)
            (directory / "data").mkdir()
            server = TiledServer(python, directory, pinning, None)
            server.argv.append("--init")
            try:
                server.start()
                progress(f"tiled: server up at {server.url} (pid {server.pid}); seeding")
                chunks = ",".join(map(str, plan.chunks))
                seeded = run_json(
                    [str(python), script, "seed", server.url, server.api_key, str(array),
                     str(table), "--chunks", chunks, "--partitions", str(plan.partitions)],
                    "seeding Tiled", timeout=900,
                )  # fmt: skip
                out.notes.append(
                    f"tiled: Tiled {seeded['version']} ({python}); seeded through its client "
                    f"(untimed): array {seeded['array_s']:.1f} s, table "
                    f"({seeded['table_partitions']} partitions) {seeded['table_s']:.1f} s, "
                    f"table as one DataFrame {seeded['table1_s']:.1f} s"
                )
                out.notes.append(
                    "tiled: server: " + shlex.join(server.argv).replace(server.api_key, "<key>")
                )
                measured = run_json(
                    [str(python), script, "measure", server.url, server.api_key, str(array),
                     str(table), "--runs", str(plan.runs)],
                    "Tiled's measurements", timeout=1800,
                )  # fmt: skip
            finally:
                server.stop()
    except Skip as why:
        out.skipped["tiled"] = str(why)
        progress(f"tiled: SKIPPED: {why}")
        return
    sizes = {"array": plan.array_bytes, "array_identity": plan.array_bytes}
    for name, figures in measured.items():
        measure = out.measure(f"tiled_{name}", sizes.get(name, plan.table_bytes))
        measure.seconds, measure.minflt = figures["s"], figures["minflt"]


# -- Arrow Flight ------------------------------------------------------------------------------


def measure_flight(plan: Plan, pinning: Pinning, table_path: Path, out: Results) -> None:
    expected = load_table(table_path)
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_flight_side.py"), str(table_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=pinning.server_preexec(),
    )
    try:
        assert process.stdout is not None
        location = process.stdout.readline().decode().strip()
        if not location.startswith("grpc://"):
            raise RuntimeError(f"the Flight server printed {location!r}, not its location")
        progress(f"flight: server up at {location} (pid {process.pid})")
        client = flight.connect(location)
        layouts = {"flight": plan.partitions, "flight_one_batch": 1}
        for batches in layouts.values():
            ticket = flight.Ticket(str(batches).encode())
            got = client.do_get(ticket).read_all()  # warm-up, checked
            if not got.equals(expected) or got.column(0).num_chunks != batches:
                raise RuntimeError(f"Flight's table ({batches} batches) differs from the file")
            del got
        for run in range(plan.runs):
            for key, batches in layouts.items():
                ticket = flight.Ticket(str(batches).encode())
                timed_sync(out.measure(key, plan.table_bytes), client.do_get(ticket).read_all)
            progress(
                f"flight: run {run + 1}/{plan.runs}: "
                + ", ".join(f"{k} {out.figures[k].seconds[-1]:.3f} s" for k in layouts)
            )
        client.close()
        out.notes.append(
            f"flight: pyarrow {pa.__version__} FlightServerBase in its own process "
            f"({plan.partitions} batches of {batch_layout(plan.rows, plan.partitions)[0]:,} rows)"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- aiosdk and raw aiohttp ----------------------------------------------------------------------


@dataclass
class Session:
    """What the aiosdk phase measures with: the server, a user's API token, the content."""

    url: str
    token: str
    plan: Plan
    array_path: Path
    table_path: Path

    def route(self, kind: str, key: str) -> str:
        return f"{self.url}/api/v1/{kind}/{NAMESPACE}/{CONTAINER}/{key}"

    def aiohttp(self) -> Any:
        import aiohttp

        # Idle connections dropped before uvicorn's 5 s keep-alive closes them under a request.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=4),
            headers={"Authorization": f"Bearer {self.token}"},
        )


async def login(server: ServerProcess, plan: Plan, array: Path, table: Path) -> Session:
    async with aiosdk.AsyncClient(server.url, token=server.token) as admin:
        password = secrets.token_urlsafe(16)
        await admin.admin.create_user(NAMESPACE, password=password)
    async with aiosdk.AsyncClient(server.url) as session:
        await session.login(username=NAMESPACE, password=password)
        token = await session.tokens.create("bench")
    return Session(server.url, token.secret.reveal(), plan, array, table)


async def seed_aiosdk(session: Session, out: Results) -> None:
    plan = session.plan
    async with aiosdk.AsyncClient(session.url, token=session.token) as client:
        grp = await client.catalog.create_container(f"{NAMESPACE}/{CONTAINER}")
        array = load_array(session.array_path, mmap=False)
        started = time.perf_counter()
        await grp.write_array(array, key="array", chunks=plan.chunks)
        array_s = time.perf_counter() - started
        del array
        frame = load_table(session.table_path)
        started = time.perf_counter()
        await grp.write_dataframe(frame, key="table", partitions=plan.partitions)
        await grp.write_dataframe(frame, key="table_one", partitions=1)  # as Tiled writes it
        out.notes.append(
            f"aiosdk: seeded through its API (untimed): array {array_s:.1f} s, table "
            f"{time.perf_counter() - started:.1f} s; client {client!r} (user {NAMESPACE!r}, "
            "API token)"
        )


async def measure_reads(session: Session, out: Results) -> None:
    plan = session.plan
    async with (
        aiosdk.AsyncClient(session.url, token=session.token) as client,
        session.aiohttp() as raw,
    ):
        arr = await client.catalog.get(f"{NAMESPACE}/{CONTAINER}/array")
        tbl = await client.catalog.get(f"{NAMESPACE}/{CONTAINER}/table")
        tbl_one = await client.catalog.get(f"{NAMESPACE}/{CONTAINER}/table_one")
        array_url, table_url = (
            session.route("array/full", "array"),
            session.route("table/full", "table"),
        )

        async def raw_array() -> np.ndarray[Any, Any]:
            async with raw.get(array_url) as response:
                response.raise_for_status()
                body = await response.read()
            return np.frombuffer(body, dtype="<f8").reshape(plan.shape)

        block_url = session.route("array/block", "array")
        rows = plan.chunks[0]
        blocks = -(-plan.shape[0] // rows)
        gate = asyncio.Semaphore(BLOCK_CONCURRENCY)

        async def raw_blocks() -> np.ndarray[Any, Any]:
            result = np.empty(plan.shape, dtype="<f8")
            flat = result.reshape(-1).view(np.uint8)

            async def fetch(i: int) -> None:
                offset = i * rows * plan.shape[1] * 8
                async with gate, raw.get(block_url, params={"block": f"{i},0"}) as response:
                    response.raise_for_status()
                    async for span in response.content.iter_any():
                        flat[offset : offset + len(span)] = np.frombuffer(span, np.uint8)
                        offset += len(span)

            await asyncio.gather(*(fetch(i) for i in range(blocks)))
            return result

        async def raw_table() -> pa.Table:
            async with raw.get(table_url) as response:
                response.raise_for_status()
                body = await response.read()
            return pa.ipc.open_stream(body).read_all()

        arrays: dict[str, Callable[[], Awaitable[Any]]] = {
            "raw_array": raw_array,
            "raw_array_blocks": raw_blocks,
            "aiosdk_array": arr.read,
        }
        tables: dict[str, Callable[[], Awaitable[Any]]] = {
            "aiosdk_table_arrow": lambda: tbl.read(as_="arrow"),
            "aiosdk_table_pandas": tbl.read,
            "aiosdk_table_pandas_one": tbl_one.read,
            "raw_table": raw_table,
        }
        # Warm up, and check that every read gives the content.
        expected = load_array(session.array_path)
        for name, read in arrays.items():
            got = await read()
            if got.shape != expected.shape or not np.array_equal(got, expected):
                raise RuntimeError(f"{name}: the array read differs from what was written")
            del got
        del expected
        table = load_table(session.table_path)
        for name, read in tables.items():
            got = await read()
            if isinstance(got, pa.Table):
                if not got.equals(table):
                    raise RuntimeError(f"{name}: the table read differs from what was written")
                if name == "aiosdk_table_arrow":
                    out.notes.append(
                        f"aiosdk: tbl.read(as_='arrow') gives {got.column(0).num_chunks} record "
                        f"batches ({tbl.npartitions} partitions)"
                    )
            elif not got.equals(table.to_pandas()):
                raise RuntimeError(f"{name}: the DataFrame read differs from what was written")
            del got
        del table

        for run in range(plan.runs):
            # Take turns, the order flipped every run, so that load hits both alike.
            order = list(arrays.items())
            for name, read in order if run % 2 == 0 else order[::-1]:
                await timed_async(out.measure(name, plan.array_bytes), read)
            for name, read in tables.items():
                await timed_async(out.measure(name, plan.table_bytes), read)
            progress(
                f"aiosdk: run {run + 1}/{plan.runs}: "
                + ", ".join(f"{k} {out.figures[k].seconds[-1]:.3f} s" for k in (*arrays, *tables))
            )


async def measure_writes(session: Session, out: Results) -> None:
    plan = session.plan
    array = load_array(session.array_path, mmap=False)
    table = load_table(session.table_path)
    frame = table.to_pandas()
    partitions, offset = [], 0
    for rows in batch_layout(plan.rows, plan.partitions):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(offset, rows))
        partitions.append(sink.getvalue().to_pybytes())
        offset += rows
    array_structure = {
        "data_type": "<f8",
        "shape": list(plan.shape),
        "chunks": list(plan.chunks),
        "dims": None,
        "fill_value": 0,
    }
    table_structure = {
        "arrow_schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
        "columns": table.column_names,
        "npartitions": plan.partitions,
        "nrows": batch_layout(plan.rows, plan.partitions),
    }
    shape = ",".join(map(str, plan.shape))
    async with (
        aiosdk.AsyncClient(session.url, token=session.token) as client,
        session.aiohttp() as raw,
    ):
        grp = await client.catalog.get(f"{NAMESPACE}/{CONTAINER}")
        create_url = f"{session.url}/api/v1/catalog/children/{NAMESPACE}/{CONTAINER}"

        async def create(key: str, family: str, structure: dict[str, Any]) -> None:
            body = {"key": key, "structure_family": family, "structure": structure}
            async with raw.post(create_url, json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"create {key}: {response.status} {await response.text()}")

        async def raw_array_patch(key: str) -> None:
            await create(key, "array", array_structure)
            url = session.route("array/full", key) + f"?offset=0,0&shape={shape}"
            headers = {"Content-Type": "application/octet-stream"}
            async with raw.patch(url, data=array.data.cast("B"), headers=headers) as response:
                if response.status >= 300:
                    raise RuntimeError(f"PATCH {key}: {response.status} {await response.text()}")

        async def raw_array_blocks(key: str) -> None:
            await create(key, "array", array_structure)
            url = session.route("array/block", key)
            headers = {"Content-Type": "application/octet-stream"}
            gate = asyncio.Semaphore(BLOCK_CONCURRENCY)

            async def put(i: int) -> None:
                block = array[i * plan.chunks[0] : (i + 1) * plan.chunks[0]]
                async with (
                    gate,
                    raw.put(
                        url, data=block.data.cast("B"), headers=headers, params={"block": f"{i},0"}
                    ) as r,
                ):
                    if r.status >= 300:
                        raise RuntimeError(f"PUT {key} block {i}: {r.status} {await r.text()}")

            blocks = -(-plan.shape[0] // plan.chunks[0])
            await asyncio.gather(*(put(i) for i in range(blocks)))

        async def raw_table(key: str) -> None:
            await create(key, "table", table_structure)
            url = session.route("table/partition", key)
            headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
            for body in partitions:
                async with raw.post(url, data=body, headers=headers) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"POST {key}: {response.status} {await response.text()}")

        writes: dict[str, tuple[int, Callable[[str], Awaitable[Any]]]] = {
            "raw_write_array": (plan.array_bytes, raw_array_blocks),
            "raw_write_array_patch": (plan.array_bytes, raw_array_patch),
            "aiosdk_write_array": (
                plan.array_bytes,
                lambda key: grp.write_array(array, key=key, chunks=plan.chunks),
            ),
            "raw_write_table": (plan.table_bytes, raw_table),
            "aiosdk_write_table_arrow": (
                plan.table_bytes,
                lambda key: grp.write_dataframe(table, key=key, partitions=plan.partitions),
            ),
            "aiosdk_write_table_pandas": (
                plan.table_bytes,
                lambda key: grp.write_dataframe(frame, key=key, partitions=plan.partitions),
            ),
        }
        failed: set[str] = set()
        for run in range(-1, plan.runs):  # run -1: warm-up, checked
            for name, (nbytes, write) in writes.items():
                key = f"{name.replace('_', '-')}-{run + 1}"
                if name in failed:
                    continue
                if run < 0:
                    try:
                        await write(key)
                    except Exception as exc:  # that row stays empty; the table says why
                        failed.add(name)
                        out.skipped[f"aiosdk {name}"] = f"{type(exc).__name__}: {exc}"
                        progress(f"aiosdk: {name} failed: {exc!r}")
                        if (node := await grp.get(key, None)) is not None:
                            await node.delete()
                        continue
                    node = await grp.get(key)
                    got = await node.read()
                    same = (
                        np.array_equal(got, array)
                        if isinstance(got, np.ndarray)
                        else (got if isinstance(got, pa.Table) else pa.table(got)).equals(table)
                    )
                    if not same:
                        raise RuntimeError(f"{name}: what was written reads back differently")
                    del got
                else:
                    try:
                        await timed_async(out.measure(name, nbytes), lambda: write(key))  # noqa: B023
                    except Exception as exc:
                        failed.add(name)
                        out.skipped[f"aiosdk {name}"] = (
                            f"run {run + 1}: {type(exc).__name__}: {exc}"
                        )
                        progress(f"aiosdk: {name} failed: {exc!r}")
                        out.figures.pop(name, None)
                        if (node := await grp.get(key, None)) is None:
                            continue
                    node = await grp.get(key)
                await node.delete()
            if run >= 0:
                progress(
                    f"aiosdk: writes run {run + 1}/{plan.runs}: "
                    + ", ".join(
                        f"{k} {out.figures[k].seconds[-1]:.3f} s" for k in writes if k not in failed
                    )
                )


# -- (d) peak RSS, one fresh process per measurement ---------------------------------------------


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that over exec
    from the forking parent (this benchmark, with its own copies of the data)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Start ``VmHWM`` again from the current RSS (Linux >= 4.0), so the peak is the read's."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


async def probe(kind: str, url: str, token: str, path: str) -> dict[str, float]:
    """One read of the array at ``path``, in this fresh process: its memory and page faults."""
    if kind == "aiosdk":
        async with aiosdk.AsyncClient(url, token=token) as client:
            arr = await client.catalog.get(path)
            reset_peak_rss()
            before, faults, started = rss_now(), minflt(), time.perf_counter()
            result = await arr.read()
            seconds = time.perf_counter() - started
    else:
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as raw:
            async with raw.get(f"{url}/api/v1/") as response:  # the connection, warm
                await response.read()
            reset_peak_rss()
            before, faults, started = rss_now(), minflt(), time.perf_counter()
            async with raw.get(f"{url}/api/v1/array/full/{path}") as response:
                response.raise_for_status()
                body = await response.read()
            result = np.frombuffer(body, dtype="<f8")
            seconds = time.perf_counter() - started
    return {
        "nbytes": result.nbytes,
        "seconds": seconds,
        "before": before,
        "maxrss": peak_rss(),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "minflt": minflt() - faults,
    }


def measure_rss(session: Session, out: Results) -> None:
    path = f"{NAMESPACE}/{CONTAINER}/array"
    for run in range(session.plan.runs):
        for kind in ("aiosdk", "raw"):
            done = subprocess.run(
                [sys.executable, __file__, "--probe", kind, session.url, session.token, path],
                stdout=subprocess.PIPE,
                check=True,
            )
            figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
            if figures["nbytes"] != session.plan.array_bytes:
                raise RuntimeError(f"probe {kind} read {figures['nbytes']} bytes")
            out.rss.setdefault(kind, []).append(figures)
        progress(
            f"aiosdk: RSS run {run + 1}/{session.plan.runs}: "
            + ", ".join(f"{k} peak {v[-1]['maxrss'] / MiB:.0f} MiB" for k, v in out.rss.items())
        )


def missing_api() -> str | None:
    """Why aiosdk's data clients cannot be measured (``None``: they can)."""
    try:
        from aiosdk.catalog import arrays, tables
    except ImportError as exc:
        return f"aiosdk's data clients are not there yet ({exc})"
    for owner, name in ((arrays, "AsyncArrayClient"), (tables, "AsyncTableClient")):
        if not hasattr(owner, name):
            return f"{owner.__name__} has no {name}"
    if not hasattr(aiosdk.AsyncContainer, "write_array"):
        return "AsyncContainer has no write_array"
    return None


def measure_aiosdk(plan: Plan, pinning: Pinning, array: Path, table: Path, out: Results) -> None:
    if (why := missing_api()) is not None:
        out.skipped["aiosdk"] = why
        progress(f"aiosdk: SKIPPED: {why}")
        return
    with ServerProcess(default_server_command(), pinning, ["--log-level", "warning"]) as server:
        progress(f"aiosdk: server up at {server.url} (pid {server.pid})")
        out.notes.append(
            "aiosdk: server: " + shlex.join(server.argv).replace(server.token, "<token>")
        )
        session = asyncio.run(login(server, plan, array, table))
        phases: list[tuple[str, Callable[[], object]]] = [
            ("seeding", lambda: asyncio.run(seed_aiosdk(session, out))),
            ("reads (a), (c)", lambda: asyncio.run(measure_reads(session, out))),
            ("peak RSS (d), a fresh process per read", lambda: measure_rss(session, out)),
            ("writes (e)", lambda: asyncio.run(measure_writes(session, out))),
        ]
        for what, phase in phases:
            progress(f"aiosdk: {what}")
            try:
                phase()
            except Exception as exc:  # the table still shows what was measured
                why = f"{what} failed: {type(exc).__name__}: {exc}"
                out.skipped[f"aiosdk {what.split(',')[0]}"] = why
                progress(f"aiosdk: {why}")
                if what == "seeding":
                    return


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str


ARRAY_ROWS = [
    Row("raw_array", "(a) raw aiohttp GET /array/full, one stream"),
    Row("raw_array_blocks", "(a) raw aiohttp GET blocks, 8 at a time (info)"),
    Row("aiosdk_array", "(a) aiosdk arr.read()"),
    Row("tiled_array", "(b) Tiled default client .read()"),
    Row("tiled_array_identity", "(b) Tiled, Accept-Encoding: identity (info)"),
]
TABLE_ROWS = [
    Row("flight", "(c) Flight do_get().read_all(), our layout"),
    Row("flight_one_batch", "(c) Flight, one batch (info)"),
    Row("aiosdk_table_arrow", "(c) aiosdk tbl.read(as_='arrow')"),
    Row("aiosdk_table_pandas", "(c) aiosdk tbl.read() (pandas)"),
    Row("aiosdk_table_pandas_one", "(c) aiosdk tbl.read() (pandas), one partition"),
    Row("raw_table", "(c) raw aiohttp GET /table/full -> Arrow (info)"),
    Row("tiled_table", "(c) Tiled .read() (pandas), our layout"),
    Row("tiled_table_one", "(c) Tiled .read() (pandas), one partition"),
]
WRITE_ROWS = [
    Row("raw_write_array", "(e) raw aiohttp: create + PUT blocks"),
    Row("raw_write_array_patch", "(e) raw aiohttp: create + PATCH all (info)"),
    Row("aiosdk_write_array", "(e) aiosdk grp.write_array()"),
    Row("raw_write_table", "(e) raw aiohttp: create + PUT partitions"),
    Row("aiosdk_write_table_arrow", "(e) aiosdk write_dataframe(pyarrow)"),
    Row("aiosdk_write_table_pandas", "(e) aiosdk write_dataframe(pandas) (info)"),
]
WIDTH = 50


def summary_cells(values: list[float], digits: int) -> str:
    if not values:
        return f"{'-':>9} {'':>19}"
    s = Summary(list(values))
    return f"{s.median:>9.{digits}f} {f'{s.min:.{digits}f}..{s.max:.{digits}f}':>19}"


def section(lines: list[str], title: str, rows: list[Row], out: Results, unit: int) -> None:
    name = "MiB/s" if unit == MiB else "MB/s"
    lines += [
        "",
        f"  {title:<{WIDTH}} {name:>9} {'min..max':>19} {'minflt':>9} {'cpu s':>6}",
    ]
    for row in rows:
        m = out.figures.get(row.key)
        if m is None or not m.seconds:
            lines.append(f"  {row.label:<{WIDTH}} {'-':>9}")
            continue
        faults = f"{Summary([float(f) for f in m.minflt]).median:>9.0f}"
        cpu = f"{Summary(m.cpu).median:>6.2f}" if m.cpu else f"{'':>6}"
        lines.append(
            f"  {row.label:<{WIDTH}} {summary_cells(m.rate(unit).values, 0)} {faults} {cpu}"
        )


def ratio_line(lines: list[str], label: str, out: Results, top: str, bottom: str,
               goal: float | None) -> None:  # fmt: skip
    a, b = out.figures.get(top), out.figures.get(bottom)
    if a is None or b is None or not a.seconds or not b.seconds:
        lines.append(f"  {label:<{WIDTH}} {'-':>9}")
        return
    value = Summary(b.seconds).median / Summary(a.seconds).median
    verdict = "(no goal)" if goal is None else f">= {goal:g}x {'PASS' if value >= goal else 'MISS'}"
    lines.append(f"  {label:<{WIDTH}} {value:>8.2f}x  {verdict}")


def rss_section(lines: list[str], plan: Plan, out: Results) -> None:
    lines += ["", f"  {'(d) client memory, one read in a fresh process':<{WIDTH}} "
              f"{'MiB':>9} {'min..max':>19} {'minflt':>9}"]  # fmt: skip
    for kind, label in (("aiosdk", "aiosdk arr.read()"), ("raw", "raw aiohttp resp.read()")):
        runs = out.rss.get(kind)
        if not runs:
            lines.append(f"  {label + ': peak RSS':<{WIDTH}} {'-':>9}")
            continue
        faults = f"{Summary([r['minflt'] for r in runs]).median:>9.0f}"
        peak = [r["maxrss"] / MiB for r in runs]
        added = [(r["maxrss"] - r["before"]) / MiB for r in runs]
        lines.append(f"  {label + ': peak RSS':<{WIDTH}} {summary_cells(peak, 0)} {faults}")
        inherited = [r["ru_maxrss"] / MiB for r in runs]
        for what, values in (("peak - RSS before the read", added), ("ru_maxrss", inherited)):
            lines.append(f"  {label + ': ' + what:<{WIDTH}} {summary_cells(values, 0)}")
    runs = out.rss.get("aiosdk")
    if runs:
        size = plan.array_bytes / MiB
        added = Summary([(r["maxrss"] - r["before"]) / MiB for r in runs]).median / size
        total = Summary([r["maxrss"] / MiB for r in runs]).median / size
        lines.append(
            f"  {'(d) aiosdk: (peak - before) / array size':<{WIDTH}} {added:>8.2f}x  "
            f"<= {RSS_GOAL:g}x {'PASS' if added <= RSS_GOAL else 'MISS'}"
        )
        lines.append(
            f"  {'(d) aiosdk: peak RSS / array size (info)':<{WIDTH}} {total:>8.2f}x  "
            f"({'within' if total <= RSS_GOAL else 'over'} {RSS_GOAL:g}x with the interpreter)"
        )


def render(plan: Plan, pinning: Pinning, out: Results, load: str, quick: bool) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK smoke run, not for quoting" if quick else "full run"
    lines = [
        f"aiosdk structured data vs raw aiohttp, Tiled and Arrow Flight ({mode}), {now}",
        f"  {machine_line()}, aiosdk {aiosdk.__version__}, numpy {np.__version__}, "
        f"pyarrow {pa.__version__}",
        f"  {pinning.describe()}; load average (1, 5, 15 min) at start {load}",
        f"  {malloc_line()}",
        f"  content: {plan.describe()}; figures: median of {plan.runs} runs (min..max); "
        "minflt: client minor page faults per run; cpu s: client CPU per run",
    ]
    lines += [f"  {note}" for note in out.notes]
    lines += [f"  {side}: SKIPPED: {why}" for side, why in out.skipped.items()]
    section(lines, f"array read, {plan.array_bytes / MiB:.0f} MiB", ARRAY_ROWS, out, MiB)
    section(lines, f"table read, {plan.table_bytes / MB:.0f} MB", TABLE_ROWS, out, MB)
    section(lines, "writes", WRITE_ROWS, out, MiB)
    rss_section(lines, plan, out)
    lines += ["", f"  {'ratios (of median times; > 1: aiosdk faster)':<{WIDTH}}"]
    for label, top, bottom, goal in (
        ("(a) aiosdk / raw aiohttp, array read", "aiosdk_array", "raw_array", 1.0),
        ("(a) aiosdk / raw aiohttp blocks (info)", "aiosdk_array", "raw_array_blocks", None),
        ("(b) aiosdk / Tiled default client, array read", "aiosdk_array", "tiled_array", 20.0),
        ("(b) aiosdk / Tiled identity, array read (info)", "aiosdk_array",
         "tiled_array_identity", None),
        ("(c) aiosdk arrow / Flight (same layout)", "aiosdk_table_arrow", "flight", 0.8),
        ("(c) aiosdk arrow / Flight one batch (info)", "aiosdk_table_arrow", "flight_one_batch",
         None),
        ("(c) aiosdk pandas / Tiled, 16 partitions each", "aiosdk_table_pandas", "tiled_table",
         20.0),
        ("(c) aiosdk pandas / Tiled, one partition each", "aiosdk_table_pandas_one",
         "tiled_table_one", 20.0),
        ("(c) aiosdk 16 partitions / Tiled one (info)", "aiosdk_table_pandas", "tiled_table_one",
         None),
        ("(e) aiosdk / raw aiohttp, array write", "aiosdk_write_array", "raw_write_array", None),
        ("(e) aiosdk / raw aiohttp, table write", "aiosdk_write_table_arrow", "raw_write_table",
         None),
    ):  # fmt: skip
        ratio_line(lines, label, out, top, bottom, goal)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, 100,000 rows, 2 runs")
    parser.add_argument("--no-tiled", action="store_true", help="skip Tiled")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, quick 2)")
    parser.add_argument("--probe", nargs=4, metavar=("KIND", "URL", "TOKEN", "PATH"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(asyncio.run(probe(*args.probe))), flush=True)
        return 0
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(plan.shape, plan.chunks, plan.rows, plan.columns, plan.partitions, args.runs)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    pinning = plan_pinning()
    started = time.perf_counter()
    pinning.pin_client()  # before any thread starts; child processes inherit it too
    progress(pinning.describe())
    out = Results()
    with tempfile.TemporaryDirectory(prefix="aiosdk-data-bench-") as tmp:
        array, table = write_content(plan, Path(tmp))
        progress(f"content written to {tmp}: {plan.describe()}")
        if args.no_tiled:
            out.skipped["tiled"] = "--no-tiled"
        else:
            measure_tiled(plan, pinning, array, table, out)
        measure_flight(plan, pinning, table, out)
        measure_aiosdk(plan, pinning, array, table, out)
    load += ", at end " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = render(plan, pinning, out, load, args.quick)
    print(text + f"\n\n  total time {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
