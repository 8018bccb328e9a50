"""The catalog's routes abused over raw sockets: what no HTTP library would send.

Malformed percent-encoding in catalog paths (``%zz``, ``%00``, ``%2F`` inside a key, overlong
and surrogate UTF-8), traversal (``..``, ``.``, ``//``, encoded or not), absurdly long paths and
``filters``, heads and bodies past the limits on ``PATCH``, bodies that stall, and slowloris on
a listing (a head that trickles in, an answer nobody reads). The server must answer each with a
4xx or close the connection (never a 500, never a hang), and keep serving everyone else.

Every request is written byte for byte on a plain socket, with ``Connection: close``, and the
answer read until the server closes, within a deadline: a hang is a failure, not a stuck test.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from _structures import structure

from aiosdk.server import ServerThread
from outside._tools import (
    HEAD_TIMEOUT,
    IDLE,
    Unhandled,
    admin_client,
    assert_4xx_or_closed,
    exchange,
    impatient_server,
    log_in,
    new_user,
)

MB = 1024 * 1024
CHILDREN = 300  # children of the big container (a listing of them is about 200 KB)


@dataclass
class Tree:
    owner: str
    token: str
    port: int
    http_url: str

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        content_type: str | None = "application/json",
        extra: bytes = b"",
    ) -> bytes:
        """``method target`` with this user's token, byte for byte (``target`` as given)."""
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {self.token}\r\n"
        ).encode("latin-1")  # a target's octets as they are
        head += extra
        if body is not None:
            if content_type is not None:
                head += f"Content-Type: {content_type}\r\n".encode()
            head += f"Content-Length: {len(body)}\r\n".encode()
        return head + b"\r\n" + (body or b"")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """An impatient server (:func:`~outside._tools.impatient_server`)."""
    with impatient_server() as thread:
        yield thread


@pytest.fixture(scope="module")
def tree(server: ServerThread) -> Tree:
    """``{owner}/exp`` (metadata), its array ``a1``, and ``{owner}/big`` of 300 children."""
    with admin_client(server) as admin:
        owner = new_user(admin, "rs")
    token = log_in(server, owner)
    with httpx.Client(
        base_url=f"{server.http_url}/api/v1/catalog/children",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        for parent, body in [
            (owner, {"key": "exp", "metadata": {"color": "red"}}),
            (f"{owner}/exp", {"key": "a1", "structure_family": "array", "structure": structure()}),
            (owner, {"key": "big"}),
        ]:
            assert http.post(f"/{parent}", json=body).status_code == 201
        padding = "m" * 500
        for i in range(CHILDREN):
            body = {"key": f"c{i:04d}", "metadata": {"i": i, "pad": padding}}
            assert http.post(f"/{owner}/big", json=body).status_code == 201
    return Tree(owner, token, server.server.http_port, server.http_url)


def assert_still_serves(tree: Tree) -> None:
    answer = exchange(tree.port, tree.request("GET", f"/api/v1/catalog/nodes/{tree.owner}/exp"))
    assert answer.status == 200, (answer.status, answer.body[:300])
    assert answer.json()["path"] == f"{tree.owner}/exp"
    assert answer.seconds < 5, answer.seconds


NODES = "/api/v1/catalog/nodes/{o}"
BAD_PATHS = [
    # (id, target below which {o} is the owner's namespace)
    ("percent-zz", NODES + "/%zz"),
    ("percent-z", NODES + "/exp%z"),
    ("percent-at-end", NODES + "/exp%"),
    ("percent-00", NODES + "/ex%00p"),
    ("percent-00-alone", NODES + "/%00"),
    ("percent-0a", NODES + "/exp%0A"),
    ("percent-7f", NODES + "/exp%7F"),
    ("percent-2f-in-key", NODES + "/exp%2Fa1"),
    ("percent-2f-doubled", NODES + "/exp%2F%2Fa1"),
    ("percent-5c", NODES + "/exp%5Ca1"),
    ("double-encoded", NODES + "/exp%252Fa1"),
    ("overlong-slash", NODES + "/exp%C0%AFa1"),
    ("overlong-dot-dot", NODES + "/exp/%C0%AE%C0%AE/exp"),
    ("overlong-3-bytes", NODES + "/%E0%80%AF"),
    ("utf8-surrogate", NODES + "/%ED%A0%80"),
    ("invalid-utf8", NODES + "/%FF%FE"),
    ("truncated-utf8", NODES + "/exp%C3"),
    ("raw-octets", NODES + "/exp\xff\xfe"),
    ("dot-dot", NODES + "/exp/../exp"),
    ("dot-dot-out", "/api/v1/catalog/nodes/../../admin/users"),
    ("dot-dot-encoded", NODES + "/exp/%2E%2E/exp"),
    ("dot-dot-encoded-out", "/api/v1/catalog/nodes/%2e%2e/%2e%2e/admin/users"),
    ("dot", NODES + "/./exp"),
    ("dot-encoded", NODES + "/%2E/exp"),
    ("double-slash", NODES + "//exp"),
    ("triple-slash", "/api/v1/catalog/nodes///"),
    ("trailing-double-slash", NODES + "/exp//"),
    ("only-slashes", "/api/v1/catalog/children//"),
    ("leading-space-key", NODES + "/%20exp"),
    ("tab-key", NODES + "/exp%09"),
    ("bidi-and-bom", NODES + "/%E2%80%AE%EF%BB%BF"),
    ("key-256", NODES + "/" + "k" * 256),
    ("path-1025", NODES + ("/" + "k" * 200) * 5 + "/kkkkkkkkkkkkkkkkkkkkkkk"),
    ("segments-33", NODES + "/k" * 33),
    ("segments-5000", NODES + "/k" * 5000),
    ("path-60-KB", NODES + "/" + "k" * 60_000),
    ("path-200-KB", NODES + "/" + "k" * 200_000),
    ("query-in-path-encoded", NODES + "/exp%3Ffilters=x"),
    ("fragment", NODES + "/exp#frag"),
    ("absolute-form", "http://127.0.0.1/api/v1/catalog/nodes/{o}/exp"),
    ("asterisk", "*"),
    ("children-percent-zz", "/api/v1/catalog/children/{o}/%zz"),
    ("count-percent-00", "/api/v1/catalog/count/{o}/%00"),
    ("distinct-dot-dot", "/api/v1/catalog/distinct/{o}/.."),
    ("shares-overlong", "/api/v1/catalog/children/{o}/%C0%AE"),
]


def _names_a_real_node(target: str) -> bool:
    return "a1" in target or target.endswith(("/exp", "/exp//"))


@pytest.mark.parametrize(
    ("method", "target"),
    [
        pytest.param(method, target, id=f"{method}-{name}")
        for method in ("GET", "DELETE")
        for name, target in BAD_PATHS
        # a DELETE of a path that names a real node of the tree would delete it
        if method == "GET" or not _names_a_real_node(target)
    ],
)
def test_a_malformed_catalog_path_is_a_4xx_or_its_node(
    tree: Tree, unhandled: Unhandled, method: str, target: str
) -> None:
    """Never a 500 and never another route's answer: ``..`` never climbs out of the catalog.
    ``%2F`` inside a key decodes to ``/`` (two keys), so it may find ``exp/a1``; the targets
    that would name a real node are not sent as DELETE."""
    target = target.replace("{o}", tree.owner)
    answer = exchange(tree.port, tree.request(method, target), deadline=15)
    if answer.status is not None and answer.status < 300:
        # Only a real node of the tree (or the root's listing), by a path that names it.
        assert method == "GET", (answer.status, answer.body[:300])
        found = answer.json()
        if "/children/" in target:
            items = found["items"]
            assert isinstance(items, list)
            assert [i["key"] for i in items] == [tree.owner], found
        else:
            assert found.get("namespace") == tree.owner, found
            assert found.get("path") in (f"{tree.owner}/exp", f"{tree.owner}/exp/a1"), found
    else:
        assert_4xx_or_closed(answer)
    assert not unhandled.records, unhandled.records[:5]


def test_after_the_bad_paths_the_server_still_serves(tree: Tree) -> None:
    assert_still_serves(tree)


CHILDREN_OF_EXP = "/api/v1/catalog/children/{o}/exp"
BAD_QUERIES = [
    ("filters-60-KB", "filters=" + quote(json.dumps([{"op": "fulltext", "text": "x" * 60_000}]))),
    ("filters-1-MB", "filters=" + "x" * MB),
    ("filters-percent-zz", "filters=%zz%5B"),
    ("filters-percent-00", "filters=%5B%00%5D"),
    ("filters-invalid-utf8", "filters=%5B%22%FF%22%5D"),
    ("filters-utf8-surrogate", 'filters=[{"op":"fulltext","text":"%ED%A0%80"}]'),
    ("filters-raw-quote-and-braces", 'filters=[{"op":"eq","key":"color","value":"red"}]'),
    (
        "filters-nested-2000",
        "filters=" + quote("[" + '{"a":' * 2000 + "1" + "}" * 2000 + "]"),
    ),
    ("filters-repeated", "filters=%5B%5D&filters=%5B%5D"),
    ("filters-10000-params", "&".join(["filters=%5B%5D"] * 10_000)),
    ("sort-10000", "&".join(["sort=color"] * 10_000)),
    ("sort-2000-chars", "sort=" + "a" * 2000),
    ("offset-400-digits", "offset=" + "9" * 400),
    ("page-size-nan", "page_size=NaN"),
    ("reverse-garbage", "reverse=%FF"),
    ("page-token-8-KB", "page_token=" + "A" * 8192),
    ("page-token-base64-garbage", "page_token=%3D%3D%3D%3D"),
    ("page-token-json-not-list", "page_token=eyJhIjoxfQ"),
    ("many-unknown-params", "&".join(f"x{i}=1" for i in range(5000))),
    ("bare-ampersands", "&" * 10_000),
    ("semicolons", "filters=%5B%5D;sort=color"),
]


@pytest.mark.parametrize("query", [pytest.param(q, id=i) for i, q in BAD_QUERIES])
def test_a_hostile_listing_query_is_a_4xx_or_a_listing(
    tree: Tree, unhandled: Unhandled, query: str
) -> None:
    target = CHILDREN_OF_EXP.replace("{o}", tree.owner) + "?" + query
    answer = exchange(tree.port, tree.request("GET", target), deadline=20)
    if answer.status == 200:
        assert isinstance(answer.json()["items"], list)
    else:
        assert_4xx_or_closed(answer)
    assert not unhandled.records, unhandled.records[:5]


def test_a_huge_filters_on_a_listing_and_a_count_is_a_4xx(tree: Tree) -> None:
    """Over the documented 4096 characters: refused, not evaluated."""
    giant = quote(json.dumps([{"op": "eq", "key": "color", "value": "r" * 900}] * 5))
    for route in ("children", "count", "distinct"):
        target = f"/api/v1/catalog/{route}/{tree.owner}/exp?filters={giant}"
        answer = exchange(tree.port, tree.request("GET", target))
        assert answer.status is not None
        assert 400 <= answer.status < 500, (answer.status, answer.body[:200])


def _patch(tree: Tree, body: bytes, **kwargs: object) -> bytes:
    return tree.request("PATCH", f"/api/v1/catalog/nodes/{tree.owner}/exp/a1", body, **kwargs)  # type: ignore[arg-type]


NESTED = b"[" * 100_000 + b"]" * 100_000
HOSTILE_PATCHES = [
    ("8-MB-metadata", b'{"metadata":{"pad":"' + b"p" * (8 * MB) + b'"}}', "application/json"),
    ("17-MB-body", b'{"metadata":{"pad":"' + b"p" * (17 * MB) + b'"}}', "application/json"),
    ("1M-element-array", b'{"tags":[' + b'"t",' * 1_000_000 + b'"t"]}', "application/json"),
    ("nested-top-level", NESTED, "application/json"),
    ("nested-metadata", b'{"metadata":{"a":' + NESTED + b"}}", "application/json"),
    (
        "nested-objects",
        b'{"metadata":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
        "application/json",
    ),
    (
        "10000-patch-ops",
        b'{"metadata_patch":['
        + b'{"op":"add","path":"/a","value":1},' * 9999
        + b'{"op":"add","path":"/a","value":1}]}',
        "application/json",
    ),
    ("invalid-utf8", b'{"metadata":{"a":"\xff\xfe"}}', "application/json"),
    ("overlong-utf8", b'{"metadata":{"\xc0\xaf":"\xe0\x80\xaf"}}', "application/json"),
    ("utf8-surrogate", b'{"metadata":{"a":"\xed\xa0\x80"}}', "application/json"),
    ("raw-nul", b'{"metadata":{"a":"x\x00y"}}', "application/json"),
    ("escaped-nul-key", b'{"metadata":{"\\u0000":1}}', "application/json"),
    ("number-5000-digits", b'{"metadata":{"n":' + b"9" * 5000 + b"}}", "application/json"),
    ("revision-5000-digits", b'{"revision":' + b"9" * 5000 + b"}", "application/json"),
    ("nan", b'{"metadata":{"n":NaN}}', "application/json"),
    ("duplicate-keys", b'{"metadata":{"a":1},"metadata":{"b":2},"tags":[]}', "application/json"),
    ("bom", b'\xef\xbb\xbf{"tags":[]}', "application/json"),
    ("text-plain", b'{"tags":[]}', "text/plain"),
    ("form", b"tags=x", "application/x-www-form-urlencoded"),
    (
        "json-patch-media-type",
        b'[{"op":"add","path":"/a","value":1}]',
        "application/json-patch+json",
    ),
    ("utf-16", '{"tags":[]}'.encode("utf-16"), "application/json; charset=utf-16"),
    ("no-content-type", b'{"tags":[]}', None),
    ("empty", b"", "application/json"),
    ("nul-only", b"\x00" * 64, "application/json"),
]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_PATCHES],
)
def test_a_hostile_patch_body_is_a_4xx_or_applies(
    tree: Tree, unhandled: Unhandled, body: bytes, content_type: str | None
) -> None:
    """(8 MB of metadata is under the 16 MB body limit: it applies, and is echoed back.)"""
    answer = exchange(tree.port, _patch(tree, body, content_type=content_type), deadline=30)
    if answer.status == 200:
        assert answer.json()["path"] == f"{tree.owner}/exp/a1"
    else:
        assert_4xx_or_closed(answer)
    assert not unhandled.records, unhandled.records[:5]


def test_a_patch_declared_too_large_is_413_before_it_is_sent(tree: Tree) -> None:
    head = _patch(tree, b"").replace(b"Content-Length: 0", b"Content-Length: 17000000")
    answer = exchange(tree.port, head, deadline=10)
    assert answer.status == 413, answer
    assert_4xx_or_closed(answer)


def test_a_chunked_patch_too_large_is_413(tree: Tree) -> None:
    chunk = b"%x\r\n" % MB + b" " * MB + b"\r\n"
    head = _patch(tree, b"").replace(b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n")
    answer = exchange(tree.port, head + chunk * 20, deadline=20)
    assert answer.status == 413, answer
    assert_4xx_or_closed(answer)


HOSTILE_HEADS = [
    ("one-100-KB-header", b"X-Pad: " + b"p" * 100_000 + b"\r\n"),
    ("2000-headers", b"".join(b"X-H%d: v\r\n" % i for i in range(2000))),
    ("if-match-100-KB", b"If-None-Match: " + b'"x",' * 25_000 + b'"y"\r\n'),
    ("if-none-match-garbage", b"If-None-Match: \xff\xfe\x00\r\n"),
    ("idempotency-key-garbage", b"Idempotency-Key: \xff" + b"k" * 5000 + b"\r\n"),
    ("idempotency-key-long", b"Idempotency-Key: " + b"k" * 5000 + b"\r\n"),
    ("nul-in-header", b"X-Nul: a\x00b\r\n"),
    ("obs-fold", b"X-Folded: a\r\n b\r\n"),
    ("two-content-lengths", b"Content-Length: 5\r\n"),
    ("content-length-and-chunked", b"Transfer-Encoding: chunked\r\n"),
]


@pytest.mark.parametrize("extra", [pytest.param(v, id=i) for i, v in HOSTILE_HEADS])
def test_a_hostile_patch_head_is_a_4xx_closed_or_applies(
    tree: Tree, unhandled: Unhandled, extra: bytes
) -> None:
    answer = exchange(tree.port, _patch(tree, b'{"tags":["h"]}', extra=extra), deadline=15)
    if answer.status == 200:
        assert answer.json()["tags"] == ["h"]
    else:
        assert_4xx_or_closed(answer)
    assert not unhandled.records, unhandled.records[:5]


def test_a_stalled_patch_body_is_cut_off_while_others_are_served(tree: Tree) -> None:
    head = _patch(tree, b'{"tags":["stalled-forever"]}')
    stalled = [socket.create_connection(("127.0.0.1", tree.port), timeout=10) for _ in range(20)]
    try:
        for sock in stalled:
            sock.sendall(head[: head.index(b"\r\n\r\n") + 4] + b'{"tags":')
        started = time.monotonic()
        assert_still_serves(tree)  # while 20 bodies stall
        for sock in stalled:
            sock.settimeout(max(0.1, IDLE + 3 - (time.monotonic() - started)))
            answer = b""
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail(f"a stalled body was not cut off within {IDLE + 3} s")
            assert b" 500 " not in answer[:20], answer[:200]
    finally:
        for sock in stalled:
            sock.close()
    node = exchange(tree.port, tree.request("GET", f"/api/v1/catalog/nodes/{tree.owner}/exp/a1"))
    assert "stalled-forever" not in node.json()["tags"]  # type: ignore[operator]


def test_slowloris_heads_on_a_listing_are_cut_off_while_others_are_served(tree: Tree) -> None:
    """30 connections each sending a listing's head one byte every 0.2 s: each is closed
    (or answered 408) after the head timeout, and a normal listing is served meanwhile."""
    target = f"/api/v1/catalog/children/{tree.owner}/big?page_size=1000"
    head = tree.request("GET", target)
    socks = [socket.create_connection(("127.0.0.1", tree.port), timeout=10) for _ in range(30)]
    started = time.monotonic()
    closed: set[int] = set()
    try:
        sent = 0
        while len(closed) < len(socks) and time.monotonic() - started < HEAD_TIMEOUT + 4:
            for n, sock in enumerate(socks):
                if n in closed:
                    continue
                try:
                    sock.sendall(head[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed.add(n)
                    continue
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                    assert b" 500 " not in data[:20], data[:200]
                    if not data or b" 408 " in data[:20]:
                        closed.add(n)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed.add(n)
                finally:
                    sock.setblocking(True)
            sent += 1
            if sent == 5:
                assert_still_serves(tree)
                listing = exchange(tree.port, head, deadline=10)
                assert listing.status == 200
                assert len(listing.json()["items"]) == CHILDREN  # type: ignore[arg-type]
            time.sleep(0.2)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} heads still open"
        assert time.monotonic() - started < HEAD_TIMEOUT + 4
    finally:
        for sock in socks:
            sock.close()
    assert_still_serves(tree)


def test_listings_nobody_reads_do_not_stop_the_server(tree: Tree) -> None:
    """20 clients ask for the whole big container (about 200 KB each) with a tiny receive
    buffer and never read it; the server still answers others at once."""
    target = f"/api/v1/catalog/children/{tree.owner}/big?page_size=1000"
    socks = []
    try:
        for _ in range(20):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", tree.port))
            sock.sendall(tree.request("GET", target))
            socks.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: assert_still_serves(tree), range(8)))
        assert time.monotonic() - started < 5
    finally:
        for sock in socks:
            sock.close()
    assert_still_serves(tree)


def test_after_all_that_the_server_still_serves(tree: Tree) -> None:
    assert_still_serves(tree)
