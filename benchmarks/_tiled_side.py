"""Tiled's half of benchmarks/bench_catalog.py, run by Tiled's own interpreter (its own venv).

aiosdk's environment never imports tiled: bench_catalog.py runs this script with the Tiled venv's
Python, as a subprocess, and reads the JSON it prints on stdout (progress goes to stderr).

    python _tiled_side.py seed DIRECTORY [--entries N]
        Initializes a catalog (DIRECTORY/catalog.db, writable storage DIRECTORY/data) and fills
        "bench/big" with N small containers with metadata (_catalog_content.py), in process,
        through Tiled's own catalog (``create_node`` for the two parents, then the entries' rows
        in one transaction through its ORM): the same rows its HTTP API would write, without
        10,000 round trips (about 40 ms each over HTTP, 12 ms in process). Also writes
        DIRECTORY/quiet-logging.json: Tiled's default logging config without the access log.

    python _tiled_side.py measure URL API_KEY [--runs R] [--entries N]
        Measures (a)-(d) with Tiled's blocking client (``tiled.client.from_uri``) and prints
        the per-run figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalog_content import (
    CONTAINER,
    CONTAINER_METADATA,
    ENTRIES,
    INDEX,
    NAMESPACE,
    THREADS,
    entry_key,
    entry_metadata,
    lookup_keys,
)

INDEX_CALLS = 20  # (d) calls per run; the run's figure is their median


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] tiled: {message}", file=sys.stderr, flush=True)


# -- seed --------------------------------------------------------------------------------------


async def seed_catalog(directory: Path, entries: int) -> float:
    from tiled.catalog import from_uri
    from tiled.structures.core import StructureFamily

    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    root = from_uri(
        f"sqlite:///{directory / 'catalog.db'}",
        writable_storage=[str(data)],
        init_if_not_exists=True,
    )
    await root.startup()
    try:
        started = time.perf_counter()
        bench = await root.create_node(StructureFamily.container, {}, key=NAMESPACE)
        big = await bench.create_node(
            StructureFamily.container, dict(CONTAINER_METADATA), key=CONTAINER
        )
        # The entries in one transaction through Tiled's ORM (the rows its create_node writes for
        # a container without data sources; SQLite triggers fill nodes_closure and the full-text
        # index), in key order: Tiled lists in node-id order, and index i must be entry i.
        from tiled.catalog import orm

        async with big.context.session() as db:
            db.add_all(
                orm.Node(
                    key=entry_key(i),
                    parent=big.node.id,
                    metadata_=entry_metadata(i),
                    structure_family=StructureFamily.container,
                    specs=[],
                )
                for i in range(entries)
            )
            await db.commit()
        return time.perf_counter() - started
    finally:
        await root.shutdown()


def write_quiet_logging(directory: Path) -> Path:
    from tiled.server.logging_config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    for formatter in config["formatters"].values():
        formatter["use_colors"] = False
    path = directory / "quiet-logging.json"
    path.write_text(json.dumps(config))
    return path


# -- measure -----------------------------------------------------------------------------------


def measure(url: str, api_key: str, runs: int, entries: int) -> dict[str, Any]:
    import tiled
    from tiled.client import from_uri

    client = from_uri(url, api_key=api_key)
    grp = client[NAMESPACE][CONTAINER]
    keys = lookup_keys(entries)
    expected_index_key = entry_key(min(INDEX, entries - 1))
    index = min(INDEX, entries - 1)

    def lookup(key: str) -> dict[str, Any]:
        return dict(grp[key].metadata)

    # Warm up: connections, server caches, the client's code paths.
    listed = list(grp)
    if len(listed) != entries or listed[0] != entry_key(0):
        raise RuntimeError(f"listing gave {len(listed)} keys, first {listed[:1]}")
    for key in keys[:20]:
        lookup(key)
    got = grp.values()[index]
    if got.item["id"] != expected_index_key:
        raise RuntimeError(f"values()[{index}] is {got.item['id']}, not {expected_index_key}")
    if lookup(keys[0]) != entry_metadata(int(keys[0][1:])):
        raise RuntimeError("metadata differs from what was seeded")
    pool = ThreadPoolExecutor(THREADS)
    list(pool.map(lookup, keys[:THREADS]))

    result: dict[str, Any] = {
        "version": tiled.__version__,
        "list_s": [],
        "lookup_ms": [],
        "concurrent_per_s": [],
        "index_ms": [],
    }
    for run in range(runs):
        started = time.perf_counter()
        count = len(list(grp))
        result["list_s"].append(time.perf_counter() - started)
        assert count == entries

        started = time.perf_counter()
        for key in keys:
            lookup(key)
        result["lookup_ms"].append((time.perf_counter() - started) / len(keys) * 1e3)

        started = time.perf_counter()
        done = list(pool.map(lookup, keys))
        result["concurrent_per_s"].append(len(done) / (time.perf_counter() - started))

        times = []
        for _ in range(INDEX_CALLS):
            started = time.perf_counter()
            grp.values()[index]
            times.append(time.perf_counter() - started)
        result["index_ms"].append(statistics.median(times) * 1e3)
        progress(
            f"run {run + 1}/{runs}: list {result['list_s'][-1]:.2f} s, "
            f"lookup {result['lookup_ms'][-1]:.2f} ms, "
            f"{result['concurrent_per_s'][-1]:.0f} lookups/s, "
            f"values()[{index}] {result['index_ms'][-1]:.2f} ms"
        )
    pool.shutdown()
    client.context.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed")
    seed.add_argument("directory", type=Path)
    seed.add_argument("--entries", type=int, default=ENTRIES)
    run = commands.add_parser("measure")
    run.add_argument("url")
    run.add_argument("api_key")
    run.add_argument("--runs", type=int, default=5)
    run.add_argument("--entries", type=int, default=ENTRIES)
    args = parser.parse_args(argv)
    if args.command == "seed":
        import tiled

        seconds = asyncio.run(seed_catalog(args.directory, args.entries))
        logging = write_quiet_logging(args.directory)
        out = {"seconds": seconds, "version": tiled.__version__, "quiet_logging": str(logging)}
    else:
        out = measure(args.url, args.api_key, args.runs, args.entries)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
