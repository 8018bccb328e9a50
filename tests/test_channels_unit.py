"""Channels, the pure logic (no server): the checks made before any request, the one table
that refines channel errors, positions and messages from the wire, and what never shows a
token."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from grpclib.const import Status

import aiosdk
from aiosdk._core.errors import error_for_grpc_status
from aiosdk.channels import types
from aiosdk.channels.types import (
    MAX_MESSAGE_BYTES,
    ChannelMessage,
    ChannelPosition,
    PresenceEvent,
    channel_message,
    check_client_id,
    encode_message,
    presence_event,
    refined,
)
from aiosdk.proto import ChannelMessage as WireMessage
from aiosdk.proto import PresenceEvent as WirePresenceEvent
from aiosdk.proto import PresenceKind

TOKEN = "aio_ch_eyJjIjoiZGV2aWNlLTE3In0.c2lnbmF0dXJl"


# --- client ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["a", "device-17", "é" * 32, "x" * 64, "日本語", "a b"])
def test_client_ids_the_server_takes_pass(client_id: str) -> None:
    assert check_client_id(client_id) == client_id


@pytest.mark.parametrize(
    ("client_id", "says"),
    [
        ("", "1 to 64 bytes"),
        ("x" * 65, "not 65"),
        ("é" * 33, "not 66"),  # 33 characters, 66 bytes
        ("a\nb", "control"),
        ("a\x00", "control"),
        ("tab\t", "control"),
        ("\x7f", "control"),
        ("\x85", "control"),  # C1
        ("\ud800", "not UTF-8"),
        (17, "not int"),
        (b"device", "not bytes"),
        (None, "not NoneType"),
    ],
)
def test_bad_client_ids_are_refused_before_any_request(client_id: object, says: str) -> None:
    with pytest.raises(aiosdk.InvalidChannelIdError, match=says) as caught:
        check_client_id(client_id)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, aiosdk.AiosdkError)


# --- messages ------------------------------------------------------------------------------


def test_text_and_bytes_messages_encode_with_their_kind() -> None:
    assert encode_message("héllo") == ("héllo".encode(), True)
    assert encode_message(b"\x00\xff") == (b"\x00\xff", False)
    assert encode_message(bytearray(b"ab")) == (b"ab", False)
    assert encode_message(memoryview(b"ab")) == (b"ab", False)
    assert encode_message("") == (b"", True)


def test_messages_up_to_32_kib_pass_and_larger_ones_are_refused() -> None:
    assert len(encode_message(b"x" * MAX_MESSAGE_BYTES)[0]) == 32 * 1024
    assert len(encode_message("x" * MAX_MESSAGE_BYTES)[0]) == 32 * 1024
    with pytest.raises(aiosdk.MessageTooLargeError, match="not 32769") as caught:
        encode_message(b"x" * (MAX_MESSAGE_BYTES + 1))
    error = caught.value
    assert isinstance(error, aiosdk.RequestTooLargeError)
    assert error.status_code == 413
    assert str(error) == error.message  # found by the client: no status came
    # Text counts in bytes of UTF-8: 16,385 two-byte characters are over.
    with pytest.raises(aiosdk.MessageTooLargeError):
        encode_message("é" * (MAX_MESSAGE_BYTES // 2 + 1))


@pytest.mark.parametrize("message", [17, None, ["a"], {"a": 1}])
def test_messages_are_str_or_bytes(message: object) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="str or bytes"):
        encode_message(message)


def test_text_with_lone_surrogates_is_refused() -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="surrogates"):
        encode_message("a\udc80")


# --- other arguments -----------------------------------------------------------------------


def test_durations_windows_and_positions_are_checked() -> None:
    assert types.check_duration(None) is None
    assert types.check_duration(1) == 1
    assert types.check_duration(1440) == 1440
    for bad in (0, 1441, -5, True, 2.5, "60"):
        with pytest.raises(aiosdk.ConfigurationError):
            types.check_duration(bad)
    assert types.check_window(None) == 0  # the server's default
    assert types.check_window(10) == 10
    for bad in (0, -1, 2**32, False, 1.0):
        with pytest.raises(aiosdk.ConfigurationError):
            types.check_window(bad)
    position = ChannelPosition("e1", 3)
    assert types.check_after(position) is position
    assert types.check_after(None) is None
    with pytest.raises(aiosdk.ConfigurationError, match="ChannelPosition"):
        types.check_after(("e1", 3))
    assert types.check_event_id(None) is None
    assert types.check_event_id(0) == 0
    with pytest.raises(aiosdk.ConfigurationError):
        types.check_event_id(-1)


def test_tokens_are_checked_without_showing_them() -> None:
    assert types.check_token(TOKEN) == TOKEN
    for bad in ("", "x" * 5000, "aio_ch_\n", "aio_ch_é"):
        assert types.token_text(bad) is None
        with pytest.raises(aiosdk.InvalidTokenError) as caught:
            types.check_token(bad)
        assert bad not in str(caught.value) or not bad
    with pytest.raises(aiosdk.ConfigurationError) as wrong:
        types.check_token(12345678)
    assert "12345678" not in str(wrong.value)


def test_a_connection_never_shows_its_token() -> None:
    client = aiosdk.AsyncClient("http://127.0.0.1:9")
    connection = client.channels.connect(TOKEN)
    assert TOKEN not in repr(connection)
    assert TOKEN not in str(vars(connection))
    assert "not connected" in repr(connection)
    with pytest.raises(aiosdk.InvalidTokenError):
        client.channels.connect("")
    with pytest.raises(aiosdk.ConfigurationError):
        client.channels.connect(TOKEN, window=0)


# --- positions and messages from the wire --------------------------------------------------


def test_positions_are_values() -> None:
    assert ChannelPosition("e", 2) == ChannelPosition("e", 2)
    assert ChannelPosition("e", 2) != ChannelPosition("f", 2)
    assert hash(ChannelPosition("e", 2)) == hash(ChannelPosition("e", 2))
    with pytest.raises(AttributeError):
        ChannelPosition("e", 2).offset = 3  # type: ignore[misc]
    with pytest.raises(aiosdk.ConfigurationError):
        ChannelPosition("e", -1)
    with pytest.raises(aiosdk.ConfigurationError):
        ChannelPosition(3, 1)  # type: ignore[arg-type]
    assert ChannelPosition("e", 2)._wire.offset == 2


def test_wire_messages_become_text_or_bytes_at_their_position() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    text = channel_message(
        WireMessage(offset=7, data="hé".encode(), text=True, sent_at=at), "e", ""
    )
    assert text == ChannelMessage("hé", ChannelPosition("e", 7), at)
    raw = channel_message(WireMessage(offset=8, data=b"\xff", text=False, sent_at=at), "e", "")
    assert raw.data == b"\xff"
    assert raw.position.offset == 8
    with pytest.raises(aiosdk.ProtocolError):
        channel_message(WireMessage(offset=9, data=b"\xff", text=True), "e", "Listen")


def test_presence_events_from_the_wire() -> None:
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    wire = WirePresenceEvent(id=5, client_id="d", kind=PresenceKind.DISCONNECTED, at=at, clean=True)
    assert presence_event(wire) == PresenceEvent(5, "d", "disconnected", at, True)
    wire = WirePresenceEvent(id=6, client_id="d", kind=PresenceKind.CONNECTED, at=at)
    assert presence_event(wire).kind == "connected"
    with pytest.raises(aiosdk.ProtocolError):
        presence_event(WirePresenceEvent(id=7, client_id="d"))


# --- errors --------------------------------------------------------------------------------


def _grpc(status: Status, message: str = "refused", token_sent: bool = False) -> aiosdk.StatusError:
    return error_for_grpc_status(status, message, token_sent=token_sent)


def test_a_token_holders_refusals_name_the_tokens_problem() -> None:
    bad = refined(_grpc(Status.UNAUTHENTICATED, "bad signature"), "holder")
    assert type(bad) is aiosdk.InvalidTokenError
    assert bad.message == "bad signature"
    assert bad.status_code == 401
    assert bad.grpc_status == "UNAUTHENTICATED"
    sent = _grpc(Status.UNAUTHENTICATED, token_sent=True)  # (a bearer was sent too)
    assert refined(sent, "holder") is sent
    gone = refined(_grpc(Status.NOT_FOUND, "the token expired"), "holder")
    assert type(gone) is aiosdk.TokenTimedOutError
    assert isinstance(gone, aiosdk.NotFoundError)
    assert gone.status_code == 404
    lost = refined(_grpc(Status.OUT_OF_RANGE, "continuity lost: epoch"), "holder")
    assert type(lost) is aiosdk.ContinuityLostError
    assert lost.status_code == 400
    taken = _grpc(Status.ABORTED, "another connection took over this channel")
    assert refined(taken, "holder") is taken
    assert isinstance(taken, aiosdk.ConflictError)


def test_a_sends_refusals() -> None:
    full = refined(_grpc(Status.RESOURCE_EXHAUSTED, "the channel's queue is full"), "send")
    assert type(full) is aiosdk.ChannelFullError
    assert isinstance(full, aiosdk.RateLimitError)
    assert full.status_code == 429
    # A gRPC size limit stays what it is; a send to no live channel a plain NotFoundError.
    big = _grpc(Status.RESOURCE_EXHAUSTED, "message larger than max (5 vs. 4)")
    assert refined(big, "send") is big
    assert type(big) is aiosdk.RequestTooLargeError
    missing = _grpc(Status.NOT_FOUND, "no live channel")
    assert refined(missing, "send") is missing
    assert type(missing) is aiosdk.NotFoundError


def test_the_applications_own_refusals_are_not_refined() -> None:
    for status in (Status.UNAUTHENTICATED, Status.NOT_FOUND, Status.RESOURCE_EXHAUSTED):
        error = _grpc(status)
        assert refined(error, "owner") is error


def test_channel_errors_form_one_hierarchy() -> None:
    assert issubclass(aiosdk.TokenTimedOutError, aiosdk.NotFoundError)
    assert issubclass(aiosdk.ContinuityLostError, aiosdk.StatusError)
    assert issubclass(aiosdk.ChannelFullError, aiosdk.RateLimitError)
    assert issubclass(aiosdk.MessageTooLargeError, aiosdk.RequestTooLargeError)
    assert issubclass(aiosdk.InvalidChannelIdError, ValueError)
    assert aiosdk.ContinuityLostError.status_code == 400
