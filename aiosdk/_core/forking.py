"""What a forked child does with the connections it inherits: nothing at all.

A child made by ``os.fork()`` shares its parent's sockets and its parent's epoll instance. Closing
an inherited asyncio transport there unregisters the socket from that shared epoll set (and a
grpclib channel also writes a GOAWAY into the parent's connection), so the parent's calls on it
stall. The child must abandon what it inherited: keep every such object referenced, never close
it, and never let it be finalized, not even at interpreter exit, where clearing module globals
would otherwise run the finalizers (``grpclib.client.Channel.__del__`` closes its connection).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

__all__ = ["abandon", "after_fork_in_child"]

_ABANDONED: list[object] = []
# One reference nobody owns: the list (and whatever it holds) outlives interpreter shutdown, so
# the finalizers of abandoned objects never run. Only a forked child ever puts anything in it.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_ABANDONED))


def abandon(*objects: object) -> None:
    """Keep ``objects`` alive, untouched, until the process ends (in a forked child)."""
    _ABANDONED.extend(obj for obj in objects if obj is not None)


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child forked from now on, before ``os.fork()`` returns there."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=callback)
