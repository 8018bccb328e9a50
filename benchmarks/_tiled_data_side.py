"""Tiled's half of benchmarks/bench_data.py, run by Tiled's own interpreter (its own venv).

aiosdk's environment never imports tiled: bench_data.py runs this script with the Tiled venv's
Python, as a subprocess, and reads the JSON it prints last on stdout (progress goes to stderr).
The data come from the files bench_data.py wrote (the bytes every side serves).

    python _tiled_data_side.py seed URL API_KEY ARRAY.npy TABLE.arrow --chunks 256,8192
            --partitions 16
        Writes the array (key "array", as a dask array with those chunks, so Tiled stores the
        same chunk layout as aiosdk) and the table twice: key "table" as a dask DataFrame with
        that many partitions, key "table_one" as the pandas DataFrame (one partition, what
        ``write_table`` of a DataFrame gives), through Tiled's client (``write_array``,
        ``write_table``); untimed by bench_data.py, reported.

    python _tiled_data_side.py measure URL API_KEY ARRAY.npy TABLE.arrow --runs R
        Reads them with Tiled's default client (``from_uri(url, api_key=...)``;
        ``client["array"].read()``, ``client["table"].read()``, ``client["table_one"].read()``),
        and the array once more with ``Accept-Encoding: identity`` (Tiled's server otherwise
        tries blosc2 on every response), R runs each after a checked warm-up read; prints
        per-run seconds and minor page faults.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] tiled: {message}", file=sys.stderr, flush=True)


def connect(url: str, api_key: str, headers: dict[str, str] | None = None) -> Any:
    from tiled.client import from_uri

    return from_uri(url, api_key=api_key, headers=headers, show_progress=False)


def load_array(path: Path) -> Any:
    import numpy

    return numpy.load(path, mmap_mode="r")


def load_table(path: Path) -> Any:
    import pyarrow

    return pyarrow.ipc.open_file(pyarrow.memory_map(str(path))).read_all()


# -- seed --------------------------------------------------------------------------------------


def seed(args: argparse.Namespace) -> dict[str, Any]:
    import dask.array
    import dask.dataframe
    import tiled

    client = connect(args.url, args.api_key)
    chunks = tuple(int(c) for c in args.chunks.split(","))
    array = dask.array.from_array(load_array(args.array), chunks=chunks)
    started = time.perf_counter()
    client.write_array(array, key="array")
    array_s = time.perf_counter() - started
    del array
    frame = load_table(args.table).to_pandas()
    partitioned = dask.dataframe.from_pandas(frame, npartitions=args.partitions, sort=False)
    started = time.perf_counter()
    client.write_table(partitioned, key="table")
    table_s = time.perf_counter() - started
    started = time.perf_counter()
    client.write_table(frame, key="table_one")
    table1_s = time.perf_counter() - started
    stored = client["table"].structure().npartitions
    client.context.close()
    return {
        "version": tiled.__version__,
        "array_s": array_s,
        "table_s": table_s,
        "table1_s": table1_s,
        "table_partitions": stored,
    }


# -- measure -----------------------------------------------------------------------------------


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(read: Callable[[], Any]) -> tuple[float, int]:
    """Seconds and minor page faults of one ``read()``; the result is dropped before returning."""
    gc.collect()
    faults, started = minflt(), time.perf_counter()
    result = read()
    seconds, faults = time.perf_counter() - started, minflt() - faults
    del result
    gc.collect()
    return seconds, faults


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy

    default = connect(args.url, args.api_key)
    identity = connect(args.url, args.api_key, {"Accept-Encoding": "identity"})
    array, array_identity = default["array"], identity["array"]
    table, table_one = default["table"], default["table_one"]
    reads: dict[str, Callable[[], Any]] = {
        "array": lambda: array.read(),
        "array_identity": lambda: array_identity.read(),
        "table": lambda: table.read(),
        "table_one": lambda: table_one.read(),
    }
    # Warm up, and check that Tiled serves the bytes every side serves.
    expected_array = load_array(args.array)
    got = reads["array"]()
    if not isinstance(got, numpy.ndarray) or not numpy.array_equal(got, expected_array):
        raise RuntimeError(f"Tiled's array differs from {args.array}")
    del got, expected_array
    if not numpy.array_equal(reads["array_identity"](), load_array(args.array)):
        raise RuntimeError("Tiled's array read with Accept-Encoding: identity differs")
    expected_table = load_table(args.table)
    for key in ("table", "table_one"):
        frame = reads[key]()
        for name in expected_table.column_names:
            if not numpy.array_equal(frame[name].to_numpy(), expected_table[name].to_numpy()):
                raise RuntimeError(f"Tiled's {key} column {name!r} differs from {args.table}")
        del frame
    del expected_table
    gc.collect()

    result: dict[str, Any] = {name: {"s": [], "minflt": []} for name in reads}
    for run in range(args.runs):
        for name, read in reads.items():
            seconds, faults = timed(read)
            result[name]["s"].append(seconds)
            result[name]["minflt"].append(faults)
        progress(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{name} {result[name]['s'][-1]:.3f} s" for name in reads)
        )
    default.context.close()
    identity.context.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("seed", "measure"):
        command = commands.add_parser(name)
        command.add_argument("url")
        command.add_argument("api_key")
        command.add_argument("array", type=Path)
        command.add_argument("table", type=Path)
        if name == "seed":
            command.add_argument("--chunks", required=True)
            command.add_argument("--partitions", type=int, required=True)
        else:
            command.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    out = seed(args) if args.command == "seed" else measure(args)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
