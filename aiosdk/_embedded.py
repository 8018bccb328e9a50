"""The embedded default: a reference server in its own thread, started on first use."""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ._core.errors import ConfigurationError
from ._core.secrets import Secret

if TYPE_CHECKING:
    from .server import ServerThread

__all__ = ["EmbeddedServer"]

_EXIT_STOP_TIMEOUT = 10.0


class EmbeddedServer:
    """Starts ``aiosdk.server`` on free loopback ports and stops it with the client.

    The data directory is temporary (deleted on stop) unless ``data_dir`` is given. A server whose
    client is never closed is stopped when the interpreter exits, so its temporary directory (the
    database, the admin token's hash) does not outlive the process.
    """

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        database_url: str | None = None,
    ) -> None:
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._database_url = database_url
        self._thread: ServerThread | None = None
        self._start_lock = threading.Lock()
        self._start_error: BaseException | None = None

    def __repr__(self) -> str:
        thread = self._thread
        where = thread.http_url if thread is not None and _serving(thread) else "not started"
        return f"<EmbeddedServer {where}>"

    async def start(self) -> tuple[str, Secret]:
        """Start the server thread; returns its URL and admin token.

        The handle is recorded before the server starts, so that :meth:`stop` finds and stops
        a server whose start was cancelled halfway (asyncio cancellation does not wait for the
        worker thread that is starting it).
        """
        if self._thread is None:
            # Importing the server package blocks: a worker thread does it (and starts nothing).
            self._thread = await anyio.to_thread.run_sync(self._new_thread)
        thread = self._thread
        await anyio.to_thread.run_sync(self._start_once, thread)
        return thread.http_url, Secret(thread.admin_token)

    def _new_thread(self) -> ServerThread:
        try:
            from .server import ServerConfig, ServerThread
            from .server.auth import generate_token
        except ImportError as exc:
            raise ConfigurationError(
                f"the embedded server needs the server extra: pip install 'aiosdk[server]' ({exc})"
            ) from exc
        return ServerThread(
            ServerConfig(
                data_dir=self._data_dir,
                database_url=self._database_url,
                # A data directory reused from an earlier run keeps only the hash of the token it
                # printed then, so every start brings a fresh admin token of its own.
                admin_token=generate_token(),
            )
        )

    def _start_once(self, thread: ServerThread) -> None:
        # One start per server, whoever asks and however often (a cancelled start is retried).
        with self._start_lock:
            if self._start_error is not None:
                raise self._start_error
            if _serving(thread):
                return
            _unstopped[id(thread)] = (os.getpid(), thread)
            try:
                thread.start()
            except Exception as exc:  # a bad database URL, a port in use, a slow start ...
                _unstopped.pop(id(thread), None)
                self._start_error = ConfigurationError(
                    f"the embedded server could not start: {exc}"
                )
                raise self._start_error from exc

    async def stop(self) -> None:
        """Stop the server and wait for its thread (never abandoned on cancellation)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await anyio.to_thread.run_sync(self._stop, thread)

    def _stop(self, thread: ServerThread) -> None:
        with self._start_lock:  # a start still running in a worker thread finishes first
            _unstopped.pop(id(thread), None)
            thread.stop()


def _serving(thread: ServerThread) -> bool:
    try:
        thread.http_url  # noqa: B018 - raises until the server has started
    except RuntimeError:
        return False
    return True


# Servers started and not stopped yet, by this process (a forked child inherits the dict, but
# not the threads, and must not delete its parent's data directory).
_unstopped: dict[int, tuple[int, ServerThread]] = {}


@atexit.register
def _stop_unstopped() -> None:
    pid = os.getpid()
    for owner, thread in list(_unstopped.values()):
        if owner == pid:
            thread.stop(_EXIT_STOP_TIMEOUT)
    _unstopped.clear()
