"""Request messages a client got wrong: too large to read, or not a valid protobuf encoding.

grpclib has neither a maximum message size nor a decoding error of its own: it reads a message
of any length the client announces, and a decoding failure surfaces as whatever exception the
protobuf runtime raises (an ``INTERNAL`` error with a traceback in the log). Both are the
client's mistake, answered as grpcio answers them, and logged as such (:class:`ClientMistake`).

betterproto2's parser is also lenient: it accepts fields cut short, and a field sent with the
wrong wire type can come out as ``None`` where a number is declared, which the handler then
trips over. So the framing is checked first (:func:`check_wire_format`), as strictly as the
reference protobuf runtime does.
"""

from __future__ import annotations

from typing import Any

import betterproto2
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.server import Stream

__all__ = ["ClientMistake", "RequestCodec", "check_wire_format", "limit_message_size"]

_WIRE_TYPES = {
    **dict.fromkeys(betterproto2.WIRE_VARINT_TYPES, betterproto2.WIRE_VARINT),
    **dict.fromkeys(betterproto2.WIRE_FIXED_64_TYPES, betterproto2.WIRE_FIXED_64),
    **dict.fromkeys(betterproto2.WIRE_FIXED_32_TYPES, betterproto2.WIRE_FIXED_32),
    **dict.fromkeys(betterproto2.WIRE_LEN_DELIM_TYPES, betterproto2.WIRE_LEN_DELIM),
}
_FIXED_SIZES = {betterproto2.WIRE_FIXED_64: 8, betterproto2.WIRE_FIXED_32: 4}
_MAX_VARINT_BYTES = 10


class ClientMistake(GRPCError):
    """A call refused for what the client sent; logged in one line, without a traceback."""


class RequestCodec(ProtoCodec):
    """grpclib's protobuf codec, with ``INVALID_ARGUMENT`` for a request it cannot decode."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            check_wire_format(data, message_type)
            return super().decode(data, message_type)
        except Exception as exc:  # the runtime raises EOFError, struct.error, KeyError...
            raise ClientMistake(
                Status.INVALID_ARGUMENT,
                f"The request is not a valid {message_type.__name__} message: {exc}",
            ) from None


def limit_message_size(stream: Stream[Any, Any], max_bytes: int) -> None:
    """Refuse, with ``RESOURCE_EXHAUSTED``, a request message on ``stream`` over ``max_bytes``.

    The check runs on the length prefix, before the message is read: the client cannot send
    more than the HTTP/2 flow-control window that grpclib grants before reading, so a refused
    message is never held whole.
    """
    # grpclib reads each message through its HTTP/2 stream: a 5-byte prefix, then the length
    # the prefix announces. It has no hook for this, hence the wrapped method.
    h2_stream = stream._stream
    read = h2_stream.recv_data

    async def recv_data(size: int) -> bytes:
        if size > max_bytes:
            raise ClientMistake(
                Status.RESOURCE_EXHAUSTED,
                f"Received message larger than max ({size} vs. {max_bytes})",
            )
        data: bytes = await read(size)
        return data

    h2_stream.recv_data = recv_data  # type: ignore[method-assign]


def check_wire_format(data: bytes, message_type: Any) -> None:
    """Raise :class:`ValueError` unless ``data`` encodes ``message_type`` (a betterproto2 class).

    Every field must be complete and of a wire type protobuf has (groups, long deprecated, are
    refused), and each field the message declares must come with the wire type of its type (or
    packed, for a repeated number); nested messages are checked the same way. Unknown fields
    are only checked for their framing.
    """
    metadata = message_type._betterproto
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 0x7
        if number == 0:
            raise ValueError("field number 0 is not valid")
        start = position
        if wire_type == betterproto2.WIRE_VARINT:
            _, position = _varint(data, position)
        elif wire_type in _FIXED_SIZES:
            position = _skip(data, position, _FIXED_SIZES[wire_type])
        elif wire_type == betterproto2.WIRE_LEN_DELIM:
            length, start = _varint(data, position)
            position = _skip(data, start, length)
        else:
            raise ValueError(f"field {number} has wire type {wire_type}, which is not supported")
        name = metadata.field_name_by_number.get(number)
        if name is None:
            continue
        meta = metadata.meta_by_field_name[name]
        value = data[start:position]
        if wire_type == _WIRE_TYPES[meta.proto_type]:
            if meta.proto_type in (betterproto2.TYPE_MESSAGE, betterproto2.TYPE_MAP):
                nested = meta.unwrap() if meta.unwrap else metadata.cls_by_field[name]
                check_wire_format(value, nested)
        elif not (
            wire_type == betterproto2.WIRE_LEN_DELIM
            and meta.repeated
            and meta.proto_type in betterproto2.PACKED_TYPES
            and _is_packed(value, _WIRE_TYPES[meta.proto_type])
        ):
            raise ValueError(
                f"field {number} ({name}) is a {meta.proto_type}, not sent as one"
                f" (wire type {wire_type})"
            )


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if position + index >= len(data):
            raise ValueError("the message ends inside a number")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, position + index + 1
    raise ValueError(f"a number is longer than {_MAX_VARINT_BYTES} bytes")


def _skip(data: bytes, position: int, length: int) -> int:
    end = position + length
    if end > len(data):
        raise ValueError("the message ends inside a field")
    return end


def _is_packed(value: bytes, element_wire_type: int) -> bool:
    size = _FIXED_SIZES.get(element_wire_type)
    if size is not None:
        return len(value) % size == 0
    try:
        position = 0
        while position < len(value):
            _, position = _varint(value, position)
    except ValueError:
        return False
    return True
