"""Negotiated ``zstd`` compression of data reads (RFC 9110 §8.4, §12.5.3; RFC 8878).

A data read (an array block or selection, a table partition or the whole table) goes out
compressed, ``Content-Encoding: zstd``, only when the request's ``Accept-Encoding`` allows
``zstd`` (``zstd;q=0`` refuses it; ``*`` counts when ``zstd`` is not named) and the body is
worth it: its first :data:`PROBE_BYTES` are compressed first (level :data:`LEVEL`, in a worker
thread), and unless that comes to less than :data:`WORTH` of their size the body goes out as
it is. Random floats do not compress: 16 MiB of ``numpy.random.random`` float64 comes out of
zstd level 1 at 93.9% of its size (measured here), ``numpy.arange`` float64 at 12.0%, zeros at
0.003%; so the probe sends random data raw at the cost of compressing 1 MiB of it once.

Only the identity form has ``Range`` (a request with a ``Range`` is answered unencoded, so an
interrupted download resumes on the same bytes), and a HEAD is answered with the identity
form's headers (nothing is compressed to answer it). Every answer of these routes says
``Vary: Accept-Encoding``; an encoded one's ``ETag`` is the identity one's with ``-zstd``
added inside the quotes, and it has no ``Content-Length`` (it is compressed as it is sent,
:data:`PROBE_BYTES` at a time, each piece in a worker thread).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.responses import Response

from ..errors import AnswerCutShort
from .bodies import HEAD_REQUEST, StreamedResponse

__all__ = [
    "ENCODING_HEADERS",
    "LEVEL",
    "PROBE_BYTES",
    "VARY",
    "WORTH",
    "accepts_zstd",
    "encoded_etag",
    "etag_matches",
    "named_etag",
    "negotiated",
]

ZSTD = "zstd"
LEVEL = 1
"""The zstd level: level 3 compressed ``arange`` and random floats no smaller than level 1
(12.1% and 94.0% against 12.0% and 93.9%), and random ones at about half its speed."""
PROBE_BYTES = 1024 * 1024
"""The body is compressed this much at a time; the first piece decides."""
WORTH = 0.9
"""An encoded body is sent only if its probe compressed below this fraction of its size."""
MIN_BYTES = 4096
"""A smaller body is never compressed (the thread hop costs more than the bytes saved)."""
VARY = {"Vary": "Accept-Encoding"}

ENCODING_HEADERS: dict[str, dict[str, Any]] = {
    "Content-Encoding": {
        "description": "zstd when the request's Accept-Encoding allows it (without Range) and"
        " the data compresses (to under 90% of its size); absent otherwise",
        "schema": {"type": "string", "enum": [ZSTD]},
    },
    "Vary": {"description": "Accept-Encoding", "schema": {"type": "string"}},
}
"""The headers the negotiation adds, for the OpenAPI document of a 200."""

_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")


def _zstandard() -> ModuleType | None:
    try:
        return importlib.import_module("zstandard")
    except ImportError:  # (the server extra has it; without it, nothing is compressed)
        return None


def accepts_zstd(headers: Headers) -> bool:
    """Whether ``Accept-Encoding`` allows ``zstd`` (a q-value above 0: its own, else that of
    ``*``); never with a ``Range`` (ranges are of the identity form only)."""
    if "range" in headers:
        return False
    header = headers.get("accept-encoding")
    if not header:
        return False  # (no header: any coding is allowed, but none is used unasked)
    named: float | None = None
    star: float | None = None
    for item in header.split(","):
        name, *parameters = item.split(";")
        q = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else -1.0
        if q < 0:
            continue  # a malformed q-value: the item is ignored
        coding = name.strip().lower()
        if coding == ZSTD:
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q if star is None else max(star, q)
    chosen = named if named is not None else star
    return chosen is not None and chosen > 0


def encoded_etag(etag: str) -> str:
    """The ETag of the zstd form of the data tagged ``etag``: ``"abc"`` → ``"abc-zstd"``."""
    if etag.endswith('"'):
        return f'{etag[:-1]}-{ZSTD}"'
    return f"{etag}-{ZSTD}"


def named_etag(headers: Headers, *tags: str) -> str | None:
    """The first of ``tags`` that the request's ``If-None-Match`` names (compared weakly, as
    RFC 9110 has it; ``*`` names any), or ``None``."""
    wanted = headers.get("if-none-match")
    if wanted is None or not tags:
        return None
    named = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
    if "*" in named:
        return tags[0]
    return next((tag for tag in tags if tag.removeprefix("W/") in named), None)


def etag_matches(headers: Headers, etag: str) -> str | None:
    """The tag (``etag``, or its zstd form's) that ``If-None-Match`` names, if it names one."""
    return named_etag(headers, etag, encoded_etag(etag))


async def _pieces(spans: AsyncIterator[memoryview]) -> AsyncIterator[memoryview]:
    """``spans`` cut into pieces of at most :data:`PROBE_BYTES` (not copied)."""
    async for span in spans:
        for start in range(0, len(span), PROBE_BYTES):
            yield span[start : start + PROBE_BYTES]


async def negotiated(
    request: Any,
    pieces: Callable[[], AsyncIterator[memoryview]],
    size: int,
    headers: dict[str, str],
    media_type: str,
) -> Response | None:
    """The zstd-encoded 200 answer of a body of ``size`` bytes that ``pieces()`` yields, or
    its identity answer when the probe says it does not compress; ``None`` when the request
    does not allow zstd (or is a HEAD, or the body is small): the caller answers as usual.
    ``headers`` are the identity answer's (with its ``ETag``, if any)."""
    scope = request.scope
    if size < MIN_BYTES or scope.get(HEAD_REQUEST) or not accepts_zstd(request.headers):
        return None
    zstd = _zstandard()
    if zstd is None:
        return None
    source = _pieces(pieces())
    try:
        first = await anext(source, None)
    except AnswerCutShort:
        # (the data changed under the probe: answered as usual, where the identity answer is
        # cut short once begun, as any answer whose data changes while it is sent)
        return None
    if first is None:
        return None  # (cannot be: size > 0; answered as usual)
    compressor = zstd.ZstdCompressor(level=LEVEL).compressobj()
    flush_block = zstd.COMPRESSOBJ_FLUSH_BLOCK

    def compress(piece: memoryview) -> bytes:
        return bytes(compressor.compress(piece) + compressor.flush(flush_block))

    probe = await anyio.to_thread.run_sync(compress, first)
    # (held in a list, dropped once sent: a view of it would keep its whole slab alive)
    held: list[Any] = [first]
    if len(probe) >= WORTH * len(first):
        del first, probe

        async def raw() -> AsyncIterator[memoryview]:
            yield held.pop()
            async for piece in source:
                yield piece

        return StreamedResponse(raw, size, 200, headers, media_type)
    held[0] = probe
    del first, probe

    async def encoded() -> AsyncIterator[bytes]:
        yield held.pop()
        async for piece in source:
            out = await anyio.to_thread.run_sync(compress, piece)
            if out:
                yield out
        yield bytes(compressor.flush(zstd.COMPRESSOBJ_FLUSH_FINISH))

    encoded_headers = {**headers, "Content-Encoding": ZSTD}
    if "ETag" in encoded_headers:
        encoded_headers["ETag"] = encoded_etag(encoded_headers["ETag"])
    return StreamedResponse(encoded, None, 200, encoded_headers, media_type)
