"""The gRPC port's limits: message size, malformed messages, the connection cap, the deadline
for a first call and the idle timeout; with grpclib, raw HTTP/2 and the official grpcio client."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import betterproto2
import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import StreamTerminatedError

from aiosdk.proto import GetStatusRequest, ServerStatus, StatusServiceStub
from aiosdk.server import Server
from aiosdk.server.grpc.messages import check_wire_format

from .grpcio_stubs import grpcio_stubs
from .wire import GUARD_SECONDS, serving

pytestmark = pytest.mark.anyio

GET_STATUS = "/aiosdk.v1.StatusService/GetStatus"
MESSAGE_LIMIT = 1024


class RawCodec(CodecBase):
    """Sends and receives message bytes as they are: what a client that encodes badly sends."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


def get_status_request_of(size: int) -> bytes:
    """A valid GetStatusRequest of exactly ``size`` bytes: one unknown field, which parsers skip."""
    for length_of_length in range(1, 6):
        content = size - 1 - length_of_length
        length = _varint(content)
        if len(length) == length_of_length:
            message = b"\x7a" + length + b"a" * content  # field 15, length-delimited
            assert GetStatusRequest.FromString(message) == GetStatusRequest()
            return message
    raise ValueError(size)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with serving(
        tmp_path_factory.mktemp("data"),
        max_grpc_message_bytes=MESSAGE_LIMIT,
        header_timeout_seconds=0.5,
        grpc_idle_timeout_seconds=0.5,
    ) as running:
        yield running


def metadata(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {server.admin_token}"}


@contextlib.asynccontextmanager
async def raw_channel(server: Server) -> AsyncIterator[Channel]:
    channel = Channel(server.grpc_host, server.grpc_port, codec=RawCodec())
    try:
        yield channel
    finally:
        channel.close()


async def _unary(channel: Channel, server: Server, message: bytes) -> bytes:
    async with channel.request(
        GET_STATUS, Cardinality.UNARY_UNARY, bytes, bytes, metadata=metadata(server)
    ) as stream:
        await stream.send_message(message, end=True)
        reply = await stream.recv_message()
    assert reply is not None
    return reply


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


# Message size


async def test_a_message_at_the_limit_is_served(server: Server) -> None:
    async with raw_channel(server) as channel:
        reply = await _unary(channel, server, get_status_request_of(MESSAGE_LIMIT))
    assert ServerStatus.FromString(reply).version


async def test_a_message_over_the_limit_is_resource_exhausted(server: Server) -> None:
    async with raw_channel(server) as channel:
        with pytest.raises(GRPCError) as caught:
            await _unary(channel, server, get_status_request_of(MESSAGE_LIMIT + 1))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert caught.value.message == f"Received message larger than max (1025 vs. {MESSAGE_LIMIT})"


async def test_a_huge_message_is_refused_unread(server: Server) -> None:
    """64 MiB announced: refused on its length prefix, the client is stopped by flow control
    and the stream reset, long before the message is sent."""
    message = get_status_request_of(64 << 20)
    async with raw_channel(server) as channel:
        with anyio.fail_after(GUARD_SECONDS):
            sent, error = await _send_huge(channel, server, message)
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert sent < len(message) // 8  # about the HTTP/2 window (4 MiB), not the message


async def _send_huge(channel: Channel, server: Server, message: bytes) -> tuple[int, GRPCError]:
    """How much of ``message`` went out, and the call's error."""
    try:
        async with channel.request(
            GET_STATUS, Cardinality.UNARY_UNARY, bytes, bytes, metadata=metadata(server)
        ) as stream:
            with contextlib.suppress(StreamTerminatedError):  # reset while sending
                await stream.send_message(message, end=True)
            sent = stream._stream.data_sent
            await stream.recv_message()
    except GRPCError as error:
        return sent, error
    raise AssertionError("the call succeeded")


async def test_the_default_limit_is_grpcios_4_mib(tmp_path: Path) -> None:
    async with serving(tmp_path) as server, raw_channel(server) as channel:
        await _unary(channel, server, get_status_request_of(4 << 20))
        with pytest.raises(GRPCError) as caught:
            await _unary(channel, server, get_status_request_of((4 << 20) + 1))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED


# Malformed messages

WATCH_STATUS = "/aiosdk.v1.StatusService/WatchStatus"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (GET_STATUS, b"\x0a\x05ab"),  # a length-delimited field cut short
        (GET_STATUS, b"\x08" + b"\x80" * 11),  # a number that never ends
        (GET_STATUS, b"\x0f"),  # an invalid wire type
        (WATCH_STATUS, b"\x09\x00"),  # interval_seconds (a double) cut short
        (WATCH_STATUS, b"\x0a\x08" + bytes(8)),  # interval_seconds sent as bytes
        (WATCH_STATUS, b"\x0b"),  # a group: betterproto2 would make interval_seconds None
        (WATCH_STATUS, b"\x11\x00\x00\x00\x00\x00\x00\x00\x00"),  # max_updates as fixed64
    ],
)
async def test_a_malformed_message_is_invalid_argument_logged_in_one_line(
    server: Server, method: str, message: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw_channel(server) as channel:
        with pytest.raises(GRPCError) as caught:
            await _first_reply(channel, server, method, message)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert "is not a valid" in (caught.value.message or "")
    logged = [r for r in caplog.records if method in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.INFO
    assert "INVALID_ARGUMENT" in logged[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)


async def _first_reply(channel: Channel, server: Server, method: str, message: bytes) -> None:
    async with channel.request(
        method, Cardinality.UNARY_STREAM, bytes, bytes, metadata=metadata(server)
    ) as stream:
        await stream.send_message(message, end=True)
        await stream.recv_message()


# Message classes as betterproto2 generates them, with the field kinds status.proto lacks.


@dataclasses.dataclass(eq=False, repr=False)
class Child(betterproto2.Message):
    name: str = betterproto2.field(1, betterproto2.TYPE_STRING)


@dataclasses.dataclass(eq=False, repr=False)
class Sample(betterproto2.Message):
    numbers: list[int] = betterproto2.field(1, betterproto2.TYPE_INT32, repeated=True)  # noqa: RUF009
    weights: list[float] = betterproto2.field(2, betterproto2.TYPE_DOUBLE, repeated=True)  # noqa: RUF009
    child: Child | None = betterproto2.field(3, betterproto2.TYPE_MESSAGE, optional=True)  # noqa: RUF009


@pytest.mark.parametrize(
    "message",
    [
        b"",
        bytes(Sample(numbers=[1, 300, -1], weights=[0.5, 2.0], child=Child(name="x"))),
        b"\x08\x01\x08\x02",  # numbers, not packed
        b"\x11" + bytes(8),  # weights, not packed
        b"\x7a\x02ab\x78\x05",  # unknown fields (15 and 15), kept
    ],
)
def test_well_formed_messages_pass_the_wire_format_check(message: bytes) -> None:
    check_wire_format(message, Sample)
    Sample.parse(message)


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (b"\x0a\x02\x01", "ends inside a field"),  # packed numbers cut short
        (b"\x0a\x01\x80", "int32, not sent as one"),  # a packed number cut short
        (b"\x12\x03" + bytes(3), "double, not sent as one"),  # 3 bytes of packed doubles
        (b"\x1a\x02\x0a\x05", "ends inside a field"),  # the nested message cut short
        (b"\x1a\x01\x08", "ends inside a number"),
        (b"\x1d" + bytes(4), "message, not sent as one"),  # child as fixed32
        (b"\x00\x01", "field number 0"),
        (b"\x7c", "wire type 4"),  # an unknown field's group end
    ],
)
def test_malformed_messages_fail_the_wire_format_check(message: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        check_wire_format(message, Sample)


# The official grpcio client, with stubs built from our own .proto files


@pytest.fixture(scope="module")
def grpcio_status(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """grpcio's stubs of status.proto."""
    with grpcio_stubs(tmp_path_factory.mktemp("stubs"), "status") as modules:
        yield modules["status_pb2_grpc"]


def grpcio_calls(
    server: Server, stubs: ModuleType, oversized: bytes, malformed: bytes
) -> list[Any]:
    """A normal call with the generated stub, then raw calls: what grpcio reports for each."""
    target = f"{server.grpc_host}:{server.grpc_port}"
    call_metadata = list(metadata(server).items())
    results: list[Any] = []
    with grpc.insecure_channel(target) as channel:
        stub = stubs.StatusServiceStub(channel)
        request_type = stubs.status__pb2.GetStatusRequest
        results.append(stub.GetStatus(request_type(), metadata=call_metadata, timeout=10).version)
        raw = channel.unary_unary(GET_STATUS)  # bytes in, bytes out
        for message in (oversized, malformed):
            try:
                raw(message, metadata=call_metadata, timeout=10)
            except grpc.RpcError as error:
                results.append((error.code(), error.details()))
    return results


async def test_the_grpcio_client_sees_the_same_answers(
    server: Server, grpcio_status: ModuleType
) -> None:
    version, oversized, malformed = await anyio.to_thread.run_sync(
        grpcio_calls,
        server,
        grpcio_status,
        get_status_request_of(MESSAGE_LIMIT + 1),
        b"\x0a\x05ab",
    )
    assert version
    assert oversized[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert malformed[0] is grpc.StatusCode.INVALID_ARGUMENT


# Connections


async def test_a_connection_without_a_call_is_closed(server: Server) -> None:
    async with await anyio.connect_tcp(server.grpc_host, server.grpc_port) as stream:
        h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2_client.initiate_connection()
        await stream.send(h2_client.data_to_send())  # the preface, then no call
        assert await _events_until_closed(stream, h2_client) is not None


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    async with await anyio.connect_tcp(server.grpc_host, server.grpc_port) as stream:
        with anyio.fail_after(GUARD_SECONDS):
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while await stream.receive():  # the server's preface, then its close
                    pass


async def test_an_idle_connection_gets_a_goaway_and_the_client_reconnects(server: Server) -> None:
    async with await anyio.connect_tcp(server.grpc_host, server.grpc_port) as stream:
        h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2_client.initiate_connection()
        stream_id = h2_client.get_next_available_stream_id()
        h2_client.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", GET_STATUS),
                (":authority", "127.0.0.1"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *metadata(server).items(),
            ],
        )
        h2_client.send_data(stream_id, b"\x00\x00\x00\x00\x00", end_stream=True)
        await stream.send(h2_client.data_to_send())
        goaway = await _events_until_closed(stream, h2_client)
    assert goaway is not None
    assert goaway.error_code == 0  # NO_ERROR: a graceful end
    assert goaway.last_stream_id == stream_id  # the call was answered, none was dropped

    channel = Channel(server.grpc_host, server.grpc_port)
    try:
        stub = StatusServiceStub(channel, metadata=metadata(server))
        await stub.get_status()
        with anyio.fail_after(GUARD_SECONDS):
            protocol = channel._protocol
            while protocol is not None and not protocol.handler.connection_lost:  # noqa: ASYNC110
                await anyio.sleep(0.05)  # the server closes the idle connection
        assert (await stub.get_status()).version  # a new connection, made on demand
    finally:
        channel.close()


async def _events_until_closed(
    stream: Any, h2_client: h2.connection.H2Connection
) -> h2.events.ConnectionTerminated | None:
    """Read HTTP/2 frames until the server closes; its GOAWAY, if it sent one."""
    goaway = None
    with anyio.fail_after(GUARD_SECONDS):
        while True:
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return goaway
            for event in h2_client.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway = event
            with contextlib.suppress(anyio.BrokenResourceError):
                await stream.send(h2_client.data_to_send())


async def test_connections_past_the_cap_get_a_goaway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        serving(tmp_path, max_connections=2, header_timeout_seconds=60) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        held = [
            await stack.enter_async_context(
                await anyio.connect_tcp(server.grpc_host, server.grpc_port)
            )
            for _ in range(2)
        ]
        for _ in range(3):
            async with await anyio.connect_tcp(server.grpc_host, server.grpc_port) as stream:
                h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                h2_client.initiate_connection()
                await stream.send(h2_client.data_to_send())
                goaway = await _events_until_closed(stream, h2_client)
                assert goaway is not None
                assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
                assert goaway.last_stream_id == 0  # nothing processed: safe to retry
        refusals = [r for r in caplog.records if "at its limit of 2 connections" in r.message]
        assert len(refusals) == 1

        channel = Channel(server.grpc_host, server.grpc_port)
        try:
            stub = StatusServiceStub(channel, metadata=metadata(server))
            with pytest.raises((StreamTerminatedError, ConnectionError)):
                await stub.get_status()
            await held[0].aclose()
            with anyio.fail_after(GUARD_SECONDS):
                while True:
                    channel.close()
                    channel = Channel(server.grpc_host, server.grpc_port)
                    stub = StatusServiceStub(channel, metadata=metadata(server))
                    with contextlib.suppress(StreamTerminatedError, ConnectionError):
                        assert (await stub.get_status()).version
                        break
                    await anyio.sleep(0.01)
        finally:
            channel.close()
