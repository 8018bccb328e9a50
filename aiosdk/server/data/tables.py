"""Tables: their structure, and their partitions as Arrow IPC stream files in the blob store.

A table node's structure (the database row is the source of truth)::

    {"arrow_schema": "<base64 of the Arrow IPC schema message>", "columns": ["t", "v"],
     "npartitions": 3, "nrows": [1000, 1000, 500]}

Its schema is fixed when it is created; ``npartitions`` and ``nrows`` (rows per partition)
count what has been written (a partition declared at creation and not written yet reads as no
rows). Partition ``n`` lives at ``tables/<node id>/part-<n>.arrows``: an Arrow IPC stream
that begins with the table's own schema message (every partition's begins with the same
bytes) and ends with the end-of-stream marker, so that a read of the whole table is the
partitions' bytes one after another (the schema once, then the batches of each, with each
partition's dictionaries replacing the last ones, which the stream format allows), sent from
the files as they are. A body that is such a stream already (what the client sends) is stored
as it came, once checked whole; any other valid one is re-encoded so. A partition is written
whole to a temporary key and renamed (:meth:`.store.BlobStore.put`): a failed write never
leaves half a partition readable.

Everything here that parses, checks or writes Arrow data is blocking: the routes call it in a
worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pyarrow
import pyarrow.ipc

from ..catalog.nodes import InvalidContentError
from ..errors import InvalidRequestError
from .export import table_stream
from .store import BlobStore, map_file

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_PARTITIONS",
    "EOS",
    "DamagedPartitionError",
    "check_columns",
    "checked_stream",
    "refuse_compressed",
    "content_tag",
    "decode_schema",
    "empty_stream",
    "encode_schema",
    "joined_spans",
    "partition_key",
    "read_stream",
    "stored_partitions",
    "structure_after_write",
    "table_tag",
    "validate_structure",
]

MAX_PARTITIONS = 10_000
"""The most partitions a table may have."""
MAX_DECODED_BYTES = 2 * 1024**3
"""The most a partition may hold once read; more is refused (422)."""
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The end-of-stream marker of an Arrow IPC stream."""


def partition_key(node_id: str, index: int) -> str:
    """The blob store key of partition ``index`` of the table ``node_id``."""
    return f"tables/{node_id}/part-{index}.arrows"


def decode_schema(encoded: str) -> Any:
    """The :class:`pyarrow.Schema` of a structure's ``arrow_schema``;
    :class:`~..catalog.nodes.InvalidContentError` if it is not one."""
    try:
        message = base64.b64decode(encoded, validate=True)
        return pyarrow.ipc.read_schema(pyarrow.py_buffer(message))
    except (binascii.Error, ValueError, pyarrow.ArrowException) as exc:
        raise InvalidContentError(
            f"arrow_schema must be the base64 of an Arrow IPC schema message: {exc}"
        ) from None


def encode_schema(schema: Any) -> str:
    """``schema`` as a structure's ``arrow_schema``."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _count(value: Any, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise InvalidContentError(f"{what} must be an integer from 0 to {limit:,}")
    return value


def validate_structure(structure: dict[str, Any] | None) -> dict[str, Any]:
    """The structure of a new table node, normalised: its ``arrow_schema`` (required: a
    table's schema is fixed when it is created) re-encoded, ``columns`` taken from it (when
    given, they must be its column names), ``npartitions`` as declared (0 if not), and
    ``nrows`` 0 for each (nothing is written yet). :class:`~..catalog.nodes.InvalidContentError`
    (422) for anything else."""
    if not isinstance(structure, dict):
        raise InvalidContentError(
            "A table needs a structure with its arrow_schema (the base64 of an Arrow IPC schema)"
        )
    unknown = set(structure) - {"arrow_schema", "columns", "npartitions", "nrows"}
    if unknown:
        raise InvalidContentError(f"Unknown structure fields for a table: {sorted(unknown)}")
    encoded = structure.get("arrow_schema")
    if not isinstance(encoded, str):
        raise InvalidContentError("A table's structure needs arrow_schema (base64 text)")
    schema = decode_schema(encoded)
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise InvalidContentError("A table's column names must not repeat")
    columns = structure.get("columns")
    if columns is not None and columns != names:
        raise InvalidContentError(
            f"columns must be the schema's column names, in order: {names[:20]}"
        )
    npartitions = _count(structure.get("npartitions", 0), "npartitions", MAX_PARTITIONS)
    nrows = structure.get("nrows")
    if nrows is not None and (
        not isinstance(nrows, list)
        or len(nrows) != npartitions
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in nrows)
    ):
        raise InvalidContentError("nrows must be a list of npartitions row counts")
    return {
        "arrow_schema": encode_schema(schema),
        "columns": names,
        "npartitions": npartitions,
        "nrows": [0] * npartitions,
    }


def _difference(got: Any, expected: Any) -> str:
    """What first differs between two schemas, for a refusal's message."""
    if got.names != expected.names:
        return f"its columns are {got.names[:20]}, the table's are {expected.names[:20]}"
    for field, wanted in zip(got, expected, strict=False):
        if not field.equals(wanted):
            return f"column {field.name!r} is {field}, the table's is {wanted}"
    return "they differ"


def _field(meta: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is, or None if absent."""
    vtable = table - int(struct.unpack_from("<i", meta, table)[0])
    slot = 4 + 2 * index
    if slot + 2 > struct.unpack_from("<H", meta, vtable)[0]:
        return None
    offset = int(struct.unpack_from("<H", meta, vtable + slot)[0])
    return table + offset if offset else None


def _target(meta: memoryview, at: int) -> int:
    """Where the flatbuffer offset at ``at`` points."""
    return at + int(struct.unpack_from("<I", meta, at)[0])


def _is_compressed(message: Any) -> bool:
    """Whether the IPC ``message`` is a record or dictionary batch with compressed buffers (its
    ``RecordBatch`` table has the ``compression`` field, number 3)."""
    if message.type not in ("record batch", "dictionary"):
        return False
    meta = memoryview(message.metadata)
    header = _field(meta, _target(meta, 0), 2)  # Message.header
    if header is None:
        return False
    batch = _target(meta, header)
    if message.type == "dictionary":
        data = _field(meta, batch, 1)  # DictionaryBatch.data
        if data is None:
            return False
        batch = _target(meta, data)
    return _field(meta, batch, 3) is not None


def refuse_compressed(body: bytes | bytearray | memoryview) -> int:
    """Refuse (:class:`~..catalog.nodes.InvalidContentError`, 422) an IPC stream ``body`` with
    compressed (LZ4, ZSTD) batches, before any is decoded: one could expand to far more than
    it weighs, and the client never sends them. Returns how many bytes of ``body`` its
    messages take, end-of-stream marker included (anything after is not part of it)."""
    source = pyarrow.BufferReader(pyarrow.py_buffer(body))
    try:
        for message in pyarrow.ipc.MessageReader.open_stream(source):
            if _is_compressed(message):
                raise InvalidContentError(
                    "Compressed Arrow IPC bodies are not accepted: send the batches uncompressed"
                )
    except (pyarrow.ArrowException, OSError, struct.error) as exc:  # OSError: invalid IPC
        raise InvalidContentError(f"The body is not a valid Arrow IPC stream: {exc}") from None
    return int(source.tell())


def checked_stream(body: bytearray, schema: Any) -> tuple[bytes | bytearray, int]:
    """A partition's IPC stream ``body`` as it is stored, and its number of rows: ``body``
    itself when it is a whole stream of the table's exact schema message (as the client sends
    it: the partitions of a table then join into one stream, see :func:`joined_spans`), else
    re-encoded with the table's ``schema``, metadata included, its batches as sent. Either way
    it is checked whole first: :class:`~..catalog.nodes.InvalidContentError` (422) if it is
    not an IPC stream, its schema is not the table's (metadata aside), its data is invalid or
    compressed (:func:`refuse_compressed`), or it holds more than :data:`MAX_DECODED_BYTES`."""
    end = refuse_compressed(body)
    try:
        reader = pyarrow.ipc.open_stream(pyarrow.py_buffer(body))
        if not reader.schema.equals(schema, check_metadata=False):
            raise InvalidContentError(
                f"The partition's schema is not the table's: {_difference(reader.schema, schema)}"
            )
        batches = []
        decoded = rows = 0
        for batch in reader:
            decoded += batch.nbytes
            if decoded > MAX_DECODED_BYTES:
                raise InvalidContentError(
                    f"A partition holds at most {MAX_DECODED_BYTES // 2**20} MiB once read"
                )
            batch.validate(full=True)
            rows += batch.num_rows
            batches.append(batch)
    except (pyarrow.ArrowException, OSError) as exc:  # OSError: an invalid IPC message
        raise InvalidContentError(f"The body is not a valid Arrow IPC stream: {exc}") from None
    head = schema.serialize()
    if end == len(body) and body.endswith(EOS) and body[: head.size] == head.to_pybytes():
        return body, rows
    table = pyarrow.Table.from_batches(
        [pyarrow.RecordBatch.from_arrays(batch.columns, schema=schema) for batch in batches],
        schema=schema,
    )
    return table_stream(table), rows


def empty_stream(schema: Any) -> bytes:
    """An IPC stream of ``schema`` without rows (an unwritten partition)."""
    return table_stream(schema.empty_table())


async def stored_partitions(
    blobs: BlobStore, table_id: str, indexes: Sequence[int]
) -> list[tuple[memoryview, str] | None]:
    """The stored streams of the partitions ``indexes`` of the table ``table_id`` (``None`` for
    an unwritten one), with a tag of each: mapped from their files in a directory store (a
    partition rewritten meanwhile keeps, here, the version that was opened), else fetched."""
    keys = [partition_key(table_id, index) for index in indexes]
    paths = [blobs.local_path(key) for key in keys]
    if all(path is not None for path in paths):
        return await anyio.to_thread.run_sync(
            lambda: [map_file(path) for path in paths if path is not None]
        )
    held = [await blobs.get(key) for key in keys]
    return await anyio.to_thread.run_sync(
        lambda: [None if got is None else (got, content_tag(got)) for got in held]
    )


def read_stream(stream: bytes | memoryview, columns: Sequence[str] | None = None) -> Any:
    """A stored partition ``stream`` as a :class:`pyarrow.Table` (of ``columns`` only, in
    that order, if given), its buffers those of ``stream`` (not copied)."""
    _check_whole(stream)
    table = pyarrow.ipc.open_stream(pyarrow.py_buffer(stream)).read_all()
    return table if columns is None else table.select(list(columns))


class DamagedPartitionError(Exception):
    """A stored partition is not whole (changed on disk by something else than this server,
    which writes every one whole): never served as if it were (an answer begun is cut)."""


def _check_whole(stream: bytes | memoryview) -> None:
    # pyarrow takes the end of the buffer for the end of the stream: a file cut at a message
    # boundary would read as fewer rows, silently.
    if stream[-len(EOS) :] != EOS:
        raise DamagedPartitionError("a stored partition has no end-of-stream marker")


def check_columns(schema: Any, columns: Sequence[str]) -> None:
    """:class:`~..errors.InvalidRequestError` (400) if a column is not the table's."""
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise InvalidRequestError(
            f"The table has no column {missing[0][:100]!r}; its columns are {schema.names[:50]}"
        )


def content_tag(stream: bytes | memoryview) -> str:
    """A tag of a partition held in memory (a store that is not a directory): its digest."""
    return hashlib.blake2b(stream, digest_size=16).hexdigest()


def table_tag(node_id: str, structure: Mapping[str, Any], tags: Sequence[str]) -> str:
    """The strong ETag of a whole-table read: the node, its structure, and the ``tags`` of the
    partitions read (so any partition rewritten makes another)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (node_id, json.dumps(structure, sort_keys=True), *tags):
        digest.update(f"{len(part)}:{part};".encode())
    return f'"{digest.hexdigest()}"'


def _schema_length(stream: bytes | memoryview) -> int:
    """How many bytes the schema message at the start of an IPC stream takes."""
    continuation, length = struct.unpack_from("<Ii", stream, 0)
    length = int(length)
    if continuation != 0xFFFFFFFF or length < 0:
        raise ValueError("not an IPC stream written by this server")
    return 8 + length


def joined_spans(streams: Sequence[memoryview]) -> list[memoryview] | None:
    """The spans whose concatenation is the stored partition ``streams`` as one IPC stream:
    the first's schema message, every partition's messages after its own, one end-of-stream.
    ``None`` if they do not all begin with the same schema message (never, for partitions this
    module wrote)."""
    head = _schema_length(streams[0])
    schema_bytes = streams[0][:head]
    spans = [schema_bytes]
    for stream in streams:
        if _schema_length(stream) != head or stream[:head] != schema_bytes:
            return None
        _check_whole(stream)
        spans.append(stream[head : len(stream) - len(EOS)])
    spans.append(memoryview(EOS))
    return spans


def structure_after_write(structure: Mapping[str, Any], index: int, nrows: int) -> dict[str, Any]:
    """A table's structure once partition ``index`` (an existing one, or the next) holds
    ``nrows`` rows."""
    counts = list(structure.get("nrows", []))
    if index == len(counts):
        counts.append(nrows)
    else:
        counts[index] = nrows
    return {**structure, "npartitions": len(counts), "nrows": counts}
