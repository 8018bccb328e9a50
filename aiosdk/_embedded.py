"""The embedded default: a reference server in its own thread, started on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ._core.errors import ConfigurationError
from ._core.secrets import Secret

if TYPE_CHECKING:
    from .server import ServerThread

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """Starts ``aiosdk.server`` on free loopback ports and stops it with the client.

    The data directory is temporary (deleted on stop) unless ``data_dir`` is given.
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

    def __repr__(self) -> str:
        where = self._thread.http_url if self._thread else "not started"
        return f"<EmbeddedServer {where}>"

    async def start(self) -> tuple[str, Secret]:
        """Start the server thread; returns its URL and admin token."""
        # Importing the server and starting it both block: a worker thread does them.
        thread = await anyio.to_thread.run_sync(self._start_thread)
        self._thread = thread
        return thread.http_url, Secret(thread.admin_token)

    def _start_thread(self) -> ServerThread:
        try:
            from .server import ServerConfig, ServerThread
            from .server.auth import generate_token
        except ImportError as exc:
            raise ConfigurationError(
                f"the embedded server needs the server extra: pip install 'aiosdk[server]' ({exc})"
            ) from exc
        thread = ServerThread(
            ServerConfig(
                data_dir=self._data_dir,
                database_url=self._database_url,
                # A data directory reused from an earlier run keeps only the hash of the token it
                # printed then, so every start brings a fresh admin token of its own.
                admin_token=generate_token(),
            )
        )
        try:
            thread.start()
        except Exception as exc:  # a bad database URL, a port in use, a slow start ...
            raise ConfigurationError(f"the embedded server could not start: {exc}") from exc
        return thread

    async def stop(self) -> None:
        """Stop the server and wait for its thread (never abandoned on cancellation)."""
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await anyio.to_thread.run_sync(thread.stop)
