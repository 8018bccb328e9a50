"""The fake peers themselves: stopping one leaves no socket of its loop open.

A socket left open by a stopped peer is found by the garbage collector only later, in whichever
test runs then, and that test fails with ``ResourceWarning: unclosed transport``.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

from .scripted import ScriptedServer

STOPS = 30


def test_a_peer_stopped_right_after_an_accept_leaves_no_transport_open() -> None:
    # A client that connects and hangs up at once (as httpx does under trio with a header it
    # cannot send), then the test ends and its fixture stops the peer: the accept races the
    # stop, and asyncio's Server.close() loses the accepted connection (see _close_server).
    loops: list[asyncio.AbstractEventLoop] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(STOPS):
            peer = ScriptedServer().start()
            loops.append(peer._thread.loop)
            socket.create_connection(("127.0.0.1", peer.port)).close()
            peer.stop()
        gc.collect()
    unclosed = [
        str(warning.message)
        for warning in caught
        if issubclass(warning.category, ResourceWarning)
        and any(getattr(warning.source, "_loop", None) is loop for loop in loops)
    ]
    assert not unclosed, f"{len(unclosed)} of {STOPS} stops left a transport open: {unclosed[0]}"
