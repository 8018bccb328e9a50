"""Progress of long transfers (reads, writes, exports, copies): a callback, or a progress bar.

Every long operation takes ``progress=``:

- ``None`` or ``False``: nothing;
- ``True``: a progress bar on standard error when it is a terminal and rich (the ``cli`` extra)
  is installed, else nothing;
- a callable ``(done_bytes, total_bytes_or_None) -> None``, called on the event loop as bytes
  arrive or leave (keep it quick: it runs between the transfer's reads).

Operations open a :func:`tracking` context and call :meth:`Tracker.advance` with each span.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio

from .errors import ConfigurationError

__all__ = ["Progress", "ProgressCallback", "Tracker", "check_progress", "tracking"]

ProgressCallback: TypeAlias = Callable[[int, int | None], None]
"""Called with the bytes done so far and the total (``None`` when it is not known)."""
Progress: TypeAlias = bool | ProgressCallback | None
"""What ``progress=`` accepts: ``None``/``False``, ``True`` (a bar on a terminal) or a callable."""


class Tracker:
    """Counts the bytes of one operation and reports them to its callback or bar."""

    def __init__(self, report: ProgressCallback | None, total: int | None) -> None:
        self._report = report
        self.done = 0
        self.total = total

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes done."""
        if nbytes:
            self.done += nbytes
            if self._report is not None:
                self._report(self.done, self.total)

    def set_total(self, total: int | None) -> None:
        """The total became known (or changed)."""
        self.total = total
        if self._report is not None:
            self._report(self.done, total)


def check_progress(progress: object) -> Progress:
    """``progress`` if it is something ``progress=`` accepts; :class:`~aiosdk.ConfigurationError`
    if not (checked before any request is sent)."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise ConfigurationError(
        f"progress must be None, True/False or a callable (done, total), not"
        f" {type(progress).__name__}"
    )


@asynccontextmanager
async def tracking(
    progress: Progress, total: int | None, description: str
) -> AsyncIterator[Tracker]:
    """A :class:`Tracker` for one operation of ``total`` bytes (``None``: unknown), reporting
    to what ``progress`` asks for; a bar (``progress=True`` on a terminal) ends with the block."""
    check_progress(progress)
    if progress is None or progress is False:
        yield Tracker(None, total)
        return
    if progress is not True:
        yield Tracker(progress, total)
        return
    bar = _bar(description, total)
    if bar is None:
        yield Tracker(None, total)
        return
    progress_bar, task = bar

    def report(done: int, total: int | None) -> None:
        progress_bar.update(task, completed=done, total=total)

    progress_bar.start()
    try:
        yield Tracker(report, total)
    finally:
        # Stopping joins rich's refresh thread and draws the last frame: not on the loop.
        await anyio.to_thread.run_sync(progress_bar.stop, abandon_on_cancel=True)


def _bar(description: str, total: int | None) -> tuple[Any, Any] | None:
    """A rich progress bar and its task, when standard error is a terminal and rich is there."""
    stream = sys.stderr
    if stream is None or not stream.isatty():
        return None
    try:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress
    except ImportError:
        return None
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    return bar, bar.add_task(description, total=total)
