"""The bytes of a ticket, shared by the client (its ticket classes) and the server (which checks
them). Pure: no import of the client's or the server's code.

The layout is Deephaven's, so tickets read the same in both worlds:

- an export ticket: ``b"e"`` and its export number, a 4-byte little-endian unsigned integer
  (1 or more);
- a scope ticket: ``b"s/"`` and the variable's name in UTF-8 (a valid catalog key);
- an application ticket: ``b"a/"``, the application id, ``b"/f/"`` and the field's name (both
  valid catalog keys; the id holds no ``"/f/"``);
- a shared ticket: ``b"h"`` and 16 to 64 random bytes (:func:`random_shared` takes a UUID's 16).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Literal

from .keys import key_problem

__all__ = [
    "MAX_EXPORT_NUMBER",
    "MAX_TICKET_BYTES",
    "ParsedTicket",
    "TicketKind",
    "application_bytes",
    "export_bytes",
    "parse_ticket",
    "random_shared",
    "scope_bytes",
    "shared_bytes",
]

TicketKind = Literal["export", "scope", "application", "shared"]
MAX_EXPORT_NUMBER = 2**32 - 1
MAX_TICKET_BYTES = 1024
"""No ticket is longer (a scope name or an application field is at most 255 characters)."""
_SHARED_MIN, _SHARED_MAX = 16, 64
_EXPORT = struct.Struct("<I")


@dataclass(frozen=True)
class ParsedTicket:
    """What a ticket's bytes say: its kind and the fields of that kind (the others ``None``)."""

    kind: TicketKind
    number: int | None = None
    """An export ticket's export number."""
    name: str | None = None
    """A scope ticket's variable name."""
    app_id: str | None = None
    field: str | None = None
    """An application ticket's application id and field name."""


def _check_number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"an export number is an int, not {type(number).__name__}")
    if not 1 <= number <= MAX_EXPORT_NUMBER:
        raise ValueError(f"an export number is 1 to {MAX_EXPORT_NUMBER}, not {number}")
    return number


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is a str, not {type(value).__name__}")
    problem = key_problem(value)
    if problem is not None:
        raise ValueError(f"invalid {what} {value[:100]!r}: {problem}")
    return value


def export_bytes(number: int) -> bytes:
    """The bytes of export ticket ``number``."""
    return b"e" + _EXPORT.pack(_check_number(number))


def scope_bytes(name: str) -> bytes:
    """The bytes of the scope ticket of variable ``name``."""
    return b"s/" + _check_name(name, "scope variable name").encode()


def application_bytes(app_id: str, field: str) -> bytes:
    """The bytes of the ticket of ``field`` of application ``app_id``."""
    _check_name(app_id, "application id")
    if "/f/" in app_id:
        raise ValueError(f"an application id must not contain '/f/': {app_id[:100]!r}")
    return b"a/" + app_id.encode() + b"/f/" + _check_name(field, "application field").encode()


def shared_bytes(token: bytes) -> bytes:
    """The bytes of the shared ticket whose random part is ``token``."""
    if not _SHARED_MIN <= len(token) <= _SHARED_MAX:
        raise ValueError(
            f"a shared ticket's random part is {_SHARED_MIN} to {_SHARED_MAX} bytes,"
            f" not {len(token)}"
        )
    return b"h" + bytes(token)


def random_shared() -> bytes:
    """The bytes of a new shared ticket, made from a random UUID."""
    return shared_bytes(uuid.uuid4().bytes)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ValueError(f"malformed ticket: the {what} is not UTF-8") from None


def parse_ticket(data: bytes) -> ParsedTicket:
    """What ``data`` says, or :class:`ValueError` naming why it is no ticket."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a ticket is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("malformed ticket: it is empty")
    if len(data) > MAX_TICKET_BYTES:
        raise ValueError(f"malformed ticket: over {MAX_TICKET_BYTES} bytes")
    prefix = data[:1]
    if prefix == b"e":
        if len(data) != 1 + _EXPORT.size:
            raise ValueError(
                f"malformed export ticket: b'e' and a 4-byte number, not {len(data)} bytes"
            )
        (number,) = _EXPORT.unpack(data[1:])
        if number == 0:
            raise ValueError("malformed export ticket: export number 0 is never used")
        return ParsedTicket("export", number=number)
    if prefix == b"h":
        if not _SHARED_MIN <= len(data) - 1 <= _SHARED_MAX:
            raise ValueError(
                f"malformed shared ticket: b'h' and {_SHARED_MIN} to {_SHARED_MAX} bytes"
            )
        return ParsedTicket("shared")
    if data.startswith(b"s/"):
        name = _text(data[2:], "scope variable name")
        try:
            _check_name(name, "scope variable name")
        except ValueError as exc:
            raise ValueError(f"malformed scope ticket: {exc}") from None
        return ParsedTicket("scope", name=name)
    if data.startswith(b"a/"):
        app_id, separator, field = _text(data[2:], "application reference").partition("/f/")
        if not separator:
            raise ValueError("malformed application ticket: b'a/<app id>/f/<field>' expected")
        try:
            _check_name(app_id, "application id")
            _check_name(field, "application field")
        except ValueError as exc:
            raise ValueError(f"malformed application ticket: {exc}") from None
        return ParsedTicket("application", app_id=app_id, field=field)
    raise ValueError(
        f"malformed ticket: it starts with {data[:2]!r}; a ticket starts with b'e' (export),"
        " b's/' (scope), b'a/' (application) or b'h' (shared)"
    )
