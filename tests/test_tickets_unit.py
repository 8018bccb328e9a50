"""The ticket classes and the session's pure logic, without a server: bytes and protobuf round
trips, equality and hashing, malformed bytes, secrets kept out of reprs, and the checks a
session makes before it sends anything."""

from __future__ import annotations

import pickle
import struct
import uuid

import numpy as np
import pytest

import aiosdk
from aiosdk import (
    ApplicationTicket,
    ExportTicket,
    Key,
    MalformedTicketError,
    ScopeTicket,
    ServerObject,
    SharedTicket,
    Ticket,
)
from aiosdk.proto import AxisSelection, SortKey
from aiosdk.proto import Ticket as WireTicket
from aiosdk.proto import TypedTicket as WireTypedTicket
from aiosdk.tickets.session import _array_view, _table_view

TICKETS: list[Ticket] = [
    ExportTicket.export_ticket(1),
    ExportTicket.export_ticket(2**32 - 1),
    ScopeTicket.scope_ticket("latest_events"),
    ScopeTicket.scope_ticket("été ünïcode"),
    ApplicationTicket.app_ticket("stats", "summary"),
    SharedTicket(b"h" + uuid.UUID(int=42).bytes),
    SharedTicket(b"h" + bytes(range(64))),
]

# -- bytes -----------------------------------------------------------------------------------


def test_the_bytes_are_deephavens_layout() -> None:
    assert ExportTicket.export_ticket(3).bytes == b"e" + struct.pack("<I", 3)
    assert ExportTicket.export_ticket(3).number == 3
    assert ScopeTicket.scope_ticket("x").bytes == b"s/x"
    assert ScopeTicket.scope_ticket("x").name == "x"
    app = ApplicationTicket.app_ticket("stats", "counter")
    assert app.bytes == b"a/stats/f/counter"
    assert (app.app_id, app.field) == ("stats", "counter")
    shared = SharedTicket.random_ticket()
    assert shared.bytes[:1] == b"h"
    assert len(shared.bytes) == 17
    uuid.UUID(bytes=shared.bytes[1:])  # a UUID's bytes


@pytest.mark.parametrize("ticket", TICKETS, ids=lambda t: f"{type(t).__name__}{len(t.bytes)}")
def test_tickets_round_trip_through_bytes_and_protobuf(ticket: Ticket) -> None:
    again = Ticket.from_bytes(ticket.bytes)
    assert type(again) is type(ticket)
    assert again == ticket
    assert type(ticket).from_bytes(ticket.bytes) == ticket
    assert type(ticket)(ticket.bytes) == ticket
    pb = ticket.pb_ticket
    assert isinstance(pb, WireTicket)
    assert pb.ticket == ticket.bytes
    decoded = WireTicket.parse(bytes(pb))
    assert Ticket.from_pb(decoded) == ticket
    assert pickle.loads(pickle.dumps(ticket)) == ticket


def test_from_bytes_takes_any_bytes_like() -> None:
    raw = ExportTicket.export_ticket(7).bytes
    assert Ticket.from_bytes(bytearray(raw)) == ExportTicket.export_ticket(7)
    assert Ticket.from_bytes(memoryview(raw)).bytes == raw
    assert isinstance(ExportTicket(bytearray(raw)).bytes, bytes)


def test_equality_and_hashing_are_by_kind_and_bytes() -> None:
    assert ExportTicket.export_ticket(5) == ExportTicket.export_ticket(5)
    assert ExportTicket.export_ticket(5) != ExportTicket.export_ticket(6)
    assert hash(ExportTicket.export_ticket(5)) == hash(ExportTicket.export_ticket(5))
    assert len({*TICKETS, *(Ticket.from_bytes(t.bytes) for t in TICKETS)}) == len(TICKETS)
    assert ScopeTicket.scope_ticket("a") != ApplicationTicket.app_ticket("a", "b")
    assert ExportTicket.export_ticket(1) != b"e\x01\x00\x00\x00"  # a ticket is not its bytes
    assert SharedTicket.random_ticket() != SharedTicket.random_ticket()
    lookup = {ExportTicket.export_ticket(9): "nine"}
    assert lookup[Ticket.from_bytes(b"e\x09\x00\x00\x00")] == "nine"


def test_reprs_say_what_a_ticket_is_but_never_a_shared_secret() -> None:
    assert repr(ExportTicket.export_ticket(3)) == "ExportTicket(number=3)"
    assert repr(ScopeTicket.scope_ticket("x")) == "ScopeTicket(name='x')"
    assert repr(ApplicationTicket.app_ticket("stats", "summary")) == (
        "ApplicationTicket(app_id='stats', field='summary')"
    )
    secret = bytes(range(1, 17))
    shared = SharedTicket(b"h" + secret)
    for text in (repr(shared), str(shared), repr([shared]), repr(ServerObject("t", shared))):
        assert secret.hex() not in text
        assert repr(secret)[2:-1] not in text
        assert "SharedTicket(<secret>" in text
    assert repr(shared) == repr(SharedTicket(shared.bytes))  # a digest: the same for equal ones
    assert repr(shared) != repr(SharedTicket.random_ticket())


# -- malformed bytes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"e\x01\x00", "4-byte number"),
        (b"e\x00\x00\x00\x00", "export number 0"),
        (b"h" + b"\x00" * 15, "16 to 64 bytes"),
        (b"h" + b"\x00" * 65, "16 to 64 bytes"),
        (b"s/", "scope"),
        (b"s/a/b", "scope"),
        (b"s/\xff", "not UTF-8"),
        (b"a/stats", "b'a/<app id>/f/<field>' expected"),
        (b"a/stats/f/", "application"),
        (b"x/whatever", "starts with b'x/'"),
        (b"s/" + b"n" * 2000, "over 1024 bytes"),
    ],
)
def test_malformed_bytes_are_refused_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(MalformedTicketError, match="malformed") as caught:
        Ticket.from_bytes(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, aiosdk.AiosdkError)


def test_bytes_of_another_kind_are_refused_by_a_ticket_class() -> None:
    export = ExportTicket.export_ticket(1).bytes
    with pytest.raises(MalformedTicketError, match="ScopeTicket needs the bytes of a scope"):
        ScopeTicket(export)
    with pytest.raises(MalformedTicketError, match="of an export ticket"):
        SharedTicket.from_bytes(export)
    with pytest.raises(MalformedTicketError, match="ExportTicket needs the bytes of an export"):
        ExportTicket.from_pb(WireTicket(ticket=b"s/x"))


def test_tickets_made_from_bad_parts_are_refused() -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(MalformedTicketError, match="export number"):
            ExportTicket.export_ticket(bad)
    with pytest.raises(TypeError):
        ExportTicket.export_ticket(True)
    with pytest.raises(MalformedTicketError, match="scope variable name"):
        ScopeTicket.scope_ticket("a/b")
    with pytest.raises(MalformedTicketError, match="scope variable name"):
        ScopeTicket.scope_ticket("x" * 256)
    with pytest.raises(MalformedTicketError, match="application id"):
        ApplicationTicket.app_ticket("a/f/b", "c")  # (no key holds a '/')
    with pytest.raises(MalformedTicketError, match="application field"):
        ApplicationTicket.app_ticket("stats", "")
    with pytest.raises(TypeError):
        Ticket.from_bytes("e1234")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="abstract"):
        Ticket(b"s/x")


# -- server objects --------------------------------------------------------------------------


def test_a_server_object_is_a_typed_ticket() -> None:
    ticket = ApplicationTicket.app_ticket("stats", "counter")
    obj = ServerObject(type="Counter", ticket=ticket)
    assert obj.pb_ticket == ticket.pb_ticket
    typed = obj.pb_typed_ticket
    assert isinstance(typed, WireTypedTicket)
    assert typed.type == "Counter"
    assert typed.ticket is not None
    assert typed.ticket.ticket == ticket.bytes
    assert ServerObject(None, ticket).pb_typed_ticket.type == ""
    assert obj == ServerObject("Counter", ApplicationTicket.app_ticket("stats", "counter"))
    assert hash(obj) == hash(ServerObject("Counter", ticket))
    with pytest.raises(AttributeError):
        obj.type = "Other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="a Ticket"):
        ServerObject("Counter", b"a/stats/f/counter")  # type: ignore[arg-type]


# -- views, as the session sends them -------------------------------------------------------


def test_a_table_query_goes_on_the_wire_as_a_table_view() -> None:
    view = _table_view(Key("v") > 3, ["t", "v"], "-t", 1000, None)
    assert view.columns == ["t", "v"]
    assert view.where_json == '[{"op":"gt","key":"v","value":3}]'
    assert view.sort == [SortKey(column="t", descending=True)]
    assert (view.head, view.tail) == (1000, None)
    several = _table_view([Key("a") == 1, Key("b").in_([1, 2])], None, ["-t", "v"], None, 0)
    assert len(several.where_json) > 0
    assert [(k.column, k.descending) for k in several.sort] == [("t", True), ("v", False)]
    assert (several.head, several.tail, several.columns) == (None, 0, [])
    assert _table_view(None, None, None, np.int64(5), None).head == 5
    assert _table_view(None, None, None, None, None).where_json == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"head": 1, "tail": 1}, "not both"),
        ({"head": -1}, "0 or more"),
        ({"head": True}, "an int"),
        ({"columns": "t"}, "a list of column names"),
        ({"columns": ["t", ""]}, "non-empty"),
        ({"sort": ["-"]}, "non-empty"),
        ({"where": "v > 3"}, "not a query"),
    ],
)
def test_bad_table_queries_are_refused_before_sending(
    arguments: dict[str, object], message: str
) -> None:
    full = {"where": None, "columns": None, "sort": None, "head": None, "tail": None} | arguments
    with pytest.raises(aiosdk.ConfigurationError, match=message):
        _table_view(**full)  # type: ignore[arg-type]


def test_an_array_query_goes_on_the_wire_as_an_array_view() -> None:
    view = _array_view(np.s_[10:20, ::2], "sum", 0)
    assert view.selection == [
        AxisSelection(start=10, stop=20, step=None),
        AxisSelection(start=None, stop=None, step=2),
    ]
    assert (view.reduce, view.axis) == ("sum", 0)
    single = _array_view(np.int64(-3), None, None)
    assert single.selection == [AxisSelection(index=-3)]
    assert (single.reduce, single.axis) == (None, None)
    assert _array_view(None, "mean", None).selection == []
    assert _array_view((3, slice(None, -1)), None, None).selection == [
        AxisSelection(index=3),
        AxisSelection(start=None, stop=-1, step=None),
    ]


@pytest.mark.parametrize(
    ("selection", "reduce", "axis", "message"),
    [
        (np.s_[..., 0], None, None, "no '...'"),
        (np.s_[None, 0], None, None, "no '...', None"),
        (True, None, None, "boolean"),
        (np.array([1, 2]), None, None, "array indices"),
        (slice(0, 10, 0), None, None, "step cannot be zero"),
        (slice(0.5, 10), None, None, "an int"),
        (None, "median", None, "reduce is one of"),
        (None, None, 0, "give reduce too"),
        (None, "sum", 1.5, "an int"),
    ],
)
def test_bad_array_queries_are_refused_before_sending(
    selection: object, reduce: str | None, axis: object, message: str
) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match=message):
        _array_view(selection, reduce, axis)  # type: ignore[arg-type]


# -- a session, before it is open ------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "300"])
def test_a_session_ttl_is_a_positive_number(ttl: object) -> None:
    client = aiosdk.AsyncClient("http://127.0.0.1:9", token="aio_unused")
    with pytest.raises(aiosdk.ConfigurationError, match="ttl"):
        client.session(ttl=ttl)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_session_that_is_not_open_takes_no_call() -> None:
    client = aiosdk.AsyncClient("http://127.0.0.1:9", token="aio_unused")  # never reached
    session = client.session(ttl=5)
    assert not session.closed
    assert "not open" in repr(session)
    with pytest.raises(aiosdk.SessionClosedError, match="not open"):
        _ = session.session_id
    with pytest.raises(aiosdk.SessionClosedError, match="not open"):
        await session.export("alice/x")
    with pytest.raises(aiosdk.SessionClosedError, match="not open"):
        session.open(ExportTicket.export_ticket(1))
    await session.aclose()
    assert session.closed
    with pytest.raises(aiosdk.SessionClosedError, match="closed"):
        await session.release(ExportTicket.export_ticket(1))
    with pytest.raises(aiosdk.SessionClosedError, match="once"):
        await session.__aenter__()
    await client.aclose()


@pytest.mark.anyio
async def test_session_calls_check_their_tickets_before_sending() -> None:
    client = aiosdk.AsyncClient("http://127.0.0.1:9", token="aio_unused")
    session = client.session()
    scope = ScopeTicket.scope_ticket("x")
    with pytest.raises(aiosdk.ConfigurationError, match="takes an ExportTicket"):
        await session.release(scope)  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError, match="takes an ExportTicket"):
        await session.query(scope, head=3)  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError, match="not both"):
        await session.query(ExportTicket.export_ticket(1), head=3, reduce="sum")
    with pytest.raises(aiosdk.ConfigurationError, match="shared, scope or application"):
        await session.fetch(ExportTicket.export_ticket(1))  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError, match="ServerObject"):
        await session.fetch_object(scope)  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError, match="invalid path"):
        await session.export("alice//x")
    with pytest.raises(aiosdk.MalformedTicketError, match="scope variable name"):
        await session.bind("a/b", ExportTicket.export_ticket(1))
    await client.aclose()


def test_session_errors_form_the_hierarchy() -> None:
    assert issubclass(aiosdk.SessionExpiredError, aiosdk.NotFoundError)
    assert issubclass(aiosdk.SessionClosedError, aiosdk.AiosdkError)
    assert issubclass(aiosdk.MalformedTicketError, ValueError)
    local = aiosdk.SessionExpiredError("session s1 expired", status_code=404)
    assert str(local) == "session s1 expired"
    remote = aiosdk.SessionExpiredError("gone", status_code=404, grpc_status="NOT_FOUND")
    assert str(remote) == "gone (gRPC NOT_FOUND)"
