"""Downloads into files: an export streamed to disk as it arrives, written off the event loop.

:func:`download_to_file` hands the transport a sink that queues each span; a writer task
writes what has queued, a batch at a time, in a worker thread, while the download goes on. A
path is written under a temporary name in its directory and renamed when the body is complete,
so a failed or cancelled download leaves nothing behind (and never half of a file).
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import anyio

from .concurrency import run_all, to_the_end
from .context import ClientContext
from .errors import ProtocolError
from .progress import Progress, tracking

__all__ = ["download_to_file", "file_suffix", "temporary_name"]

_ANY = {"Accept": "*/*"}  # the format is a parameter (the client's default Accept is JSON)


def file_suffix(file: object) -> str:
    """The suffix of ``file``'s name (a path, or a file object's ``name``): ``".npy"``; ``""``
    when it has none."""
    name = file if isinstance(file, str | os.PathLike) else getattr(file, "name", None)
    return Path(os.fspath(name)).suffix if isinstance(name, str | os.PathLike) else ""


def temporary_name(destination: Path) -> Path:
    """Where a file on its way to ``destination`` is written, to be renamed there once whole:
    hidden, beside it (the same file system), and unique."""
    return destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")


async def download_to_file(
    ctx: ClientContext,
    path: str,
    params: Mapping[str, Any],
    file: str | os.PathLike[str] | IO[bytes],
    progress: Progress,
    what: str,
) -> None:
    """``GET path`` with ``params``, its body written to ``file``: a path (replaced when the
    body is complete) or a binary file object open for writing (written from where it stands;
    it stays open). ``progress`` counts the bytes received; ``what`` names it on a bar."""
    if isinstance(file, str | os.PathLike):
        destination = Path(os.fspath(file))
        temporary = temporary_name(destination)
        final: Path | None = destination
        writer = _FileWriter(None, temporary)
    else:
        final = None
        writer = _FileWriter(file, None)
    send, receive = anyio.create_memory_object_stream[tuple[int, bytes]](math.inf)

    async with tracking(progress, None, f"export {what}") as tracker:
        high = 0

        def sink(offset: int, span: bytes) -> None:
            nonlocal high
            send.send_nowait((offset, span))
            end = offset + len(span)
            if end > high:  # a body received again from 0 counts once
                tracker.advance(end - high)
                high = end

        async def download() -> None:
            with send:
                await ctx.download("GET", path, params=params, headers=_ANY, sink=sink)

        async def write() -> None:
            with receive:
                async for first in receive:
                    batch = [first]
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await anyio.to_thread.run_sync(writer.write, batch)

        try:
            await run_all(download, write)
            await anyio.to_thread.run_sync(writer.finish, final)
        except BaseException:
            # To the end whatever cancels the caller (asyncio's own Task.cancel() goes through
            # an anyio shield): a half-written file is never left behind.
            await to_the_end(lambda: anyio.to_thread.run_sync(writer.abandon))
            raise


class _FileWriter:
    """Writes a body's spans at their offsets; its methods run in a worker thread."""

    def __init__(self, target: IO[bytes] | None, temporary: Path | None) -> None:
        self._file = target
        self._temporary = temporary  # set when we own the file: a path was given
        self._base: int | None = None
        self._position = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            assert self._temporary is not None
            self._file = open(self._temporary, "xb")  # noqa: SIM115 (closed by finish/abandon)
        return self._file

    def write(self, batch: list[tuple[int, bytes]]) -> None:
        handle = self._open()
        if self._base is None:
            self._base = handle.tell() if handle.seekable() else 0
        for offset, span in batch:
            if offset != self._position:  # the body started over (or resumed elsewhere)
                if not handle.seekable():
                    raise ProtocolError(
                        "the download started over, and the file cannot seek back: export to"
                        " a path or a seekable file"
                    )
                handle.seek(self._base + offset)
            handle.write(span)
            self._position = offset + len(span)

    def finish(self, final: Path | None) -> None:
        handle = self._open()
        if self._base is not None and handle.seekable():
            handle.truncate(self._base + self._position)  # a body received again may be shorter
        if final is None:
            handle.flush()
            return
        handle.close()
        assert self._temporary is not None
        os.replace(self._temporary, final)

    def abandon(self) -> None:
        if self._temporary is None:
            return
        if self._file is not None:
            self._file.close()
        self._temporary.unlink(missing_ok=True)
