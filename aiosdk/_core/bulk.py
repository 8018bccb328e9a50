"""Bulk bytes both ways, for :mod:`.transport`'s one request path.

A raw request body (``content=``) is sent straight from the caller's buffer, in slices of it,
never copied whole. A downloaded body is handed span by span to a sink, each span as the
transport read it, never joined; a sink that holds one contiguous destination for the whole
body (a :class:`BufferSink`) has the fast transport receive it there, the socket writing
into it. After a broken connection, a ``"forceful"`` download resumes where it stopped with
``Range`` and ``If-Range``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

import anyio
import httpx

from . import errors
from .http11.streams import ResponseStream

__all__ = ["BufferSink", "ContentStream", "Download", "Sink", "raw_body"]

Sink = Callable[[int, bytes], object]
"""Where a download's body goes: ``sink(offset, span)``, once per span, in order."""


class BufferSink(abc.ABC):
    """A sink whose body goes into one writable, C-contiguous buffer, body offset 0 at its
    start: a transport that can (the fast one, for an identity-encoded body) receives the
    body straight into :attr:`buffer` and calls :meth:`filled`; any other span still comes
    through ``sink(offset, span)``. :meth:`begin` is called first, each time a body begins
    at offset 0, so a sink that learns its size from the answer can make its buffer there."""

    __slots__ = ()

    buffer: memoryview | None
    """Where the body goes (unsigned bytes), or None: spans only."""

    @abc.abstractmethod
    def __call__(self, offset: int, span: bytes) -> object:
        """A span received otherwise, to be copied to ``offset``."""

    @abc.abstractmethod
    def filled(self, offset: int, size: int) -> object:
        """``buffer[offset : offset + size]`` was received into the buffer (for progress)."""

    def begin(self, size: int | None) -> None:  # noqa: B027 (a hook: most sinks need none)
        """A body begins at offset 0 (again, after a restart); ``size`` is its length when the
        answer says it and is not encoded, else None. :attr:`buffer` is read after this."""


_JOIN_BELOW = 64 * 1024  # a smaller body is copied once and sent with the request head
_SLICE = 1024 * 1024  # a larger one is sent in slices of the caller's buffer
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ContentStream(httpx.ByteStream):
    """A request body sent from the caller's buffer, one slice of it at a time.

    A ``ByteStream`` (the whole body is at hand, so it can be sent again: the fast transport
    resends it on a fresh connection when a kept-alive one turns out to be closed). Each slice
    is a ``memoryview`` of the buffer, which every transport writes as it would ``bytes``.
    """

    __slots__ = ("_view",)

    def __init__(self, view: memoryview) -> None:
        super().__init__(b"")
        self._view = view

    @property
    def size(self) -> int:
        """The body's length in bytes."""
        return len(self._view)

    def __iter__(self) -> Iterator[bytes]:
        view = self._view
        for start in range(0, len(view), _SLICE):
            yield cast(bytes, view[start : start + _SLICE])

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self:
            yield piece


def raw_body(content: bytes | bytearray | memoryview) -> bytes | ContentStream:
    """A raw request body: a small one as ``bytes`` (sent with the head), else as a stream.

    Any C-contiguous buffer works (a numpy array's ``memoryview`` too): its bytes are sent as
    they lie in memory. The buffer must not change until the call returns.
    """
    view = memoryview(content)
    if not view.c_contiguous:
        raise errors.ConfigurationError("content= must be a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if len(view) < _JOIN_BELOW:
        return content if isinstance(content, bytes) else bytes(view)
    return ContentStream(view)


class Download:
    """One download across its attempts: where the next one starts, and what was received.

    ``received`` counts the bytes of the current body handed to the sink. A body that can be
    resumed (``resumable``: the call may resume, and the answer had a strong ``ETag`` and
    ``Accept-Ranges: bytes``, and no ``Content-Encoding``) is continued after an interruption
    with ``Range: bytes=<received>-`` and ``If-Range: <ETag>``; any other is received again from
    offset 0, as is one the server answers with a ``200`` instead of a ``206``.
    """

    __slots__ = (
        "_etag",
        "_resumable",
        "_sink",
        "expected_size",
        "mismatch",
        "received",
        "response",
    )

    def __init__(self, sink: Sink, *, resumable: bool, expected_size: int | None) -> None:
        self._sink = sink
        self._resumable = resumable
        self._etag: str | None = None
        self.expected_size = expected_size
        self.received = 0
        self.response: httpx.Response | None = None
        """The answer whose body the sink got from offset 0 (for its status and headers)."""
        self.mismatch: str | None = None
        """Why the body is not the size the caller expects, if it is not (never retried)."""

    def range_headers(self) -> dict[str, str]:
        """What the next attempt adds to the request: ``Range``/``If-Range`` when it resumes."""
        if self._etag is None or not self.received:
            return {}
        return {"Range": f"bytes={self.received}-", "If-Range": self._etag}

    async def receive(self, response: httpx.Response, resumed_at: int) -> None:
        """Hand the body of a 2xx ``response`` to the sink, span by span, and close it.

        ``resumed_at`` is the offset the request asked to resume at (0: it did not).
        """
        try:
            if resumed_at and response.status_code == 206:
                self._check_continues(response, resumed_at)
            elif not self._start(response):
                return
            encoded = "content-encoding" in response.headers
            stream = response.stream
            sink = self._sink
            if not encoded and isinstance(stream, ResponseStream) and isinstance(sink, BufferSink):
                buffer = sink.buffer
                while buffer is not None and self.received < len(buffer):
                    size = await stream.receive_into(buffer[self.received :])
                    if not size:
                        break
                    sink.filled(self.received, size)
                    self.received += size
            spans = (
                stream
                if not encoded and isinstance(stream, httpx.AsyncByteStream)
                else response.aiter_bytes()
            )
            async for span in spans:  # (all of it, or what did not go into a buffer)
                sink(self.received, span)
                self.received += len(span)
        finally:
            # At once, even when cancelled: a half-read connection is closed, never reused.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if self.expected_size is not None and self.received != self.expected_size:
            self.mismatch = f"the body has {self.received} bytes, not {self.expected_size}"

    def _start(self, response: httpx.Response) -> bool:
        """A body from offset 0 begins; False if it is not the size the caller expects."""
        self.received = 0
        self.response = response
        headers = response.headers
        encoded = "content-encoding" in headers
        length = headers.get("content-length", "")
        expected = self.expected_size
        if expected is not None and not encoded and length.isdigit() and int(length) != expected:
            self.mismatch = f"the body has {int(length)} bytes, not {expected}"
            return False
        etag = headers.get("etag")
        ranges = {unit.strip().lower() for unit in headers.get("accept-ranges", "").split(",")}
        self._etag = (
            etag
            if self._resumable
            and response.status_code == 200
            and etag
            and not etag.startswith("W/")  # If-Range takes a strong validator only
            and "bytes" in ranges
            and not encoded
            else None
        )
        if isinstance(self._sink, BufferSink):
            self._sink.begin(int(length) if length.isdigit() and not encoded else None)
        return True

    def _check_continues(self, response: httpx.Response, resumed_at: int) -> None:
        """A ``206`` must continue the body exactly where it stopped."""
        found = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if found is None or int(found[1]) != resumed_at:
            self._etag = None  # not resumed again: the next attempt starts over from 0
            raise errors.ProtocolError(
                f"a resumed download asked for bytes from {resumed_at} and got Content-Range"
                f" {response.headers.get('content-range')!r}"
            )
