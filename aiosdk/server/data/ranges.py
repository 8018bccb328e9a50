"""``Range`` requests on data reads (RFC 9110 §14): one byte range of a body, ``If-Range``.

A reader that lost its connection asks for the rest with ``Range: bytes=<received>-`` and
``If-Range: <the ETag it got>``: the answer is 206 with that part when the ETag still matches,
the whole body (200) when the data changed meanwhile. A range the body cannot satisfy is 416
with ``Content-Range: bytes */<size>``. A ``Range`` the server does not understand (another
unit, several ranges, a malformed one) is ignored, as the RFC allows: the whole body is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from ..errors import ApiError

__all__ = ["ByteRange", "RangeNotSatisfiableError", "requested_range"]

_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class RangeNotSatisfiableError(ApiError):
    """A ``Range`` beyond the end of the body (416)."""

    status = 416
    error_type = "invalid_request"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"The range is not satisfiable: the body is {size:,} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` up to (not including) ``stop`` of a body of ``size`` bytes."""

    start: int
    stop: int
    size: int

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header of the answer."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


def requested_range(headers: Headers, size: int, etag: str | None) -> ByteRange | None:
    """The range of a body of ``size`` bytes (tagged ``etag``) to answer with, or ``None``
    for the whole body; :class:`RangeNotSatisfiableError` for one past its end."""
    header = headers.get("range")
    if header is None:
        return None
    if_range = headers.get("if-range")
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return None  # changed (or a date, which data reads do not keep): the whole body
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)  # the last n bytes
        if suffix == 0 or size == 0:  # (no byte to send: RFC 9110 §14.1.3)
            raise RangeNotSatisfiableError(size)
        return ByteRange(max(size - suffix, 0), size, size)
    start = int(first)
    stop = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiableError(size)
    return ByteRange(start, stop, size)
