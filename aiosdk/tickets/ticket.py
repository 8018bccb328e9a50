"""Tickets: references to objects kept on the server, as bytes.

A ticket is a few bytes with Deephaven's layout (:mod:`aiosdk._core.ticket_bytes`, which the
server checks them with too), wrapped in a class per kind:

- :class:`ExportTicket`: an object a session exported (``b"e"`` and its export number); it
  lives until the session releases it or ends.
- :class:`ScopeTicket`: a scope variable, global on the server (``b"s/"`` and its name).
- :class:`ApplicationTicket`: a field of an application, a server-side plugin
  (``b"a/<app id>/f/<field>"``).
- :class:`SharedTicket`: an export published for other sessions (``b"h"`` and random bytes: a
  bearer secret among the users who may read what it refers to, so its repr never shows them).

Tickets compare and hash by kind and bytes, and round-trip through their bytes
(:meth:`Ticket.from_bytes`, which picks the class) and protobuf (:attr:`Ticket.pb_ticket`,
:meth:`Ticket.from_pb`). Bytes that are no ticket, or no ticket of the class asked for, are a
:class:`~aiosdk.MalformedTicketError` naming the problem. :class:`ServerObject` pairs a ticket
with the type of the object it refers to (a plugin object's, such as ``"Counter"``).
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar, cast

from typing_extensions import Self

from .._core import ticket_bytes as codec
from .._core.errors import MalformedTicketError
from ..proto import Ticket as WireTicket
from ..proto import TypedTicket as WireTypedTicket

__all__ = [
    "ApplicationTicket",
    "ExportTicket",
    "ScopeTicket",
    "ServerObject",
    "SharedTicket",
    "Ticket",
]

A = TypeVar("A")


def _parse(data: builtins.bytes) -> codec.ParsedTicket:
    try:
        return codec.parse_ticket(data)
    except ValueError as exc:
        raise MalformedTicketError(str(exc)) from None


def _made(make: Callable[[A], builtins.bytes], value: A) -> builtins.bytes:
    """``make(value)``: a ticket's bytes from its parts, a bad part a MalformedTicketError."""
    try:
        return make(value)
    except ValueError as exc:
        raise MalformedTicketError(str(exc)) from None


class Ticket:
    """A ticket: the bytes that name an object on the server. The base class of the four kinds;
    :meth:`from_bytes` makes the one its bytes are.

    Equal tickets are of the same kind with the same bytes, and hash alike.
    """

    __slots__ = ("_bytes", "_parsed")
    _kind: ClassVar[codec.TicketKind | None] = None

    def __init__(self, ticket_bytes: builtins.bytes) -> None:
        """The ticket whose bytes are ``ticket_bytes``: a :class:`~aiosdk.MalformedTicketError`
        if they are no ticket of this class."""
        kind = type(self)._kind
        if kind is None:
            raise TypeError("Ticket is abstract: use Ticket.from_bytes(), or a ticket class")
        parsed = _parse(ticket_bytes)
        if parsed.kind != kind:
            raise _wrong_kind(type(self), kind, parsed.kind)
        self._bytes = builtins.bytes(ticket_bytes)
        self._parsed = parsed

    @classmethod
    def from_bytes(cls, ticket_bytes: builtins.bytes) -> Self:
        """The ticket ``ticket_bytes`` are, as its own class (``Ticket.from_bytes(b"e...")`` is
        an :class:`ExportTicket`); from a subclass, only a ticket of that class."""
        kind = _parse(ticket_bytes).kind
        found = _CLASSES[kind]
        if cls._kind is not None and not issubclass(found, cls):
            raise _wrong_kind(cls, cls._kind, kind)
        return found(ticket_bytes)  # type: ignore[return-value]  # a subclass of cls

    @classmethod
    def from_pb(cls, pb_ticket: WireTicket) -> Self:
        """The ticket a protobuf ``Ticket`` carries (as :meth:`from_bytes`)."""
        return cls.from_bytes(pb_ticket.ticket)

    @property
    def bytes(self) -> builtins.bytes:
        """The ticket's raw bytes (a shared ticket's include its secret part)."""
        return self._bytes

    @property
    def pb_ticket(self) -> WireTicket:
        """The ticket as a protobuf ``Ticket`` (a new message each time)."""
        return WireTicket(ticket=self._bytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ticket):
            return NotImplemented
        return self._kind == other._kind and self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash((self._kind, self._bytes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_bytes({self._bytes!r})"


def _wrong_kind(
    cls: type[Ticket], wanted: codec.TicketKind, got: codec.TicketKind
) -> MalformedTicketError:
    return MalformedTicketError(
        f"malformed ticket: {cls.__name__} needs the bytes of {_A[wanted]} {wanted} ticket, not"
        f" of {_A[got]} {got} ticket"
    )


_A = {"export": "an", "scope": "a", "application": "an", "shared": "a"}


class ExportTicket(Ticket):
    """A ticket of an object a session exported (``b"e"`` and the export number, 4 bytes
    little-endian). It means something in its session only, until released or the session
    ends: sessions hand them out (``await session.export(...)``, ``query``, ``fetch``), and
    :meth:`~aiosdk.AsyncSession.publish` shares one with other sessions."""

    __slots__ = ()
    _kind = "export"

    @classmethod
    def export_ticket(cls, ticket_no: int) -> ExportTicket:
        """The export ticket of export number ``ticket_no`` (1 to 2**32 - 1)."""
        return cls(_made(codec.export_bytes, ticket_no))

    @property
    def number(self) -> int:
        """The export number."""
        return cast(int, self._parsed.number)

    def __repr__(self) -> str:
        return f"ExportTicket(number={self.number})"


class ScopeTicket(Ticket):
    """A ticket of a scope variable (``b"s/"`` and its name): a name on the server, global to
    every session and user, bound with :meth:`~aiosdk.AsyncSession.bind` and fetched by those
    who may read what it refers to."""

    __slots__ = ()
    _kind = "scope"

    @classmethod
    def scope_ticket(cls, name: str) -> ScopeTicket:
        """The ticket of the scope variable ``name`` (1 to 255 characters, as a catalog key)."""
        return cls(_made(codec.scope_bytes, name))

    @property
    def name(self) -> str:
        """The scope variable's name."""
        return cast(str, self._parsed.name)

    def __repr__(self) -> str:
        return f"ScopeTicket(name={self.name!r})"


class ApplicationTicket(Ticket):
    """A ticket of a field of an application, a plugin the server runs
    (``b"a/<app id>/f/<field>"``): a table, an array or a plugin object it makes.
    :meth:`~aiosdk.AsyncSession.applications` lists them."""

    __slots__ = ()
    _kind = "application"

    @classmethod
    def app_ticket(cls, app_id: str, field: str) -> ApplicationTicket:
        """The ticket of ``field`` of the application ``app_id``."""
        return cls(_made(lambda parts: codec.application_bytes(*parts), (app_id, field)))

    @property
    def app_id(self) -> str:
        """The application's id."""
        return cast(str, self._parsed.app_id)

    @property
    def field(self) -> str:
        """The field's name."""
        return cast(str, self._parsed.field)

    def __repr__(self) -> str:
        return f"ApplicationTicket(app_id={self.app_id!r}, field={self.field!r})"


class SharedTicket(Ticket):
    """A ticket that other sessions can fetch (``b"h"`` and 16 to 64 random bytes).

    :meth:`~aiosdk.AsyncSession.publish` makes it refer to an export, until that export is
    released; a session of any user who may read what it refers to can fetch it. Its bytes are
    a bearer secret among them: hand them over as you would a password. Its repr shows only a
    digest of them.
    """

    __slots__ = ()
    _kind = "shared"

    @classmethod
    def random_ticket(cls) -> SharedTicket:
        """A new shared ticket, made from a random UUID (so two never collide)."""
        return cls(codec.random_shared())

    def __repr__(self) -> str:
        digest = hashlib.sha256(self._bytes).hexdigest()[:12]
        return f"SharedTicket(<secret>, sha256={digest})"


_CLASSES: dict[str, type[Ticket]] = {
    "export": ExportTicket,
    "scope": ScopeTicket,
    "application": ApplicationTicket,
    "shared": SharedTicket,
}


@dataclass(frozen=True)
class ServerObject:
    """A typed ticket: an object on the server and its type.

    It refers to a plugin object (an application's, such as the built-in ``"Counter"``) for
    :meth:`~aiosdk.AsyncSession.fetch_object`.

    Attributes:
        type: the object's type (``"Counter"``; ``"table"`` or ``"array"`` for data); ``None``
            when not known, which only a session that exported it can look up.
        ticket: the ticket that refers to it (an export, scope, application or shared one).
    """

    type: str | None
    ticket: Ticket

    def __post_init__(self) -> None:
        if not isinstance(self.ticket, Ticket):
            raise TypeError(f"a ServerObject's ticket is a Ticket, not {self.ticket!r}")
        if self.type is not None and not isinstance(self.type, str):
            raise TypeError(f"a ServerObject's type is a str or None, not {self.type!r}")

    @property
    def pb_ticket(self) -> WireTicket:
        """The ticket as a protobuf ``Ticket``."""
        return self.ticket.pb_ticket

    @property
    def pb_typed_ticket(self) -> WireTypedTicket:
        """The ticket and type as a protobuf ``TypedTicket`` (``type`` ``""`` when unknown)."""
        return WireTypedTicket(ticket=self.ticket.pb_ticket, type=self.type or "")
