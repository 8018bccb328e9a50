"""The data routes abused over raw sockets: a block upload that sends half its body then stalls,
closes or resets; slowloris on uploads; requests pipelined on one connection (reads and writes
interleaved); and 32 MiB downloads nobody reads to the end.

A block is never readable half-written: until a whole body has arrived the block reads as it
was. The server cuts stalled bodies off, keeps serving everyone else meanwhile, and gives back
what a download it could not deliver held (its connection, its memory: measured on a server in
a process of its own).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from aiosdk.server import ServerThread
from outside._tools import (
    IDLE,
    RemoteServer,
    Unhandled,
    admin_client,
    assert_4xx_or_closed,
    connections_to,
    exchange,
    impatient_server,
    log_in,
    new_user,
    serve,
)

MB = 1024 * 1024
ROWS, COLUMNS = 256, 512  # two blocks of 128 x 512 float64: 512 KiB each
BLOCK_BYTES = 128 * COLUMNS * 8
OLD = np.arange(ROWS * COLUMNS, dtype="<f8").reshape(ROWS, COLUMNS)


@dataclass
class Tree:
    owner: str
    token: str
    port: int
    http: httpx.Client  # base /api/v1, the owner's token

    @property
    def array(self) -> str:
        return f"{self.owner}/d/a"

    def head(
        self, method: str, target: str, length: int | None = None, close: bool = True
    ) -> bytes:
        lines = [
            f"{method} {target} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Authorization: Bearer {self.token}",
        ]
        if close:
            lines.append("Connection: close")
        if length is not None:
            lines += ["Content-Type: application/octet-stream", f"Content-Length: {length}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def block_target(self, block: str = "0,0", key: str = "a") -> str:
        return f"/api/v1/array/block/{self.owner}/d/{key}?block={block}"

    def block(self, block: str = "0,0") -> bytes:
        response = self.http.get(f"/array/block/{self.array}", params={"block": block})
        assert response.status_code == 200, response.text
        return response.content


def _make_tree(server: ServerThread | RemoteServer, port: int, prefix: str) -> Tree:
    with admin_client(server) as admin:
        owner = new_user(admin, prefix)
    token = log_in(server, owner)
    api = f"{server.http_url}/api/v1"
    http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert http.post(f"/catalog/children/{owner}", json={"key": "d"}).status_code == 201
    return Tree(owner, token, port, http)


def _create_array(tree: Tree, key: str, values: np.ndarray, chunks: tuple[int, ...]) -> None:
    structure = {"data_type": values.dtype.str, "shape": list(values.shape), "chunks": chunks}
    body = {"key": key, "structure_family": "array", "structure": structure}
    response = tree.http.post(f"/catalog/children/{tree.owner}/d", json=body)
    assert response.status_code == 201, response.text
    for i in range(-(-values.shape[0] // chunks[0])):
        part = np.ascontiguousarray(values[i * chunks[0] : (i + 1) * chunks[0]])
        response = tree.http.put(
            f"/array/block/{tree.owner}/d/{key}",
            params={"block": f"{i},0"},
            content=part.tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code in (200, 204), response.text


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """An impatient server (:func:`~outside._tools.impatient_server`)."""
    with impatient_server() as thread:
        yield thread


@pytest.fixture(scope="module")
def tree(server: ServerThread) -> Iterator[Tree]:
    """``{owner}/d/a``: ``OLD``, in two blocks of 512 KiB."""
    made = _make_tree(server, server.server.http_port, "drs")
    _create_array(made, "a", OLD, (128, COLUMNS))
    yield made
    made.http.close()


def old_block(index: int = 0) -> bytes:
    return OLD[index * 128 : (index + 1) * 128].tobytes()


def assert_still_serves(tree: Tree) -> None:
    started = time.monotonic()
    answer = exchange(tree.port, tree.head("GET", tree.block_target("1,0")))
    assert answer.status == 200, (answer.status, answer.body[:300])
    assert answer.body == old_block(1)
    assert time.monotonic() - started < 5


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """What the server sends until it closes, failing the test past ``within`` seconds."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the server did not close a stalled upload within {within} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the server did not close a stalled upload within {within} s")
        if not chunk:
            return received
        received += chunk


def _status(raw: bytes) -> int | None:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None


NEW = b"\xab" * BLOCK_BYTES


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
def test_half_a_block_then_a_stall_is_cut_off_and_never_readable(
    tree: Tree, unhandled: Unhandled, fraction: float
) -> None:
    """The body stops after ``fraction`` of its bytes: while it stalls, and after the server
    cut it off, the block reads as it was; others are served meanwhile."""
    head = tree.head("PUT", tree.block_target(), BLOCK_BYTES)
    with socket.create_connection(("127.0.0.1", tree.port), timeout=10) as sock:
        sock.sendall(head + NEW[: int(BLOCK_BYTES * fraction)])
        time.sleep(0.2)
        assert tree.block() == old_block()  # mid-stall
        assert_still_serves(tree)
        answer = _read_until_closed(sock, IDLE + 4)
        status = _status(answer)
        assert status is None or 400 <= status < 500, answer[:300]
    assert tree.block() == old_block()
    assert not unhandled.records, unhandled.records[:5]


@pytest.mark.parametrize("how", ["close", "reset", "shutdown-write"])
@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_half_a_block_then_a_hangup_leaves_the_block_as_it_was(
    tree: Tree, unhandled: Unhandled, how: str, fraction: float
) -> None:
    head = tree.head("PUT", tree.block_target(), BLOCK_BYTES)
    sock = socket.create_connection(("127.0.0.1", tree.port), timeout=10)
    try:
        sock.sendall(head + NEW[: int(BLOCK_BYTES * fraction)])
        time.sleep(0.1)
        if how == "reset":
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        elif how == "shutdown-write":
            sock.shutdown(socket.SHUT_WR)
            answer = _read_until_closed(sock, IDLE + 4)
            status = _status(answer)
            assert status is None or 400 <= status < 500, answer[:300]
    finally:
        sock.close()
    time.sleep(0.3)  # the server notices
    assert tree.block() == old_block()
    assert_still_serves(tree)
    assert not unhandled.records, unhandled.records[:5]


def test_a_body_longer_than_declared_does_not_reach_the_block(
    tree: Tree, unhandled: Unhandled
) -> None:
    """Content-Length says one byte less than the block: 422, whatever follows; the bytes
    after the declared body are the next request (garbage: a 400 or a close), never data."""
    head = tree.head("PUT", tree.block_target(), BLOCK_BYTES - 1)
    answer = exchange(tree.port, head + NEW, deadline=10)
    assert answer.status == 422, (answer.status, answer.body[:300])
    assert_4xx_or_closed(answer)
    assert tree.block() == old_block()
    assert not unhandled.records, unhandled.records[:5]


def test_slowloris_uploads_are_served_or_cut_off_while_others_are_served(
    tree: Tree, unhandled: Unhandled
) -> None:
    """20 connections trickle a block's body, 4 KiB every 0.3 s (never idle for the server's
    timeout): normal reads are served at once all along; when the trickles stop, each is cut
    off, and the block is still as it was."""
    head = tree.head("PUT", tree.block_target(), BLOCK_BYTES)
    socks = [socket.create_connection(("127.0.0.1", tree.port), timeout=10) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(head)
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            for sock in socks:
                sock.sendall(NEW[sent : sent + 4096])
            sent += 4096
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda _: assert_still_serves(tree), range(2)))
            assert tree.block() == old_block()
            time.sleep(0.3)
        # Now they stall: each is cut off (or answered 4xx) within the idle timeout.
        for sock in socks:
            answer = _read_until_closed(sock, IDLE + 4)
            status = _status(answer)
            assert status is None or 400 <= status < 500, answer[:300]
    finally:
        for sock in socks:
            sock.close()
    assert tree.block() == old_block()
    assert_still_serves(tree)
    assert not unhandled.records, unhandled.records[:5]


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a ``Content-Length`` (or none: no body) off ``sock``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {bytes(buffer[:200])!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), headers
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


def test_pipelined_reads_and_writes_are_answered_in_order(tree: Tree, unhandled: Unhandled) -> None:
    """One write holding GET block, PUT block (new bytes), GET block, GET a selection, PUT block
    (the old bytes back), GET block: the answers come in order, each seeing the writes before
    it."""
    new = np.full((128, COLUMNS), 3.25, "<f8")
    target = tree.block_target()
    selection = f"/api/v1/array/full/{tree.array}?slice=120:136,::256"
    requests = [
        tree.head("GET", target, close=False),
        tree.head("PUT", target, BLOCK_BYTES, close=False) + new.tobytes(),
        tree.head("GET", target, close=False),
        tree.head("GET", selection, close=False),
        tree.head("PUT", target, BLOCK_BYTES, close=False) + old_block(),
        tree.head("GET", target, close=True),
    ]
    expected_selection = np.concatenate([new, OLD[128:]])[120:136, ::256]
    with socket.create_connection(("127.0.0.1", tree.port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        buffer = bytearray()
        answers = [_read_response(sock, buffer) for _ in requests]
    assert [status for status, _, _ in answers] == [200, 204, 200, 200, 204, 200], [
        (s, b[:100]) for s, _, b in answers
    ]
    assert answers[0][2] == old_block()
    assert answers[2][2] == new.tobytes()
    got = np.frombuffer(answers[3][2], "<f8").reshape(expected_selection.shape)
    np.testing.assert_array_equal(got, expected_selection)
    assert answers[5][2] == old_block()
    assert tree.block() == old_block()
    assert not unhandled.records, unhandled.records[:5]


def test_a_pipelined_request_after_a_refused_body_is_still_answered_or_closed(
    tree: Tree, unhandled: Unhandled
) -> None:
    """A PUT whose body is too short for its block (422), then a GET on the same connection:
    the GET is answered (the 422's body was read to its declared end) or the connection is
    closed, never confused with the PUT's bytes."""
    with socket.create_connection(("127.0.0.1", tree.port), timeout=10) as sock:
        sock.sendall(
            tree.head("PUT", tree.block_target(), 100, close=False)
            + b"\x00" * 100
            + tree.head("GET", tree.block_target())
        )
        buffer = bytearray()
        status, _, _ = _read_response(sock, buffer)
        assert status == 422
        try:
            second = _read_response(sock, buffer)
        except AssertionError:
            second = None  # closed after the 422: allowed
    if second is not None:
        assert second[0] == 200
        assert second[2] == old_block()
    assert not unhandled.records, unhandled.records[:5]


# -- 32 MiB downloads nobody reads to the end, on a server of its own ---------------------------

BIG_ROWS = 4096  # 4096 x 1024 float64: 32 MiB, one block
STALLED = 6


def _pid_listening_on(port: int) -> int:
    """The process whose socket listens on ``port`` (found through /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return int(pid)
    raise AssertionError(f"no process listens on {port}")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[RemoteServer, Tree, int]]:
    with serve("") as served:
        made = _make_tree(served, served.port, "drb")
        values = np.arange(BIG_ROWS * 1024, dtype="<f8").reshape(BIG_ROWS, 1024)
        _create_array(made, "big", values, (BIG_ROWS, 1024))
        try:
            yield served, made, _pid_listening_on(served.port)
        finally:
            made.http.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")
def test_downloads_nobody_reads_give_back_their_connection_and_memory(
    remote: tuple[RemoteServer, Tree, int],
) -> None:
    served, tree, pid = remote
    target = tree.block_target("0,0", key="big")
    whole = exchange(served.port, tree.head("GET", target), deadline=20)
    assert whole.status == 200
    assert len(whole.body) == 32 * MB
    time.sleep(0.3)
    baseline_rss = _rss(pid)
    baseline_connections = connections_to(served.port)
    socks = []
    try:
        for _ in range(STALLED):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(tree.head("GET", target))
            received = 0
            while received < MB:  # a little of it, then never another byte
                received += len(sock.recv(65536))
            socks.append(sock)
        time.sleep(0.5)
        stalled_rss = _rss(pid)
        # The server answers others at once meanwhile.
        started = time.monotonic()
        answer = exchange(served.port, tree.head("GET", f"/api/v1/catalog/nodes/{tree.owner}/d"))
        assert answer.status == 200
        assert time.monotonic() - started < 3
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 8
    while connections_to(served.port) > baseline_connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert connections_to(served.port) <= baseline_connections, "stalled downloads kept"
    time.sleep(0.5)
    after_rss = _rss(pid)
    assert after_rss < baseline_rss + 64 * MB, (baseline_rss, stalled_rss, after_rss)
    # And a whole download still works.
    again = exchange(served.port, tree.head("GET", target), deadline=20)
    assert again.status == 200
    assert again.body == whole.body


def test_after_all_that_the_server_still_serves(tree: Tree) -> None:
    assert_still_serves(tree)
    assert tree.block() == old_block()
