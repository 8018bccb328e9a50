"""The runtime of the blocking facade: one process-wide event loop in its own thread.

grpclib has no blocking transport, so the sync facade does not rewrite the async code: every sync
call submits the async call to this loop and waits. The loop thread starts on first use, a forked
child gets a fresh one, and Ctrl-C in the waiting thread cancels the call on the loop.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

import sniffio

__all__ = ["call", "iterate"]

T = TypeVar("T")

_lock = threading.Lock()
_portal: _Portal | None = None
_DONE = object()
_closing: set[asyncio.Task[None]] = set()
# asyncio's frames are plumbing between the caller and the async code: cut from tracebacks.
_PLUMBING = os.path.dirname(asyncio.__file__)


class _Portal:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="aiosdk-sync-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _get() -> _Portal:
    global _portal
    portal = _portal
    if portal is None:
        with _lock:
            if _portal is None:
                _portal = _Portal()
            portal = _portal
    return portal


def _forget_after_fork() -> None:
    # The loop thread does not exist in a forked child; the child starts its own on first use.
    global _portal, _lock
    _portal, _lock = None, threading.Lock()


def _stop_at_exit() -> None:
    if _portal is not None:
        _portal.stop()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_at_exit)


def in_loop_thread() -> bool:
    """Whether the caller is the facade's own loop thread."""
    return _portal is not None and threading.current_thread() is _portal.thread


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the facade's loop and return its result (or raise its exception)."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a blocking aiosdk call was made from aiosdk's own event loop thread, where it would "
            "deadlock; use the async API (aiosdk.AsyncClient) in async code"
        )
    loop = _get().loop
    # A bare lock and a done-callback: lighter than run_coroutine_threadsafe's Future/Condition.
    done = _thread.allocate_lock()
    done.acquire()
    tasks: list[asyncio.Task[T]] = []
    context = contextvars.copy_context()  # the caller's context (tracing, logging) goes along
    # ... but not the caller's async library (a sync call from inside trio runs on asyncio here)
    context.run(sniffio.current_async_library_cvar.set, None)

    def start() -> None:
        task = context.run(loop.create_task, coro)  # the task starts from a copy of it
        task.add_done_callback(lambda _: done.release())
        tasks.append(task)

    loop.call_soon_threadsafe(start)
    try:
        done.acquire()
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(lambda: tasks[0].cancel())  # runs after start(): FIFO
        done.acquire(timeout=5)  # let it unwind (close its connection) before re-raising
        raise
    task = tasks[0]
    if task.cancelled():
        raise RuntimeError("the call was cancelled because aiosdk's event loop is shutting down")
    error = task.exception()
    if error is not None:
        raise error.with_traceback(_trim(error.__traceback__))
    return task.result()


def iterate(source: AsyncIterator[T]) -> Iterator[T]:
    """A blocking iterator over ``source``; breaking out or dropping it closes ``source``."""
    iterator = source.__aiter__()
    try:
        while True:
            item = call(_next(iterator))
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None and _portal is not None and not _portal.loop.is_closed():
            if in_loop_thread():  # the garbage collector ran us on the loop thread
                task = _portal.loop.create_task(aclose())
                _closing.add(task)  # the loop keeps only a weak reference to its tasks
                task.add_done_callback(_closing.discard)
            else:
                call(aclose())


async def _next(iterator: AsyncIterator[T]) -> T | object:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _DONE


def _trim(tb: TracebackType | None) -> TracebackType | None:
    """Drop the asyncio and portal frames, keeping the caller's and the SDK's own."""
    frames: list[TracebackType] = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(_PLUMBING) and filename != __file__:
            frames.append(tb)
        tb = tb.tb_next
    head: TracebackType | None = None
    for frame in reversed(frames):
        head = TracebackType(head, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return head
