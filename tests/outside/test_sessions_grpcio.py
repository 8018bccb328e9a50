"""SessionService with the official grpcio client built from our ``sessions.proto`` (not our
grpclib-based client): every RPC, malformed tickets, bad export numbers, wrong and other users'
sessions, oversize fields and messages, concurrent calls on one session, and raw abuse; the
server logs no unhandled error meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

import aiosdk
from aiosdk.catalog.queries import Key, encode_filters
from aiosdk.server import ServerThread
from outside._tools import Unhandled, load_grpcio_stubs, log_in, new_user

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
WITHIN = 15.0


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with load_grpcio_stubs()(tmp_path_factory.mktemp("grpcio"), "sessions") as modules:
        yield modules


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as opened:
        yield opened


class User:
    """A user with a table and an array of their own, and grpcio calls with their token."""

    def __init__(
        self, server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], ch: Any
    ) -> None:
        self.name = new_user(admin, "ses")
        self.token = log_in(server, self.name)
        self.pb = grpcio["sessions_pb2"]
        self.stub = grpcio["sessions_pb2_grpc"].SessionServiceStub(ch)
        self.http = f"{server.http_url}/api/v1"

    def metadata(self, **extra: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}"), *extra.items()]

    def call(self, method: str, request: Any, **extra: str) -> tuple[grpc.StatusCode, Any]:
        """``(code, answer or details)`` of one unary call."""
        try:
            answer = getattr(self.stub, method)(
                request, metadata=self.metadata(**extra), timeout=WITHIN
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return OK, answer

    def ok(self, method: str, request: Any, **extra: str) -> Any:
        code, answer = self.call(method, request, **extra)
        assert code == OK, (method, code, answer)
        return answer

    def open(self, **fields: Any) -> str:
        session_id: str = self.ok("OpenSession", self.pb.OpenSessionRequest(**fields)).session_id
        return session_id

    def get(self, path: str, route: str = "catalog/nodes") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.get(f"{self.http}/{route}/{path}", headers=headers, timeout=WITHIN)


def export_ticket(number: int) -> bytes:
    return b"e" + number.to_bytes(4, "little")


FRAME = pd.DataFrame(
    {"t": np.arange(50, dtype=np.int64), "v": np.linspace(0, 1, 50), "s": ["a", "b"] * 25}
)
ARRAY = np.arange(60, dtype=np.float64).reshape(6, 10)


@pytest.fixture(scope="module")
def owner(
    server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], channel: Any
) -> User:
    """A user whose ``<name>/data`` holds table ``t`` and array ``a``."""
    user = User(server, admin, grpcio, channel)
    with aiosdk.Client(server.http_url, token=user.token) as client:
        grp = client.catalog.create_container(f"{user.name}/data")
        grp.write_dataframe(FRAME, key="t")
        grp.write_array(ARRAY, key="a", chunks=(3, 5))
    return user


@pytest.fixture
def stranger(
    server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], channel: Any
) -> User:
    return User(server, admin, grpcio, channel)


def _table(response: httpx.Response) -> pd.DataFrame:
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all().to_pandas()


# -- every RPC ----------------------------------------------------------------------------------


def test_every_rpc(owner: User, stranger: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    opened = owner.ok("OpenSession", pb.OpenSessionRequest())
    assert opened.ttl_seconds == 300  # the server's default
    assert len(opened.session_id) >= 16
    sid = opened.session_id
    assert owner.ok("OpenSession", pb.OpenSessionRequest(ttl_seconds=10**9)).ttl_seconds == 86400
    assert owner.ok("OpenSession", pb.OpenSessionRequest(ttl_seconds=0)).ttl_seconds == 1
    refreshed = owner.ok("RefreshSession", pb.RefreshSessionRequest(session_id=sid))
    assert refreshed.session_id == sid
    assert refreshed.expires_at.ToDatetime() >= opened.expires_at.ToDatetime()

    table = owner.ok(
        "Export", pb.ExportRequest(session_id=sid, number=1, path=f"{owner.name}/data/t")
    )
    assert table.ticket.ticket == export_ticket(1)
    assert table.type == "table"
    assert table.path == f"~session/{sid}/1"
    assert json.loads(table.structure_json)["columns"] == ["t", "v", "s"]
    assert table.revision >= 1
    assert owner.get(table.path).json()["structure_family"] == "table"
    pd.testing.assert_frame_equal(_table(owner.get(table.path, "table/full")), FRAME)
    array = owner.ok(
        "Export", pb.ExportRequest(session_id=sid, number=2, path=f"{owner.name}/data/a")
    )
    assert (array.type, json.loads(array.structure_json)["shape"]) == ("array", [6, 10])

    view = pb.TableView(columns=["v", "t"], sort=[pb.SortKey(column="t", descending=True)], head=5)
    view.where_json = encode_filters([Key("t") < 20])
    source = pb.Ticket(ticket=export_ticket(1))
    code, queried = owner.call(
        "Query", pb.QueryRequest(session_id=sid, source=source, number=3, table=view)
    )
    assert code == OK, queried
    expected = FRAME[FRAME.t < 20].sort_values("t", ascending=False)[["v", "t"]].head(5)
    got_frame = _table(owner.get(queried.path, "table/full"))
    pd.testing.assert_frame_equal(got_frame, expected.reset_index(drop=True))

    selection = [pb.AxisSelection(start=1, stop=5), pb.AxisSelection(index=2)]
    reduced = owner.ok(
        "Query",
        pb.QueryRequest(
            session_id=sid,
            source=pb.Ticket(ticket=export_ticket(2)),
            number=4,
            array=pb.ArrayView(selection=selection, reduce="sum"),
        ),
    )
    assert reduced.type == "array"
    assert json.loads(reduced.structure_json)["shape"] in ([], [1])
    raw = owner.get(reduced.path, "array/full")
    assert raw.status_code == 200, raw.text
    assert np.frombuffer(raw.content, "<f8").tolist() == [ARRAY[1:5, 2].sum()]

    shared = b"h" + uuid.uuid4().bytes
    owner.ok(
        "Publish",
        pb.PublishRequest(
            session_id=sid,
            source=pb.Ticket(ticket=export_ticket(3)),
            shared=pb.Ticket(ticket=shared),
        ),
    )
    name = f"v_{uuid.uuid4().hex}"
    owner.ok(
        "Bind", pb.BindRequest(session_id=sid, name=name, source=pb.Ticket(ticket=export_ticket(3)))
    )
    for number, source in ((5, shared), (6, b"s/" + name.encode())):
        fetched = owner.ok(
            "Fetch", pb.FetchRequest(session_id=sid, source=pb.Ticket(ticket=source), number=number)
        )
        assert fetched.type == "table"
        pd.testing.assert_frame_equal(_table(owner.get(fetched.path, "table/full")), got_frame)
    counter = owner.ok(
        "Fetch",
        pb.FetchRequest(session_id=sid, source=pb.Ticket(ticket=b"a/stats/f/counter"), number=7),
    )
    assert (counter.type, counter.structure_json) == ("Counter", "{}")
    typed = pb.TypedTicket(ticket=pb.Ticket(ticket=export_ticket(7)), type="Counter")
    value = json.loads(
        owner.ok(
            "InvokeObject", pb.InvokeObjectRequest(session_id=sid, object=typed, method="get")
        ).result_json
    )["value"]
    incremented = owner.ok(
        "InvokeObject",
        pb.InvokeObjectRequest(
            session_id=sid, object=typed, method="increment", arguments_json='{"by": 4}'
        ),
    )
    assert json.loads(incremented.result_json) == value + 4
    apps = owner.ok("ListApplications", pb.ListApplicationsRequest()).applications
    stats = next(app for app in apps if app.id == "stats")
    assert {(f.name, f.type) for f in stats.fields} == {
        ("summary", "table"),
        ("counter", "Counter"),
    }

    # Subscribe: READY first, UPDATED on a change, RELEASED at the release, then the end.
    call = owner.stub.Subscribe(
        pb.SubscribeRequest(session_id=sid, ticket=pb.Ticket(ticket=export_ticket(1))),
        metadata=owner.metadata(),
        timeout=WITHIN,
    )
    kinds: list[int] = []
    ready = next(call)
    assert ready.kind == pb.ExportChange.READY
    assert ready.revision == table.revision
    with aiosdk.Client(owner.http.removesuffix("/api/v1"), token=owner.token) as client:
        client.catalog.get(f"{owner.name}/data/t").update_metadata({"changed": True})
    updated = next(call)
    assert (updated.kind, updated.revision > ready.revision) == (pb.ExportChange.UPDATED, True)
    owner.ok(
        "Release", pb.ReleaseRequest(session_id=sid, ticket=pb.Ticket(ticket=export_ticket(1)))
    )
    kinds = [message.kind for message in call]
    assert kinds[-1] == pb.ExportChange.RELEASED
    assert set(kinds[:-1]) <= {pb.ExportChange.UPDATED}
    assert owner.get(table.path).status_code == 404

    closed = owner.ok("CloseSession", pb.CloseSessionRequest(session_id=sid))
    assert closed.released == 6  # 2..7: 1 was released before
    assert owner.ok("CloseSession", pb.CloseSessionRequest(session_id=sid)).released == 0
    for path in (queried.path, reduced.path):
        assert owner.get(path).status_code == 404
    assert owner.call("RefreshSession", pb.RefreshSessionRequest(session_id=sid))[0] == NOT_FOUND
    assert not unhandled.records


# -- bad numbers, wrong sessions ------------------------------------------------------------------


def test_bad_numbers(owner: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    path, other = f"{owner.name}/data/t", f"{owner.name}/data/a"
    assert owner.call("Export", pb.ExportRequest(session_id=sid, number=0, path=path))[0] == INVALID
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=2**32 - 1, path=path))
    first = owner.ok("Export", pb.ExportRequest(session_id=sid, number=9, path=path))
    # The same request again is a retry: that export's answer; another one is refused.
    assert owner.ok("Export", pb.ExportRequest(session_id=sid, number=9, path=path)) == first
    code, details = owner.call("Export", pb.ExportRequest(session_id=sid, number=9, path=other))
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    release = pb.ReleaseRequest(session_id=sid, ticket=pb.Ticket(ticket=export_ticket(9)))
    owner.ok("Release", release)
    owner.ok("Release", release)  # releasing again does nothing
    assert owner.get(first.path).status_code == 404
    # A released number keeps its tombstone: still taken, for every kind of new export.
    again = pb.ExportRequest(session_id=sid, number=9, path=other)
    assert owner.call("Export", again)[0] == grpc.StatusCode.ALREADY_EXISTS
    source = pb.Ticket(ticket=export_ticket(2**32 - 1))
    query = pb.QueryRequest(session_id=sid, source=source, number=9, table=pb.TableView())
    assert owner.call("Query", query)[0] == grpc.StatusCode.ALREADY_EXISTS
    counter = pb.Ticket(ticket=b"a/stats/f/counter")
    fetch = pb.FetchRequest(session_id=sid, source=counter, number=9)
    assert owner.call("Fetch", fetch)[0] == grpc.StatusCode.ALREADY_EXISTS
    never = pb.ReleaseRequest(session_id=sid, ticket=pb.Ticket(ticket=export_ticket(12345)))
    assert owner.call("Release", never)[0] == NOT_FOUND
    # A query's source must be an export, not another kind of ticket.
    for number, ticket in enumerate((b"s/x", b"a/stats/f/summary", b"h" + bytes(16)), 20):
        bad = pb.QueryRequest(
            session_id=sid, source=pb.Ticket(ticket=ticket), number=number, table=pb.TableView()
        )
        assert owner.call("Query", bad)[0] in (INVALID, NOT_FOUND)
    # Fetch refuses export tickets (an export of this session is already one).
    bad_fetch = pb.FetchRequest(session_id=sid, source=source, number=30)
    assert owner.call("Fetch", bad_fetch)[0] == INVALID
    owner.ok("CloseSession", pb.CloseSessionRequest(session_id=sid))
    assert not unhandled.records


def test_wrong_and_other_users_sessions(owner: User, stranger: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    path = f"{owner.name}/data/t"
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=1, path=path))
    theirs = stranger.open()
    ticket = pb.Ticket(ticket=export_ticket(1))
    for session_id in ("", "nope", "x" * 10_000, "\u00e9\u0000", theirs):
        requests: list[tuple[str, Any]] = [
            ("RefreshSession", pb.RefreshSessionRequest(session_id=session_id)),
            ("Export", pb.ExportRequest(session_id=session_id, number=2, path=path)),
            (
                "Query",
                pb.QueryRequest(
                    session_id=session_id, source=ticket, number=3, table=pb.TableView()
                ),
            ),
            ("Release", pb.ReleaseRequest(session_id=session_id, ticket=ticket)),
            (
                "Publish",
                pb.PublishRequest(
                    session_id=session_id, source=ticket, shared=pb.Ticket(ticket=b"h" + bytes(16))
                ),
            ),
            (
                "Fetch",
                pb.FetchRequest(
                    session_id=session_id, source=pb.Ticket(ticket=b"a/stats/f/counter"), number=4
                ),
            ),
            ("Bind", pb.BindRequest(session_id=session_id, name="x", source=ticket)),
            (
                "InvokeObject",
                pb.InvokeObjectRequest(
                    session_id=session_id,
                    object=pb.TypedTicket(ticket=ticket, type="Counter"),
                    method="get",
                ),
            ),
        ]
        for method, request in requests:
            code, details = owner.call(method, request)
            assert code in (NOT_FOUND, INVALID), (session_id[:10], method, code, details)
            if session_id == theirs:
                assert code == NOT_FOUND, (method, details)  # not told apart from a missing one
    # The stranger may not use the owner's session either, nor close it.
    for method, request in (
        ("Export", pb.ExportRequest(session_id=sid, number=5, path=path)),
        ("CloseSession", pb.CloseSessionRequest(session_id=sid)),
    ):
        assert stranger.call(method, request)[0] == NOT_FOUND
    assert owner.ok("CloseSession", pb.CloseSessionRequest(session_id=sid)).released == 1
    # Closing someone else's (or no) session is no error and closes nothing.
    code, _ = owner.call("CloseSession", pb.CloseSessionRequest(session_id=theirs))
    assert code in (OK, NOT_FOUND)
    stranger.ok("RefreshSession", pb.RefreshSessionRequest(session_id=theirs))
    # Nor may the stranger export what they may not read.
    code, _ = stranger.call("Export", pb.ExportRequest(session_id=theirs, number=1, path=path))
    assert code == NOT_FOUND
    assert not unhandled.records


# -- malformed tickets, oversize, abuse ------------------------------------------------------------

MALFORMED = [b"", b"e", b"e\0\0\0\0", b"e\1\0\0", b"s/", b"s/a/b", b"a/x", b"a//f/x", b"h\0",
             b"zz", b"s/\xff\xfe", b"x" * 5000]  # fmt: skip


def test_malformed_tickets_are_invalid_argument(owner: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=1, path=f"{owner.name}/data/t"))
    good = pb.Ticket(ticket=export_ticket(1))
    for raw in MALFORMED:
        bad = pb.Ticket(ticket=raw)
        for method, request in (
            ("Query", pb.QueryRequest(session_id=sid, source=bad, number=2, table=pb.TableView())),
            ("Release", pb.ReleaseRequest(session_id=sid, ticket=bad)),
            (
                "Publish",
                pb.PublishRequest(
                    session_id=sid, source=bad, shared=pb.Ticket(ticket=b"h" + bytes(16))
                ),
            ),
            ("Publish", pb.PublishRequest(session_id=sid, source=good, shared=bad)),
            ("Fetch", pb.FetchRequest(session_id=sid, source=bad, number=3)),
            ("Bind", pb.BindRequest(session_id=sid, name="x", source=bad)),
            (
                "InvokeObject",
                pb.InvokeObjectRequest(
                    session_id=sid, object=pb.TypedTicket(ticket=bad, type="Counter"), method="get"
                ),
            ),
        ):
            code, details = owner.call(method, request)
            assert code == INVALID, (raw[:20], method, code, details)
            assert "ticket" in details.lower(), details
        call = owner.stub.Subscribe(
            pb.SubscribeRequest(session_id=sid, ticket=bad),
            metadata=owner.metadata(),
            timeout=WITHIN,
        )
        with pytest.raises(grpc.RpcError) as failed:
            list(call)
        assert failed.value.code() == INVALID
    # A missing ticket message is as malformed as an empty one.
    assert owner.call("Release", pb.ReleaseRequest(session_id=sid))[0] == INVALID
    # The session took no harm.
    owner.ok("Release", pb.ReleaseRequest(session_id=sid, ticket=good))
    assert not unhandled.records


def test_oversize_and_nonsense_fields(owner: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=1, path=f"{owner.name}/data/t"))
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=2, path=f"{owner.name}/data/a"))
    table, array = pb.Ticket(ticket=export_ticket(1)), pb.Ticket(ticket=export_ticket(2))
    numbers = iter(range(100, 10_000))

    def query(source: Any = table, **view: Any) -> tuple[grpc.StatusCode, Any]:
        kind = "array" if "selection" in view or "reduce" in view or "axis" in view else "table"
        message = pb.ArrayView(**view) if kind == "array" else pb.TableView(**view)
        return owner.call(
            "Query",
            pb.QueryRequest(session_id=sid, source=source, number=next(numbers), **{kind: message}),
        )

    refused: dict[str, tuple[grpc.StatusCode, Any]] = {
        "a long path": owner.call(
            "Export", pb.ExportRequest(session_id=sid, number=50, path="a/" * 5000)
        ),
        "a path of nonsense": owner.call(
            "Export", pb.ExportRequest(session_id=sid, number=51, path="../\u0000")
        ),
        "no view": owner.call("Query", pb.QueryRequest(session_id=sid, source=table, number=52)),
        "where not JSON": query(where_json="{"),
        "where not a list": query(where_json='{"a": 1}'),
        "where huge": query(
            where_json="[" + ",".join(['{"op":"eq","key":"t","value":1}'] * 100_000) + "]"
        ),
        "head and tail": query(head=1, tail=1),
        "many columns": query(columns=["t"] * 100_000),
        "an unknown column": query(columns=["nope"]),
        "a sort key with no column": query(sort=[pb.SortKey(column="")]),
        "index and slice": query(array, selection=[pb.AxisSelection(index=1, start=1)]),
        "step 0": query(array, selection=[pb.AxisSelection(step=0)]),
        "too many axes": query(array, selection=[pb.AxisSelection(index=0)] * 3),
        "index out of range": query(array, selection=[pb.AxisSelection(index=6)]),
        "an unknown reduction": query(array, reduce="median"),
        "an axis out of range": query(array, reduce="sum", axis=2),
        "a table view of an array": query(array, columns=["x"]),
        "an array view of a table": query(table, reduce="sum"),
        "a long scope name": owner.call(
            "Bind", pb.BindRequest(session_id=sid, name="n" * 256, source=table)
        ),
        "an empty scope name": owner.call(
            "Bind", pb.BindRequest(session_id=sid, name="", source=table)
        ),
        "a scope name with a slash": owner.call(
            "Bind", pb.BindRequest(session_id=sid, name="a/b", source=table)
        ),
        "arguments not JSON": owner.call(
            "InvokeObject",
            pb.InvokeObjectRequest(
                session_id=sid,
                object=pb.TypedTicket(ticket=table, type="table"),
                method="get",
                arguments_json="{",
            ),
        ),
    }
    failed_precondition = {"a table view of an array", "an array view of a table"}
    paths = {"a long path", "a path of nonsense"}  # a path that names no readable node
    for case, (code, details) in refused.items():
        if case in failed_precondition:
            allowed = {INVALID, grpc.StatusCode.FAILED_PRECONDITION}
        elif case in paths:
            allowed = {INVALID, NOT_FOUND}
        else:
            allowed = {INVALID}
        assert code in allowed, (case, code, details)
    # Invoking a method on something that is no plugin object, or on the wrong type.
    fetched = owner.ok(
        "Fetch",
        pb.FetchRequest(session_id=sid, source=pb.Ticket(ticket=b"a/stats/f/counter"), number=60),
    )
    counter = pb.Ticket(ticket=fetched.ticket.ticket)
    for typed, method, arguments in (
        (pb.TypedTicket(ticket=table, type="Counter"), "get", ""),
        (pb.TypedTicket(ticket=counter, type="Table"), "get", ""),
    ):
        code, details = owner.call(
            "InvokeObject",
            pb.InvokeObjectRequest(
                session_id=sid, object=typed, method=method, arguments_json=arguments
            ),
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    typed = pb.TypedTicket(ticket=counter, type="Counter")
    for method, arguments in (
        ("nope", ""),
        ("increment", '{"by": "x"}'),
        ("increment", "[1]"),
        ("increment", '{"by": 1e400}'),
    ):
        code, details = owner.call(
            "InvokeObject",
            pb.InvokeObjectRequest(
                session_id=sid, object=typed, method=method, arguments_json=arguments
            ),
        )
        assert code in (INVALID, NOT_FOUND), (method, arguments, code, details)
    # A message over the server's limit is refused unread.
    code, _ = owner.call(
        "Export", pb.ExportRequest(session_id=sid, number=70, path="a" * (5 * 1024 * 1024))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A shared ticket that nobody published, a scope variable nobody bound.
    for number, raw in (
        (80, b"h" + uuid.uuid4().bytes),
        (81, f"s/never_{uuid.uuid4().hex}".encode()),
    ):
        code, _ = owner.call(
            "Fetch", pb.FetchRequest(session_id=sid, source=pb.Ticket(ticket=raw), number=number)
        )
        assert code == NOT_FOUND
    owner.ok("RefreshSession", pb.RefreshSessionRequest(session_id=sid))  # still fine
    assert not unhandled.records


def test_no_credentials_no_session(owner: User, server: ServerThread, channel: Any) -> None:
    pb = owner.pb
    for metadata in (
        [],
        [("authorization", "Bearer aio_nonsense")],
        [("authorization", "Basic !!")],
    ):
        with pytest.raises(grpc.RpcError) as refused:
            owner.stub.OpenSession(pb.OpenSessionRequest(), metadata=metadata, timeout=WITHIN)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A session is its opener's even for the admin: the admin token sees no user's session.
    sid = owner.open()
    admin = [("authorization", f"Bearer {server.admin_token}")]
    with pytest.raises(grpc.RpcError) as hidden:
        owner.stub.RefreshSession(
            pb.RefreshSessionRequest(session_id=sid), metadata=admin, timeout=WITHIN
        )
    assert hidden.value.code() == NOT_FOUND


def test_idempotency_keys_replay(owner: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    request = pb.ExportRequest(session_id=sid, number=1, path=f"{owner.name}/data/t")
    key = uuid.uuid4().hex
    first = owner.ok("Export", request, **{"idempotency-key": key})
    again = owner.ok("Export", request, **{"idempotency-key": key})  # the first answer, replayed
    assert again == first
    assert owner.ok("Export", request) == first  # without a key: the same request, a retry
    other = pb.ExportRequest(session_id=sid, number=2, path=f"{owner.name}/data/t")
    assert owner.call("Export", other, **{"idempotency-key": key})[0] == INVALID
    # Publish and Bind need their key: the same request again without one is applied again.
    shared = pb.Ticket(ticket=b"h" + uuid.uuid4().bytes)
    publish = pb.PublishRequest(session_id=sid, source=first.ticket, shared=shared)
    key = uuid.uuid4().hex
    owner.ok("Publish", publish, **{"idempotency-key": key})
    owner.ok("Publish", publish, **{"idempotency-key": key})
    assert owner.call("Publish", publish)[0] == grpc.StatusCode.ALREADY_EXISTS
    counter = owner.ok(
        "Fetch",
        pb.FetchRequest(session_id=sid, source=pb.Ticket(ticket=b"a/stats/f/counter"), number=3),
    )
    typed = pb.TypedTicket(ticket=counter.ticket, type="Counter")
    increment = pb.InvokeObjectRequest(
        session_id=sid, object=typed, method="increment", arguments_json='{"by": 1}'
    )
    key = uuid.uuid4().hex
    one = owner.ok("InvokeObject", increment, **{"idempotency-key": key})
    two = owner.ok("InvokeObject", increment, **{"idempotency-key": key})
    assert one.result_json == two.result_json  # incremented once
    assert not unhandled.records


# -- concurrency -----------------------------------------------------------------------------------


def _in_threads(
    count: int, work: Callable[[int], tuple[grpc.StatusCode, Any]]
) -> list[grpc.StatusCode]:
    return [code for code, _ in _answers_in_threads(count, work)]


def _answers_in_threads(
    count: int, work: Callable[[int], tuple[grpc.StatusCode, Any]]
) -> list[tuple[grpc.StatusCode, Any]]:
    """``work(i)`` for ``i`` in ``range(count)``, each in a thread of its own, all at once."""
    start = threading.Barrier(count)

    def run(i: int) -> tuple[grpc.StatusCode, Any]:
        start.wait(WITHIN)
        return work(i)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_concurrent_calls_on_one_session(owner: User, stranger: User, unhandled: Unhandled) -> None:
    pb = owner.pb
    sid = owner.open()
    path = f"{owner.name}/data/t"
    # Distinct numbers at once: all made.
    codes = _in_threads(
        24,
        lambda i: owner.call("Export", pb.ExportRequest(session_id=sid, number=i + 1, path=path)),
    )
    assert codes == [OK] * 24
    # One number at once, by three different requests (four threads each): the first one
    # made it; its retries get its answer, the others ALREADY_EXISTS.
    paths = [f"{owner.name}/data/t", f"{owner.name}/data/a", f"{owner.name}/data"]
    answers = _answers_in_threads(
        12,
        lambda i: owner.call(
            "Export", pb.ExportRequest(session_id=sid, number=100, path=paths[i % 3])
        ),
    )
    made = [answer.type for code, answer in answers if code == OK]
    assert len(made) == 4, answers
    assert len(set(made)) == 1  # all of one request
    assert [code for code, _ in answers].count(grpc.StatusCode.ALREADY_EXISTS) == 8
    # One shared ticket published at once from several exports: taken exactly once.
    shared = pb.Ticket(ticket=b"h" + uuid.uuid4().bytes)
    codes = _in_threads(
        12,
        lambda i: owner.call(
            "Publish",
            pb.PublishRequest(
                session_id=sid, source=pb.Ticket(ticket=export_ticket(i + 1)), shared=shared
            ),
        ),
    )
    assert codes.count(OK) == 1
    assert set(codes) == {OK, grpc.StatusCode.ALREADY_EXISTS}

    # Releases, queries and a close racing: every answer is one of the documented ones.
    def mixed(i: int) -> tuple[grpc.StatusCode, Any]:
        ticket = pb.Ticket(ticket=export_ticket(i % 24 + 1))
        if i == 20:
            return owner.call("CloseSession", pb.CloseSessionRequest(session_id=sid))
        if i % 2:
            return owner.call("Release", pb.ReleaseRequest(session_id=sid, ticket=ticket))
        return owner.call(
            "Query",
            pb.QueryRequest(
                session_id=sid, source=ticket, number=200 + i, table=pb.TableView(head=1)
            ),
        )

    codes = _in_threads(24, mixed)
    assert set(codes) <= {OK, NOT_FOUND}, codes
    assert owner.call("RefreshSession", pb.RefreshSessionRequest(session_id=sid))[0] == NOT_FOUND

    # Many sessions opened and closed at once, by two users.
    def churn(i: int) -> tuple[grpc.StatusCode, Any]:
        user = owner if i % 2 else stranger
        session_id = user.open(ttl_seconds=30)
        return user.call("CloseSession", pb.CloseSessionRequest(session_id=session_id))

    assert _in_threads(16, churn) == [OK] * 16
    assert not unhandled.records


def test_a_cancelled_subscription_and_an_abandoned_session(
    owner: User, unhandled: Unhandled
) -> None:
    pb = owner.pb
    sid = owner.open(ttl_seconds=1)
    owner.ok("Export", pb.ExportRequest(session_id=sid, number=1, path=f"{owner.name}/data/t"))
    request = pb.SubscribeRequest(session_id=sid, ticket=pb.Ticket(ticket=export_ticket(1)))
    for _ in range(5):  # opened and dropped at once, again and again
        call = owner.stub.Subscribe(request, metadata=owner.metadata(), timeout=WITHIN)
        assert next(call).kind == pb.ExportChange.READY
        call.cancel()
    # Left alone, the session expires and its subscription ends with RELEASED.
    call = owner.stub.Subscribe(request, metadata=owner.metadata(), timeout=WITHIN)
    kinds = [message.kind for message in call]
    assert kinds[0] == pb.ExportChange.READY
    assert kinds[-1] == pb.ExportChange.RELEASED
    assert owner.call("RefreshSession", pb.RefreshSessionRequest(session_id=sid))[0] == NOT_FOUND
    assert not unhandled.records
