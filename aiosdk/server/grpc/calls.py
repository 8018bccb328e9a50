"""Per-call bookkeeping of gRPC calls: request ids, counters, message limits, client mistakes
and internal errors.

grpclib runs a call's listeners and handler in one task, so a context variable set when the
request arrives is seen when its metadata is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from contextvars import ContextVar

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, SendInitialMetadata, SendTrailingMetadata, listen
from grpclib.exceptions import StreamTerminatedError
from grpclib.server import Server, Stream
from starlette.exceptions import HTTPException

from ..logs import choose_request_id, logger
from ..state import Metrics
from .errors import grpc_error
from .messages import ClientMistake, limit_message_size

__all__ = ["REQUEST_ID_KEY", "CallTracker", "track_calls"]

REQUEST_ID_KEY = "x-request-id"

_request_id: ContextVar[str] = ContextVar("aiosdk_grpc_request_id")


class CallTracker:
    """Counts the running streaming calls, in :class:`Metrics` and for shutdown."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._idle = asyncio.Event()
        self._idle.set()

    def stream_opened(self) -> None:
        """A streaming call started."""
        self._metrics.active_streams += 1
        self._idle.clear()

    def stream_closed(self) -> None:
        """A streaming call ended."""
        self._metrics.active_streams -= 1
        if not self._metrics.active_streams:
            self._idle.set()

    async def wait_streams_closed(self) -> None:
        """Return once no streaming call runs."""
        await self._idle.wait()


def track_calls(
    server: Server,
    metrics: Metrics,
    streaming_methods: Collection[str],
    max_message_bytes: int,
) -> CallTracker:
    """Instrument every call to ``server``.

    Each call gets a request id (the client's ``x-request-id`` when sane), sent back in its
    initial and trailing metadata. Completed calls are counted; running ``streaming_methods``
    are tracked by the returned :class:`CallTracker`. A request message over
    ``max_message_bytes`` is refused unread. A :class:`~.messages.ClientMistake` is logged in
    one line; an unexpected exception becomes ``INTERNAL`` with a generic message and is logged
    with its traceback. Register before any other ``RecvRequest`` listener so that their errors
    carry the request id too.
    """
    streaming = frozenset(streaming_methods)
    tracker = CallTracker(metrics)

    async def on_request(event: RecvRequest) -> None:
        _request_id.set(choose_request_id(event.metadata.get(REQUEST_ID_KEY)))
        handler = event.method_func
        method_name = event.method_name

        async def guarded(stream: Stream[object, object]) -> None:
            is_stream = method_name in streaming
            if is_stream:
                tracker.stream_opened()
            limit_message_size(stream, max_message_bytes)
            try:
                await handler(stream)
            except ClientMistake as exc:
                logger.info(
                    "Refused %s -> %s: %s (request %s)",
                    method_name,
                    exc.status.name,
                    exc.message,
                    _request_id.get(),
                )
                raise
            except (GRPCError, StreamTerminatedError, TimeoutError):
                raise
            except HTTPException as exc:  # a refusal from code shared with the HTTP API
                raise grpc_error(exc) from None
            except Exception:
                logger.exception(
                    "Unhandled error in %s (request %s)", method_name, _request_id.get()
                )
                raise GRPCError(Status.INTERNAL, "Internal server error") from None
            finally:
                if is_stream:
                    tracker.stream_closed()

        event.method_func = guarded

    async def on_initial_metadata(event: SendInitialMetadata) -> None:
        event.metadata[REQUEST_ID_KEY] = _request_id.get("")

    async def on_trailing_metadata(event: SendTrailingMetadata) -> None:
        event.metadata[REQUEST_ID_KEY] = _request_id.get("")
        metrics.requests_served += 1

    listen(server, RecvRequest, on_request)
    listen(server, SendInitialMetadata, on_initial_metadata)
    listen(server, SendTrailingMetadata, on_trailing_metadata)
    return tracker
