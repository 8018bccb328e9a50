"""Structured data: arrays read by slices and blocks, tables by partitions and columns, sparse
arrays, datasets, exports, and a copy between two servers; then the same through the blocking
facade.

Needs the dataframe extra: pip install 'aiosdk[dataframe]'
Run: python examples/data.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import anyio
import numpy as np
import pandas as pd

import aiosdk


async def main(out: Path) -> None:
    async with aiosdk.embedded() as here, aiosdk.embedded() as there:  # two servers
        for admin in (here, there):
            await admin.admin.create_user("alice")
        grp = await here.catalog.create_container("alice/lab", metadata={"pi": "alice"})

        # An array, written in blocks of 64 x 1000 and read back by slices and by blocks.
        frames = np.random.default_rng(1).standard_normal((256, 1000))
        arr = await grp.write_array(frames, key="frames", chunks=(64, 1000), dims=["t", "x"])
        part = await arr.read(slice=np.s_[10:200:7, -5:])
        print(
            f"array {arr.shape} in blocks {arr.chunks}: slice {part.shape} equal to numpy's:",
            bool((part == frames[10:200:7, -5:]).all()),
        )
        sizes = [block.shape[0] async for _, block in arr.iter_blocks(concurrency=2)]
        print(f"blocks streamed in order: {sizes}")
        await arr.patch(np.zeros((44, 1000)), offset=(256, 0), extend=True)
        print(f"extended to {(await arr.refresh()).shape}")

        # A table in partitions; columns chosen on the server.
        events = pd.DataFrame(
            {
                "t": pd.date_range("2026-01-01", periods=6, freq="h", tz="UTC"),
                "v": [0.5, 1.0, None, 3.0, 5.0, 8.0],
                "kind": pd.Categorical(["a", "b", "a", "c", "b", "a"]),
            }
        )
        tbl = await grp.write_dataframe(events, key="events", partitions=2)
        added = await tbl.append_partition(events.iloc[:2])
        print(
            f"table of {tbl.npartitions} partitions (appended #{added}),"
            f" columns {tbl.columns}: v = {(await tbl.read(columns=['v']))['v'].tolist()}"
        )
        await tbl.export(out / "events.parquet")
        await arr.export(out / "frames.npy")
        exported = sorted([p.name async for p in anyio.Path(out).iterdir()])
        print(f"exported {exported}; formats: {await tbl.formats()}")

        # A sparse array and a dataset (arrays sharing named dimensions).
        sp = await grp.write_sparse(
            np.array([[0, 3], [2, 1]]), np.array([7.0, -1.0]), shape=(4, 4), key="sp"
        )
        print(f"sparse: {(await sp.read()).todense().tolist()}")
        ds = await grp.write_dataset(
            {"temp": (("time",), np.linspace(10, 12, 3)), "time": (("time",), np.arange(3.0))},
            key="weather",
        )
        print(f"dataset variables: {sorted(await ds.read())}")

        # Everything, to the other server; a second run writes nothing new.
        copied = await aiosdk.copy(grp, await there.catalog.get("alice"), key="lab-copy")
        again = await aiosdk.copy(grp, await there.catalog.get("alice"), key="lab-copy")
        copied_frames = await (await copied.get("frames")).read()
        print(
            f"copied {[key async for key in copied]} to the second server;"
            f" identical: {copied_frames[:256].tobytes() == frames.tobytes()},"
            f" unchanged by a rerun: {again.revision == copied.revision}"
        )


def blocking() -> None:
    with aiosdk.Client.embedded() as client:
        client.admin.create_user("bob")
        grp = client.catalog.create_container("bob/data")
        arr = grp.write_array(np.arange(12.0).reshape(3, 4), key="a")
        print(f"blocking: {arr.read(slice=np.s_[:, 1]).tolist()} {type(grp['a']).__name__}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
    blocking()
