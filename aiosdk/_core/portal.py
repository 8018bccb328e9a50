"""The runtime of the blocking facade: one process-wide event loop in its own thread.

grpclib has no blocking transport, so the sync facade does not rewrite the async code: every sync
call submits the async call to this loop and waits. The loop thread starts on first use, a forked
child gets a fresh one, and Ctrl-C in the waiting thread cancels the call on the loop.

Failures keep facade frames out of the caller's traceback. The generated code calls ``.result()``
on the finished task (or future) itself, so the exception is raised by C code in the generated
frame, with no frame of this module above the SDK's own; asyncio's frames in between are cut, and
the iterators this module makes are built from C iterators for the same reason.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextvars
import functools
import inspect
import operator
import os
import socket
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

import sniffio

from . import forking

__all__ = ["Host", "call", "context", "finished", "finished_sync", "hold", "iterate", "next_of"]

T = TypeVar("T")
U = TypeVar("U")
P = ParamSpec("P")
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

_lock = threading.Lock()
_portal: _Portal | None = None
_closing: set[asyncio.Task[None]] = set()
_RESULT = operator.methodcaller("result")
_SNIFFIO = sniffio.current_async_library_cvar
_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep
# Facade plumbing, cut from the tracebacks sync callers see (pytest hides it too): this module,
# the twins' runtime and the generated modules say so; asyncio's frames are plumbing as well.
__tracebackhide__ = True
_INTERRUPT_GRACE = 5.0  # seconds a call cancelled by Ctrl-C gets to unwind before re-raising


class _Portal:
    """The loop, its thread, and the inbox through which other threads reach it.

    The inbox is a deque and a socket pair: one ``send`` wakes the loop, one ``recv`` and the
    jobs run in the same loop iteration. (``call_soon_threadsafe`` would add a Handle per call
    and read its self-pipe until ``EAGAIN``, an exception per wake-up: the hand-off is the
    facade's whole cost, measured in benchmarks/bench_client.py (b).)
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.wakers = threading.local()  # one per calling thread; a forked child makes its own
        self._inbox: collections.deque[Callable[[], object]] = collections.deque()
        self._bell_in, self._bell = socket.socketpair()
        self._bell_in.setblocking(False)
        self._bell.setblocking(False)
        self.thread = threading.Thread(target=self._run, name="aiosdk-sync-loop", daemon=True)
        self.thread.start()
        self.ident = self.thread.ident

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the loop thread, after every job submitted before it."""
        self._inbox.append(job)
        try:
            self._bell.send(b"\0")
        except BlockingIOError:  # unread bytes: the loop is about to take this job with them
            pass
        except OSError:
            raise RuntimeError(
                "aiosdk's event loop has shut down (the interpreter exits)"
            ) from None

    def _take(self) -> None:
        try:  # noqa: SIM105 - as in submit()
            self._bell_in.recv(4096)
        except BlockingIOError:
            pass
        inbox = self._inbox
        while inbox:
            inbox.popleft()()

    def waker(self) -> _Waker:
        """The calling thread's waker."""
        waker: _Waker | None = getattr(self.wakers, "waker", None)
        if waker is None:
            waker = self.wakers.waker = _Waker()
        return waker

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self._bell_in.fileno(), self._take)
        try:
            self.loop.run_forever()
        finally:
            # Calls that came in as the loop stopped take a first step, so that, cancelled,
            # each wakes its caller; then everything is cancelled and the loop closed.
            self._take()
            self.loop.run_until_complete(asyncio.sleep(0))
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._bell_in.close()
            self._bell.close()

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
    # The old portal (its loop, and the sockets registered in the epoll set the child shares
    # with its parent) is abandoned untouched, never closed or finalized here.
    global _portal, _lock
    forking.abandon(_portal)
    _portal, _lock = None, threading.Lock()


def _stop_at_exit() -> None:
    if _portal is not None:
        _portal.stop()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_at_exit)


def in_loop_thread() -> bool:
    """Whether the caller is the facade's own loop thread."""
    return _portal is not None and threading.get_ident() == _portal.ident


def _reach(step: object = None) -> _Portal:
    """The portal, from any thread but its own: there, a clear error (``step`` is not run)."""
    portal = _portal or _get()
    if threading.get_ident() == portal.ident:
        close = getattr(step, "close", None)
        if close is not None:
            close()
        raise RuntimeError(
            "a blocking aiosdk call was made from aiosdk's own event loop thread, where it would "
            "deadlock; use the async API (aiosdk.AsyncClient) in async code"
        )
    return portal


class _Waker:
    """How the loop wakes one waiting thread: a byte on that thread's own socket pair.

    A socket rather than a lock: the loop thread sends without holding the GIL, so the caller
    wakes with the GIL free, where a released lock wakes it only to wait for the GIL the loop
    thread still holds (two more context switches per call).
    """

    def __init__(self) -> None:
        self._receiver, self._sender = socket.socketpair()
        self._sender.setblocking(False)

    def wake(self) -> None:
        """Wake the thread (on the loop thread)."""
        try:  # noqa: SIM105 - as in _Portal.submit()
            self._sender.send(b"\0")
        except OSError:  # full: a byte to wake on is there already; closed: nobody waits
            pass

    def wait(self, done: Callable[[], bool]) -> None:
        """Block until ``done()``; bytes left by calls given up on (Ctrl-C) only cost a loop."""
        receive = self._receiver.recv
        while not done():
            receive(64)

    def wait_at_most(self, timeout: float, done: Callable[[], bool]) -> None:
        """Block until ``done()``, or ``timeout`` seconds."""
        self._receiver.settimeout(timeout)
        try:
            self.wait(done)
        except TimeoutError:
            pass
        finally:
            self._receiver.settimeout(None)

    def __del__(self) -> None:
        self._receiver.close()
        self._sender.close()


def _callers_context() -> contextvars.Context:
    context = contextvars.copy_context()  # the caller's context (tracing, logging) goes along
    if context.get(_SNIFFIO) is not None:  # ... but not its async library: called from inside
        context.run(_SNIFFIO.set, None)  # trio, the call runs on asyncio here
    return context


def _start(
    loop: asyncio.AbstractEventLoop,
    context: contextvars.Context,
    coro: Coroutine[Any, Any, None],
    started: list[asyncio.Task[None]],
) -> None:
    started.append(context.run(loop.create_task, coro))


def _wait(
    portal: _Portal,
    waker: _Waker,
    done: Callable[[], bool],
    started: list[asyncio.Task[None]],
    futures: tuple[asyncio.Future[Any], ...],
) -> None:
    """Wait for ``done()``; on Ctrl-C cancel the task, let it unwind, and re-raise."""
    try:
        waker.wait(done)
    except KeyboardInterrupt:
        _interrupt(portal, waker, started, futures)
        raise


def _interrupt(
    portal: _Portal,
    waker: _Waker,
    started: list[asyncio.Task[None]],
    futures: tuple[asyncio.Future[Any], ...],
) -> bool:
    """Cancel the call on the loop and wait (a grace period at most) for it to unwind; whether it
    did. Its start may or may not have been handed to the loop (``started`` is empty until the
    loop ran it): this is handed over after it, so the loop runs the two in that order."""
    gone: list[bool] = []
    portal.submit(functools.partial(_cancel, started, futures, waker, gone))
    waker.wait_at_most(_INTERRUPT_GRACE, lambda: bool(gone))
    for future in futures:  # what the unwinding raised is superseded by the interrupt
        if future.done() and not future.cancelled():
            future.exception()
    return bool(gone)


def _cancel(
    started: list[asyncio.Task[None]],
    futures: tuple[asyncio.Future[Any], ...],
    waker: _Waker,
    gone: list[bool],
) -> None:
    def unwound(_: object) -> None:
        for future in futures:  # a task cancelled before it ran settles nothing
            future.cancel()
        gone.append(True)
        waker.wake()

    if not started:  # interrupted before its start was handed over: nothing runs
        unwound(None)
        return
    started[0].cancel()
    started[0].add_done_callback(unwound)


async def _run(step: Awaitable[T], future: asyncio.Future[T], waker: _Waker) -> None:
    # The future, not the task, carries the outcome: settled and the caller woken in this very
    # step, rather than in a done-callback one loop iteration later.
    try:
        future.set_result(await step)
    except BaseException as error:  # the caller's: result() raises it in the caller's thread
        _settle(future, error)
    waker.wake()


def _shutting_down() -> RuntimeError:
    return RuntimeError("the call was cancelled because aiosdk's event loop is shutting down")


def finished(step: Awaitable[T]) -> asyncio.Future[T]:
    """Await ``step`` (a coroutine, an ``__anext__()``...) on the facade's loop; its future, done.

    ``finished(coro).result()`` is the blocking call: made in the caller's frame, its failure
    shows no frame of the facade.
    """
    run: Coroutine[Any, Any, None] | None = None
    started: list[asyncio.Task[None]] = []
    handing = False
    try:  # a Ctrl-C may land anywhere in here, even before the loop has heard of the call
        portal = _reach(step)
        waker = portal.waker()
        loop = portal.loop
        future: asyncio.Future[T] = loop.create_future()
        run = _run(step, future, waker)
        job = functools.partial(_start, loop, _callers_context(), run, started)
        handing = True
        portal.submit(job)
        waker.wait(future.done)
    except BaseException:
        # Interrupted (Ctrl-C). Handed to the loop (perhaps): cancelled there. Never started
        # there (not handed over, or cancelled before the loop ran a step of it): the coroutines
        # are closed, or Python warns that they were never awaited.
        unwound = not handing
        if handing:
            try:
                unwound = _interrupt(portal, waker, started, (future,))
            except RuntimeError:  # the loop has shut down: nothing will run there
                unwound = True
        if unwound:
            for coroutine in (run, step):
                if (
                    inspect.iscoroutine(coroutine)
                    and inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED
                ):
                    coroutine.close()
        raise
    if future.cancelled():
        raise _shutting_down()
    return future


def finished_sync(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
    """Run the plain function ``fn`` on the loop thread and return its future, done.

    For the sync methods of async classes that touch state the loop owns: they run between the
    loop's callbacks, never in the middle of one. ``.result()`` as for :func:`finished`.
    """
    portal = _reach()
    waker = portal.waker()
    future: asyncio.Future[T] = portal.loop.create_future()
    context = _callers_context()

    def run() -> None:
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as error:  # the caller's, as in _run
            _settle(future, error)
        waker.wake()

    portal.submit(run)
    waker.wait(future.done)
    return future


def call(coro: Awaitable[T]) -> T:
    """Run ``coro`` on the facade's loop and return its result (or raise its exception)."""
    return finished(coro).result()


def next_of(iterator: AsyncIterator[T]) -> asyncio.Future[T]:
    """The next item of ``iterator`` as a done task; ``StopIteration`` when it is exhausted."""
    task = finished(iterator.__anext__())
    if isinstance(task.exception(), StopAsyncIteration):
        raise StopIteration
    return task


@overload
def iterate(source: AsyncIterable[T]) -> Iterator[T]: ...
@overload
def iterate(source: AsyncIterable[T], convert: Callable[[T], U]) -> Iterator[U]: ...
def iterate(source: AsyncIterable[Any], convert: Callable[[Any], Any] | None = None) -> Any:
    """A blocking iterator over ``source``; breaking out or dropping it closes ``source``.

    ``convert`` applies to each item (the facade makes async facade objects sync twins). Made of
    C iterators (``map`` over ``iter(callable, sentinel)``), so that a failure in the middle of a
    stream raises in the caller's ``for`` line.
    """
    items = map(_RESULT, iter(_Stream(source.__aiter__()).next_done, None))
    return items if convert is None else map(convert, items)


class _Stream:
    """The async iterator behind a sync one: each step a task on the loop; closed when dropped.

    Threads that share one sync iterator take their steps one at a time, each getting the next
    item: the async iterator never sees a step start while another runs.
    """

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self.iterator = iterator
        self.open = True
        self._stepping = threading.Lock()

    def next_done(self) -> asyncio.Future[Any] | None:
        with self._stepping:
            task = finished(self.iterator.__anext__())
        if isinstance(task.exception(), StopAsyncIteration):
            self.open = False  # exhausted: nothing to close
            return None
        return task

    def __del__(self) -> None:
        if self.open:
            _close(self.iterator)


def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is None or _portal is None or _portal.loop.is_closed():
        return
    if in_loop_thread():  # the garbage collector ran us on the loop thread
        task = _portal.loop.create_task(aclose())
        _closing.add(task)  # the loop keeps only a weak reference to its tasks
        task.add_done_callback(_closing.discard)
    else:
        call(aclose())


@overload
def context(manager: AbstractAsyncContextManager[T]) -> AbstractContextManager[T]: ...
@overload
def context(
    manager: AbstractAsyncContextManager[T], convert: Callable[[T], U]
) -> AbstractContextManager[U]: ...
def context(
    manager: AbstractAsyncContextManager[Any], convert: Callable[[Any], Any] | None = None
) -> AbstractContextManager[Any]:
    """A blocking context manager over ``manager``; ``convert`` applies to what it enters as.

    The async manager is entered and exited by one task on the loop, which waits while the
    ``with`` block runs, as ``async with`` would: task groups, cancel scopes and timeouts that
    span its ``yield`` stay in the task they were opened in.
    """
    return _Context(manager, convert)


class _Context(AbstractContextManager[T], Generic[T]):
    def __init__(
        self,
        manager: AbstractAsyncContextManager[Any],
        convert: Callable[[Any], T] | None,
    ) -> None:
        self._manager = manager
        self._convert = convert
        self._host: Host | None = None

    def __enter__(self) -> T:
        if self._host is not None:
            raise RuntimeError("this context manager is already entered")
        host = hold(self._manager)
        value = host.entered.result()
        self._host = host
        return value if self._convert is None else self._convert(value)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        host, self._host = self._host, None
        if host is None:
            raise RuntimeError("this context manager was not entered")
        return host.release((exc_type, exc, tb)).result()


def hold(manager: AbstractAsyncContextManager[Any]) -> Host:
    """Enter ``manager`` in a task that holds it open until released; its ``entered`` is done.

    ``hold(manager).entered.result()`` is the value ``async with`` gives (or its failure,
    raised in the caller's frame).
    """
    host = Host(manager)
    host.wait_for(host.entered)
    return host


class Host:
    """The task that holds one ``async with`` open on the loop while a sync ``with`` runs."""

    def __init__(self, manager: AbstractAsyncContextManager[Any]) -> None:
        self.portal = portal = _reach()
        self.waker = portal.waker()
        loop = portal.loop
        self.entered: asyncio.Future[Any] = loop.create_future()
        self.exiting: asyncio.Future[ExcInfo] = loop.create_future()
        self.exited: asyncio.Future[bool | None] = loop.create_future()
        self.started: list[asyncio.Task[None]] = []
        hold = self._hold(manager)
        portal.submit(functools.partial(_start, loop, _callers_context(), hold, self.started))

    def release(self, info: ExcInfo) -> asyncio.Future[bool | None]:
        """Exit with the ``with`` block's exception (or none): the done future of ``__aexit__``."""
        self.portal.submit(functools.partial(_resolve, self.exiting, info))
        self.wait_for(self.exited)
        return self.exited

    def wait_for(self, future: asyncio.Future[Any]) -> None:
        _wait(self.portal, self.waker, future.done, self.started, (self.entered, self.exited))
        if future.cancelled():
            raise _shutting_down()

    async def _hold(self, manager: AbstractAsyncContextManager[Any]) -> None:
        try:
            value = await manager.__aenter__()
        except BaseException as error:  # the caller's, raised by enter()
            _settle(self.entered, error)
            self.waker.wake()
            return
        self.entered.set_result(value)
        self.waker.wake()
        try:
            info = await self.exiting
        except asyncio.CancelledError as error:  # the loop shuts down inside the with block
            await manager.__aexit__(type(error), error, error.__traceback__)
            self.exited.cancel()
            self.waker.wake()
            raise
        try:
            self.exited.set_result(await manager.__aexit__(*info))
        except BaseException as error:
            if error is info[1]:  # the with block's own exception, going on (not suppressed)
                self.exited.set_result(False)
            else:
                _settle(self.exited, error)
        self.waker.wake()


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # a cancelled host cancelled what it was waiting for
        future.set_result(value)


def _settle(future: asyncio.Future[Any], error: BaseException) -> None:
    if isinstance(error, asyncio.CancelledError):  # Ctrl-C: the caller re-raises that instead
        future.cancel()
    else:
        future.set_exception(_without_own_frame(error))


def _without_own_frame(error: BaseException) -> BaseException:
    """``error`` with the catching frame (the portal's) and plumbing cut from its traceback."""
    tb = error.__traceback__
    tb = tb.tb_next if tb is not None else None
    while tb is not None and _plumbing(tb):
        tb = tb.tb_next
    _cut(tb)
    return error.with_traceback(tb)


def _cut(tb: TracebackType | None) -> None:
    """Unlink the plumbing frames after the first entry of ``tb``, in place."""
    while tb is not None:
        following = tb.tb_next
        while following is not None and _plumbing(following):
            following = following.tb_next
        tb.tb_next = following
        tb = following


def _plumbing(tb: TracebackType) -> bool:
    frame = tb.tb_frame
    return bool(frame.f_globals.get("__tracebackhide__")) or frame.f_code.co_filename.startswith(
        _ASYNCIO
    )
