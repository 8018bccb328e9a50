"""ChannelService with the official grpcio client built from our ``channels.proto`` (not our
grpclib-based client): every RPC, the token holder's calls without credentials, idempotency
keys, and hostile input (garbage and forged tokens, huge and malformed client ids, bad durations
and data, Listen streams that never start, start with an ack, ack what was never sent, start
twice), each answered with its status (never INTERNAL or UNKNOWN); the server stays healthy and
logs no unhandled error."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest

from aiosdk.server import ServerThread
from outside._tools import Unhandled, load_grpcio_stubs, log_in, new_user

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
WITHIN = 15.0
MAX_MESSAGE = 32 * 1024
HOLDER_CALLS = (
    "InspectToken",
    "GetMessages",
    "HasMessages",
    "PopMessage",
    "ClearMessages",
    "ConnectChannel",
    "DisconnectChannel",
)


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with load_grpcio_stubs()(tmp_path_factory.mktemp("grpcio"), "channels") as modules:
        yield modules


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as opened:
        yield opened


class App:
    """A user (the application) and grpcio calls with its token, or with none (the holder)."""

    def __init__(
        self, server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], ch: Any
    ) -> None:
        self.name = new_user(admin, "chg")
        self.token = log_in(server, self.name)
        self.pb = grpcio["channels_pb2"]
        self.stub = grpcio["channels_pb2_grpc"].ChannelServiceStub(ch)

    def metadata(self, **extra: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}"), *extra.items()]

    def call(
        self, method: str, request: Any, *, anonymous: bool = False, **extra: str
    ) -> tuple[grpc.StatusCode, Any]:
        """``(code, answer or details)`` of one unary call, with the app's token unless
        ``anonymous`` (then with ``extra`` metadata only)."""
        metadata = list(extra.items()) if anonymous else self.metadata(**extra)
        try:
            answer = getattr(self.stub, method)(request, metadata=metadata, timeout=WITHIN)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return OK, answer

    def ok(self, method: str, request: Any, **kwargs: Any) -> Any:
        code, answer = self.call(method, request, **kwargs)
        assert code == OK, (method, code, answer)
        return answer

    def create(self, client_id: str, **fields: Any) -> Any:
        return self.ok("CreateChannel", self.pb.CreateChannelRequest(client_id=client_id, **fields))

    def send(self, client_id: str, data: bytes | str) -> Any:
        text = isinstance(data, str)
        raw = data.encode() if isinstance(data, str) else data
        request = self.pb.SendMessageRequest(client_id=client_id, data=raw, text=text)
        return self.ok("SendMessage", request).position

    def holder(self, method: str, token: str, **fields: Any) -> tuple[grpc.StatusCode, Any]:
        """A token holder's call, without credentials."""
        request_type = self.pb.PopMessageRequest if method == "PopMessage" else self.pb.TokenRequest
        return self.call(method, request_type(token=token, **fields), anonymous=True)


@pytest.fixture
def app(
    server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], channel: Any
) -> App:
    return App(server, admin, grpcio, channel)


class Requests:
    """A Listen call's request stream, fed by the test (grpcio reads it in a thread)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def send(self, request: Any) -> None:
        self._queue.put(request)

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[Any]:
        while (request := self._queue.get()) is not None:
            yield request


class Listen:
    """One Listen call through grpcio, without credentials."""

    def __init__(self, app: App) -> None:
        self.pb = app.pb
        self.requests = Requests()
        self.call = app.stub.Listen(iter(self.requests), timeout=WITHIN)

    def start(self, token: str, **fields: Any) -> None:
        self.requests.send(self.pb.ListenRequest(start=self.pb.ListenStart(token=token, **fields)))

    def ack(self, offset: int) -> None:
        self.requests.send(self.pb.ListenRequest(ack=self.pb.ListenAck(offset=offset)))

    def close(self) -> None:
        self.requests.send(self.pb.ListenRequest(close=self.pb.ListenClose()))
        self.requests.end()

    def next(self) -> Any:
        """The next answer that is not a heartbeat."""
        while True:
            answer = next(self.call)
            if answer.WhichOneof("kind") != "heartbeat":
                return answer

    def messages(self, n: int) -> list[Any]:
        """The next ``n`` messages, from however many batches."""
        got: list[Any] = []
        while len(got) < n:
            answer = self.next()
            assert answer.WhichOneof("kind") == "messages", answer
            got += answer.messages.messages
        assert len(got) == n, got
        return got

    def status(self) -> grpc.StatusCode:
        """How the call ended (reading what is left of it)."""
        try:
            for _ in self.call:
                pass
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            self.requests.end()
        return OK


def forged(token: str) -> str:
    head, _, signature = token.rpartition(".")
    return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


# -- every RPC ----------------------------------------------------------------------------------


def test_every_rpc(app: App, unhandled: Unhandled) -> None:
    pb = app.pb
    created = app.create("dev-1", duration_minutes=5)
    assert created.client_id == "dev-1"
    assert created.token.startswith("aio_")
    assert created.epoch
    token = created.token
    default = app.create("dev-2")
    delta = default.expires_at.ToDatetime() - created.expires_at.ToDatetime()
    assert 100 * 60 < delta.total_seconds() < 120 * 60  # 120 minutes against 5

    # Token holder's calls, with no credentials.
    info = app.ok("InspectToken", pb.TokenRequest(token=token), anonymous=True)
    assert (info.client_id, info.live) == ("dev-1", True)
    assert info.expires_at == created.expires_at
    assert app.ok("HasMessages", pb.TokenRequest(token=token), anonymous=True).has_messages is False
    first = app.send("dev-1", "hello")
    assert (first.epoch, first.offset) == (created.epoch, 1)
    assert app.send("dev-1", b"\x00\xff").offset == 2
    broadcast = app.ok(
        "Broadcast", pb.BroadcastRequest(client_ids=["dev-2", "dev-1"], data=b"all", text=True)
    )
    assert [p.offset for p in broadcast.positions] == [1, 3]
    assert broadcast.positions[0].epoch == default.epoch
    got = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert got.epoch == created.epoch
    assert [(m.offset, m.data, m.text) for m in got.messages] == [
        (1, b"hello", True),
        (2, b"\x00\xff", False),
        (3, b"all", True),
    ]
    assert all(m.sent_at.seconds > 0 for m in got.messages)
    assert app.ok("HasMessages", pb.TokenRequest(token=token), anonymous=True).has_messages
    popped = app.ok("PopMessage", pb.PopMessageRequest(token=token), anonymous=True)
    assert popped.HasField("message")
    assert (popped.message.offset, popped.message.data) == (1, b"hello")
    connected = app.ok("ConnectChannel", pb.TokenRequest(token=token), anonymous=True)
    assert connected.connected is True
    again = app.ok("ConnectChannel", pb.TokenRequest(token=token), anonymous=True)
    assert again.connected is False
    popped = app.ok("PopMessage", pb.PopMessageRequest(token=token, connect=True), anonymous=True)
    assert popped.message.offset == 2
    gone = app.ok("DisconnectChannel", pb.DisconnectChannelRequest(token=token), anonymous=True)
    assert gone.disconnected is True
    gone = app.ok("DisconnectChannel", pb.DisconnectChannelRequest(token=token), anonymous=True)
    assert gone.disconnected is False
    cleared = app.ok("ClearMessages", pb.TokenRequest(token=token), anonymous=True)
    assert cleared.cleared == 1
    assert cleared.epoch != created.epoch
    empty = app.ok("PopMessage", pb.PopMessageRequest(token=token), anonymous=True)
    assert not empty.HasField("message")

    # Listen: connected, then batches within the window; acks; close.
    for data in ("l1", "l2", "l3"):
        app.send("dev-1", data)
    listen = Listen(app)
    listen.start(token, window=2)
    hello = listen.next()
    assert hello.WhichOneof("kind") == "connected"
    assert hello.connected.client_id == "dev-1"
    assert hello.connected.epoch == cleared.epoch
    assert hello.connected.heartbeat_seconds > 0
    two = listen.messages(2)
    assert [m.data for m in two] == [b"l1", b"l2"]
    listen.ack(two[-1].offset)
    (third,) = listen.messages(1)
    assert third.data == b"l3"
    listen.close()
    assert listen.status() == OK
    left = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert [m.data for m in left.messages] == [b"l3"]  # sent, never acknowledged

    # Presence: the owner's events from the beginning (a new user: this test's only).
    events = app.stub.Presence(pb.PresenceRequest(after=0), metadata=app.metadata(), timeout=WITHIN)
    seen = [next(events) for _ in range(4)]
    events.cancel()
    connected_kind, disconnected_kind = pb.PRESENCE_KIND_CONNECTED, pb.PRESENCE_KIND_DISCONNECTED
    assert [(e.client_id, e.kind, e.clean) for e in seen] == [
        ("dev-1", connected_kind, False),
        ("dev-1", disconnected_kind, True),
        ("dev-1", connected_kind, False),  # the Listen stream
        ("dev-1", disconnected_kind, True),  # closed with `close`
    ]
    assert [e.id for e in seen] == sorted({e.id for e in seen})
    assert not unhandled.records


def test_application_calls_need_credentials(app: App, unhandled: Unhandled) -> None:
    pb = app.pb
    token = app.create("creds").token
    app.send("creds", "x")
    for method, request in (
        ("CreateChannel", pb.CreateChannelRequest(client_id="creds")),
        ("SendMessage", pb.SendMessageRequest(client_id="creds", data=b"x")),
        ("Broadcast", pb.BroadcastRequest(client_ids=["creds"], data=b"x")),
    ):
        assert app.call(method, request, anonymous=True)[0] == UNAUTHENTICATED
        bad = {"authorization": "Bearer aio_nonsense_nonsense_nonsense"}
        assert app.call(method, request, anonymous=True, **bad)[0] == UNAUTHENTICATED
    presence = app.stub.Presence(pb.PresenceRequest(), timeout=WITHIN)
    with pytest.raises(grpc.RpcError) as refused:
        next(presence)
    assert refused.value.code() == UNAUTHENTICATED
    # a holder's call with a bad bearer anyway is checked as usual
    bad = {"authorization": "Bearer aio_nonsense_nonsense_nonsense"}
    code, _ = app.call("GetMessages", pb.TokenRequest(token=token), anonymous=True, **bad)
    assert code == UNAUTHENTICATED
    # ... and with the owner's bearer it works
    assert len(app.ok("GetMessages", pb.TokenRequest(token=token)).messages) == 1
    assert not unhandled.records


def test_idempotency_keys_replay(app: App, unhandled: Unhandled) -> None:
    pb = app.pb
    token = app.create("idem").token
    request = pb.SendMessageRequest(client_id="idem", data=b"once")
    key = {"idempotency-key": "chan-idem-0001"}
    first = app.ok("SendMessage", request, **key)
    second = app.ok("SendMessage", request, **key)
    assert first.position == second.position
    pop = pb.PopMessageRequest(token=token)
    app.send("idem", b"twice")
    popped = app.ok("PopMessage", pop, anonymous=True, **{"idempotency-key": "chan-idem-pop1"})
    replay = app.ok("PopMessage", pop, anonymous=True, **{"idempotency-key": "chan-idem-pop1"})
    assert popped.message.offset == replay.message.offset == 1
    got = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert [m.data for m in got.messages] == [b"twice"]  # stored once, popped once
    assert not unhandled.records


# -- hostile input ------------------------------------------------------------------------------


def test_garbage_and_forged_tokens(app: App, unhandled: Unhandled) -> None:
    token = app.create("garbage").token
    for bad in (
        "",
        "x",
        "aio_ch_",
        "aio_ch_.",
        "aio_ch_!!!.###",
        "aio_ch_" + "A" * 100 + ".",
        "aio_ch_eyJ9.c2ln",  # base64 of nonsense JSON
        forged(token),
        token[: len(token) // 2],
        token + "A",
        "\u00e9\u6f22" * 50,
        "A" * 200_000,
    ):
        for method in HOLDER_CALLS:
            code, details = app.holder(method, bad)
            assert code == UNAUTHENTICATED, (method, bad[:40], code, details)
            assert token not in str(details)
        listen = Listen(app)
        listen.start(bad)
        assert listen.status() == UNAUTHENTICATED
    replaced = token
    app.create("garbage")  # a replacement: the old token is well formed but no longer live
    for method in HOLDER_CALLS:
        code, _ = app.holder(method, replaced)
        expected = OK if method == "InspectToken" else NOT_FOUND
        assert code == expected, (method, code)
    info = app.ok("InspectToken", app.pb.TokenRequest(token=replaced), anonymous=True)
    assert (info.client_id, info.live) == ("garbage", False)
    listen = Listen(app)
    listen.start(replaced)
    assert listen.status() == NOT_FOUND
    assert not unhandled.records


def test_bad_client_ids_durations_and_data(app: App, unhandled: Unhandled) -> None:
    pb = app.pb
    for client_id in ("", "x" * 65, "\u00e9" * 33, "x" * 1_000_000, "a\x00b", "line\nbreak"):
        for request in (
            pb.CreateChannelRequest(client_id=client_id),
            pb.SendMessageRequest(client_id=client_id, data=b"x"),
        ):
            method = type(request).__name__.removesuffix("Request")
            code, details = app.call(method, request)
            assert code == INVALID, (method, client_id[:20], code, details)
        code, _ = app.call("Broadcast", pb.BroadcastRequest(client_ids=["ok", client_id]))
        assert code == INVALID
    for minutes in (0, 1441, 2**32 - 1):
        code, _ = app.call(
            "CreateChannel",
            pb.CreateChannelRequest(client_id="durations", duration_minutes=minutes),
        )
        assert code == INVALID, minutes
    token = app.create("data").token
    for request in (
        pb.SendMessageRequest(client_id="data", data=b"x" * (MAX_MESSAGE + 1)),
        pb.SendMessageRequest(client_id="data", data=b"\xff\xfe", text=True),
        pb.SendMessageRequest(client_id="data", data=b"\xed\xa0\x80", text=True),  # a surrogate
        pb.BroadcastRequest(client_ids=["data"], data=b"x" * (MAX_MESSAGE + 1)),
    ):
        method = type(request).__name__.removesuffix("Request")
        assert app.call(method, request)[0] == INVALID
    assert app.send("data", b"x" * MAX_MESSAGE).offset == 1
    code, _ = app.call("SendMessage", pb.SendMessageRequest(client_id="nobody", data=b"x"))
    assert code == NOT_FOUND
    # a broadcast naming one channel twice, or none, is answered (whichever way), not a crash
    for ids in (["data", "data"], []):
        code, _ = app.call("Broadcast", pb.BroadcastRequest(client_ids=ids, data=b"y"))
        assert code not in NEVER, ids
    got = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert got.messages[0].data == b"x" * MAX_MESSAGE
    assert not unhandled.records


def test_hostile_listen_streams(app: App, unhandled: Unhandled) -> None:
    pb = app.pb
    created = app.create("listen")
    token = created.token
    app.send("listen", "one")

    # a stream that ends without ever sending start
    listen = Listen(app)
    listen.requests.end()
    assert listen.status() == INVALID

    # an ack, or a request with nothing in it, before start
    for first in (pb.ListenRequest(ack=pb.ListenAck(offset=1)), pb.ListenRequest()):
        listen = Listen(app)
        listen.requests.send(first)
        assert listen.status() == INVALID
    # a close before start ends the stream, one way or the other
    listen = Listen(app)
    listen.close()
    assert listen.status() not in NEVER

    # an ack beyond what was sent: refused, or taken for what was sent (never for messages
    # sent later: those are still delivered)
    listen = Listen(app)
    listen.start(token)
    assert listen.next().WhichOneof("kind") == "connected"
    assert [m.offset for m in listen.messages(1)] == [1]
    listen.ack(10**6)
    app.send("listen", "two")
    try:
        answer = listen.next()
    except grpc.RpcError as exc:
        refused: grpc.StatusCode | None = exc.code()
        listen.requests.end()
    else:
        refused = None
    if refused is not None:
        assert refused in (INVALID, OUT_OF_RANGE), refused
    else:
        assert answer.WhichOneof("kind") == "messages"
        assert [m.data for m in answer.messages.messages] == [b"two"]
        listen.close()
        assert listen.status() == OK
    pending = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert [m.data for m in pending.messages] == [b"two"]  # "one" acknowledged, "two" kept
    app.send("listen", "three")

    # start twice
    listen = Listen(app)
    listen.start(token)
    assert listen.next().WhichOneof("kind") == "connected"
    listen.start(token)
    assert listen.status() == INVALID

    # resuming from another epoch, or past the end: continuity lost
    for after in (
        pb.ChannelPosition(epoch="not-the-epoch", offset=1),
        pb.ChannelPosition(epoch=created.epoch, offset=99),
    ):
        listen = Listen(app)
        listen.start(token, after=after)
        assert listen.status() == OUT_OF_RANGE

    # a huge window is the server's to bound: the stream works
    listen = Listen(app)
    listen.start(token, window=2**32 - 1)
    assert listen.next().WhichOneof("kind") == "connected"
    assert [m.data for m in listen.messages(2)] == [b"two", b"three"]
    listen.close()
    assert listen.status() == OK

    # many streams opened and dropped at once
    for _ in range(10):
        call = app.stub.Listen(
            iter([pb.ListenRequest(start=pb.ListenStart(token=token))]), timeout=WITHIN
        )
        next(call)
        call.cancel()
    assert not unhandled.records


def test_a_newer_listen_takes_over_the_older(app: App, unhandled: Unhandled) -> None:
    token = app.create("takeover").token
    older = Listen(app)
    older.start(token)
    assert older.next().WhichOneof("kind") == "connected"
    newer = Listen(app)
    newer.start(token)
    assert newer.next().WhichOneof("kind") == "connected"
    assert older.status() == grpc.StatusCode.ABORTED
    app.send("takeover", "to the newer")
    assert [m.data for m in newer.messages(1)] == [b"to the newer"]
    newer.close()
    assert newer.status() == OK
    assert not unhandled.records


def test_the_server_is_healthy_after_the_abuse(
    app: App, admin: httpx.Client, unhandled: Unhandled
) -> None:
    """Many concurrent hostile and ordinary calls; afterwards an ordinary round trip works."""
    pb = app.pb
    token = app.create("healthy").token
    errors: list[BaseException] = []

    def abuse(n: int) -> None:
        try:
            for method in HOLDER_CALLS:
                assert app.holder(method, f"aio_ch_{n}.x")[0] == UNAUTHENTICATED
            listen = Listen(app)
            listen.requests.send(pb.ListenRequest(ack=pb.ListenAck(offset=n)))
            assert listen.status() == INVALID
            app.send("healthy", f"h{n}")
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=abuse, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WITHIN)
    assert not errors, errors
    got = app.ok("GetMessages", pb.TokenRequest(token=token), anonymous=True)
    assert sorted(m.data for m in got.messages) == sorted(f"h{n}".encode() for n in range(8))
    assert [m.offset for m in got.messages] == list(range(1, 9))
    assert admin.get("/").status_code == 200
    assert not unhandled.records
