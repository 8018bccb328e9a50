"""Negotiated compression of bulk reads: what a data read asks the server for.

With ``compression="zstd"`` a read sends ``Accept-Encoding: zstd``: the server compresses
a body that is worth it (level 1, in its worker threads) and sends the rest as they are (random
floats do not compress); httpx decodes ``Content-Encoding: zstd`` with the ``zstandard``
package. An encoded body is received again from its start after a broken connection (only the
identity form has ``Range``). Without, a read sends ``Accept-Encoding: identity``: nothing
between the client and the server compresses it by surprise.
"""

from __future__ import annotations

from typing import Literal

from .errors import ConfigurationError
from .optional import require

__all__ = ["Compression", "accept_encoding"]

Compression = Literal["zstd"] | None
"""How a bulk read may come compressed: ``"zstd"``, or ``None`` (as it is stored)."""

_IDENTITY = {"Accept-Encoding": "identity"}
_ZSTD = {"Accept-Encoding": "zstd"}


def accept_encoding(compression: object) -> dict[str, str]:
    """The ``Accept-Encoding`` header of a bulk read with ``compression``;
    :class:`~aiosdk.MissingDependencyError` for ``"zstd"`` without ``zstandard`` installed,
    :class:`~aiosdk.ConfigurationError` for anything but ``"zstd"`` and ``None``."""
    if compression is None:
        return _IDENTITY
    if compression == "zstd":
        require("zstandard", "compression='zstd'")
        return _ZSTD
    raise ConfigurationError(f'compression must be "zstd" or None, not {compression!r}')
