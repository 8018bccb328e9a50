"""Bounded concurrency for bulk transfers: many requests at once, never more than asked.

- :func:`run_bounded` runs ``work(item)`` for every item with at most ``concurrency`` running
  (a few workers pulling from one iterator, not a task per item), and raises the first failure
  itself, not an ``ExceptionGroup``, after cancelling the rest.
- :class:`Prefetch` yields ``await fetch(key)`` for each key, in the keys' order, with at most
  ``concurrency`` fetches running or finished-but-not-yet-taken (a slow consumer holds the rest
  back: back-pressure). The fetches are tasks of their own, not of a task group spanning the
  consumer's ``yield`` points, so that the iterator works wherever its steps run: in one task
  (``async for``), or in one task per step (the blocking facade). Breaking out of the loop (the
  iterator dropped), :meth:`Prefetch.aclose`, a failed fetch or a cancelled step cancels every
  fetch in flight at once.
- :func:`to_the_end` runs an awaitable to its end whatever cancels its caller, asyncio's own
  ``Task.cancel()`` included (which goes through anyio's shields): for renewals and cleanups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import anyio
import sniffio

from .errors import ConfigurationError, UnsupportedBackendError

__all__ = ["Prefetch", "check_concurrency", "run_all", "run_bounded", "to_the_end"]

K = TypeVar("K")
T = TypeVar("T")


def check_concurrency(concurrency: object) -> int:
    """``concurrency`` if it is an int ≥ 1; :class:`~aiosdk.ConfigurationError` if not."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an int ≥ 1, not {concurrency!r}")
    return concurrency


async def run_bounded(
    items: Iterable[K], work: Callable[[K], Awaitable[object]], concurrency: int
) -> None:
    """``await work(item)`` for every item, at most ``concurrency`` at a time; the first
    failure cancels the others and is raised as it is."""
    workers = check_concurrency(concurrency)
    pending = iter(items)
    failure: list[Exception] = []

    async def worker(scope: anyio.CancelScope) -> None:
        try:
            for item in pending:
                await work(item)
        except Exception as exc:
            if not failure:
                failure.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker, tg.cancel_scope)
    if failure:
        raise failure[0]


async def run_all(*functions: Callable[[], Awaitable[object]]) -> None:
    """Run ``functions`` concurrently; the first failure cancels the others and is raised."""

    async def call(function: Callable[[], Awaitable[object]]) -> None:
        await function()

    await run_bounded(functions, call, len(functions))


class _Job(Generic[T]):
    __slots__ = ("done", "error", "result", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Prefetch(AsyncIterator[T], Generic[K, T]):
    """The results of ``fetch`` over ``keys``, in order, at most ``concurrency`` ahead."""

    def __init__(
        self, keys: Iterator[K], fetch: Callable[[K], Awaitable[T]], concurrency: int
    ) -> None:
        self._pending: deque[_Job[T]] = deque()
        self._soon: Callable[[Callable[[], None]], object] | None = None
        self._closed = False
        self._keys = keys
        self._fetch = fetch
        self._concurrency = check_concurrency(concurrency)

    def __aiter__(self) -> Prefetch[K, T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        self._fill()
        if not self._pending:
            self._closed = True
            raise StopAsyncIteration
        job = self._pending[0]
        try:
            await job.done.wait()
        except BaseException:
            self._cancel()
            raise
        self._pending.popleft()
        if job.error is not None:
            self._cancel()
            raise job.error
        self._fill()  # the next fetch starts before the consumer gets this one
        return job.result  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Cancel the fetches in flight and wait until they have stopped."""
        pending = list(self._pending)
        self._cancel()
        with anyio.CancelScope(shield=True):
            for job in pending:
                await job.done.wait()

    def __del__(self) -> None:
        if self._pending and self._soon is not None:
            # Thread-safe: the loop runs it. A closed loop (RuntimeError) took its tasks along.
            with contextlib.suppress(RuntimeError):
                self._soon(self._cancel)

    def _cancel(self) -> None:
        self._closed = True
        while self._pending:
            self._pending.popleft().scope.cancel()

    def _fill(self) -> None:
        while not self._closed and len(self._pending) < self._concurrency:
            key = next(self._keys, _END)
            if key is _END:
                return
            job: _Job[T] = _Job()
            self._pending.append(job)
            self._spawn(job, key)

    def _spawn(self, job: _Job[T], key: K) -> None:
        library = sniffio.current_async_library()
        if library == "asyncio":
            loop = asyncio.get_running_loop()
            self._soon = loop.call_soon_threadsafe
            task = loop.create_task(_run(job, self._fetch, key))
            _RUNNING.add(task)  # asyncio keeps only weak references to its tasks
            task.add_done_callback(_RUNNING.discard)
        elif library == "trio":
            import trio

            self._soon = trio.lowlevel.current_trio_token().run_sync_soon
            trio.lowlevel.spawn_system_task(_run, job, self._fetch, key)
        else:
            raise UnsupportedBackendError(f"prefetching needs asyncio or trio, not {library}")


async def _run(job: _Job[T], fetch: Callable[[K], Awaitable[T]], key: K) -> None:
    # A function, not a method: a running fetch must not keep its iterator alive, so that
    # dropping the iterator (a ``break``) cancels the fetch at once.
    try:
        with job.scope:
            job.result = await fetch(key)
    except Exception as exc:
        job.error = exc
    finally:
        job.done.set()


_END: Any = object()
_RUNNING: set[asyncio.Task[None]] = set()


async def to_the_end(work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, run to its end whatever cancels the caller meanwhile; a cancellation
    that came is delivered after it (the caller's next wait raises it).

    An anyio shield holds off anyio's cancellations (a timeout or a task group around the call)
    but not asyncio's own ``Task.cancel()``, which goes through it: the blocking facade's
    Ctrl-C, ``asyncio.wait_for``, ``asyncio.timeout``, an asyncio task group. Thrown into a
    renewal after the server answered, that lost the answer, so the rotated refresh token (see
    :mod:`.auth`); in a cleanup (closing pools, deleting a half-made node, removing a partial
    file), what it was to clean up. So on asyncio the work runs in a task of its own, which no
    cancellation of the caller reaches, and the caller waits for it through any that come.
    """
    with anyio.CancelScope(shield=True):
        if sniffio.current_async_library() == "asyncio":
            result = await _through_cancellations(asyncio.ensure_future(work()))
        else:  # (trio: the shield is the whole story)
            result = await work()
    return result


async def _through_cancellations(task: asyncio.Future[T]) -> T:
    """Wait for ``task`` however many times the current task is cancelled meanwhile, and make
    the cancellation, if one came, the next wait's."""
    interrupted: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.cancelled():  # the work itself was (the loop shuts down)
                raise
            interrupted = exc  # the caller's: delivered once the work is done (its result is
            continue  # taken even if it was done as the cancellation came)
        except BaseException:
            if interrupted is not None:
                _cancel_again(interrupted)
            raise
        if interrupted is not None:
            _cancel_again(interrupted)
        return result


def _cancel_again(cancelled: asyncio.CancelledError) -> None:
    """Make the current task's next wait raise the cancellation it caught as ``cancelled``.

    The request that came is still counted by the task (``cancelling()``, which
    ``asyncio.timeout`` reads), and taken back before being made again: counted once."""
    task = asyncio.current_task()
    if task is None:
        return
    cancelling = getattr(task, "cancelling", None)  # (Python 3.11+: counted requests)
    if cancelling is not None and cancelling():
        task.uncancel()  # type: ignore[attr-defined,unused-ignore]
    task.cancel(cancelled.args[0] if cancelled.args else None)
