"""Helpers of the table data tests: Arrow IPC streams, a sample table with every kind of column
the issue names, table nodes made and appended to over the API."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import httpx
import pyarrow  # type: ignore[import-untyped]
import pyarrow.ipc  # type: ignore[import-untyped]

from .conftest import create, url

ARROW = "application/vnd.apache.arrow.stream"
UTC = datetime.timezone.utc


def stream(table: Any) -> bytes:
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def parse(body: bytes) -> Any:
    return pyarrow.ipc.open_stream(body).read_all()


def encoded_schema(schema: Any) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def sample(start: int = 0, rows: int = 5) -> Any:
    """A table of every kind of column the issue names, with nulls in each."""
    stamps = [
        datetime.datetime(2024, 1, 1, 12, tzinfo=UTC) + datetime.timedelta(hours=i)
        for i in range(rows)
    ]

    def nulled(values: list[Any]) -> list[Any]:
        return [None if i % 3 == 1 else v for i, v in enumerate(values)]

    ids = list(range(start, start + rows))
    return pyarrow.table(
        {
            "i": pyarrow.array(nulled(ids), pyarrow.int64()),
            "u8": pyarrow.array(nulled([i % 200 for i in ids]), pyarrow.uint8()),
            "f": pyarrow.array(nulled([i / 7 for i in ids]), pyarrow.float64()),
            "f32": pyarrow.array(nulled([i * 0.5 for i in ids]), pyarrow.float32()),
            "b": pyarrow.array(nulled([i % 2 == 0 for i in ids]), pyarrow.bool_()),
            "s": pyarrow.array(nulled([f"row {i} ✓" for i in ids]), pyarrow.string()),
            "t": pyarrow.array(nulled(stamps), pyarrow.timestamp("us", tz="UTC")),
            "t_naive": pyarrow.array(
                nulled([s.replace(tzinfo=None) for s in stamps]), pyarrow.timestamp("ns")
            ),
            "t_tokyo": pyarrow.array(nulled(stamps), pyarrow.timestamp("ms", tz="Asia/Tokyo")),
            "cat": pyarrow.array(
                nulled([["red", "green", "blue"][i % 3] for i in ids]), pyarrow.string()
            ).dictionary_encode(),
        }
    )


SCHEMA = sample().schema


async def append_all(http: httpx.AsyncClient, path: str, parts: list[Any]) -> None:
    """Append ``parts`` in order, as partitions 0, 1, …"""
    for index, part in enumerate(parts):
        response = await append(http, path, part)
        assert response.status_code == 200, response.text
        assert response.json() == {"partition": index}


async def new_table(
    http: httpx.AsyncClient, parent: str, key: str, schema: Any = SCHEMA, **structure: Any
) -> dict[str, Any]:
    return await create(
        http,
        parent,
        key,
        structure_family="table",
        structure={"arrow_schema": encoded_schema(schema), **structure},
    )


async def append(http: httpx.AsyncClient, path: str, table: Any, **headers: str) -> httpx.Response:
    return await http.post(
        f"/table/partition/{url(path)}",
        content=stream(table),
        headers={"Content-Type": ARROW, **headers},
    )
