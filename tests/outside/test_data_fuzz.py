"""The data API (``/array``, ``/table``, ``/sparse``, ``/formats``) fuzzed from its published
OpenAPI document by schemathesis, as a user who owns a tree holding an array, a table and a
sparse array; then hostile inputs schemathesis never sends: truncated and garbage Arrow IPC,
bodies of the wrong size, lying ``Content-Length``\\ s, malformed, multi-part, reversed and
out-of-range ``Range``\\ s, selections and block indexes past every limit, and structures with
NaN, 2**63 and 33-dimensional shapes or dtypes the contract refuses (``>f8``, ``O``, ``V8``,
``<U0``).

No 5xx, every status one the document declares for its operation, every body of a declared
content type; a selection the server answers is what numpy answers; a refused write leaves the
data as it was. Meanwhile the server (in this process) must log no unhandled error.
"""

from __future__ import annotations

import base64
import io
import json
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from aiosdk.server import ServerThread
from outside._tools import Schemathesis, Unhandled, exchange, log_in, new_user

DATA_ROUTES = r"^/api/v1/(array|table|sparse|formats)/"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
SCHEMATHESIS = Schemathesis(DATA_ROUTES, CHECKS, max_examples=4, seed=10, workers=2, timeout=120)
SHAPE = (6, 5)
CHUNKS = (4, 4)
VALUES = np.arange(30, dtype="<f8").reshape(SHAPE) * 1.5 - 7
SCHEMA = pa.schema([pa.field("t", pa.int64()), pa.field("v", pa.float64())])
ROWS = pa.table({"t": [1, 2, 3], "v": [0.5, -1.0, 2.5]}, schema=SCHEMA)
SPARSE_SHAPE = (4, 3)
COO = pa.table(
    {
        "coord_0": pa.array([0, 3], pa.int64()),
        "coord_1": pa.array([1, 2], pa.int64()),
        "data": pa.array([1.5, -2.0], pa.float64()),
    }
)
ARROW = "application/vnd.apache.arrow.stream"
OCTETS = "application/octet-stream"


def ipc_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def array_structure(**changes: Any) -> dict[str, Any]:
    return {"data_type": "<f8", "shape": list(SHAPE), "chunks": list(CHUNKS), **changes}


@dataclass
class Tree:
    """A user's ``{owner}/d`` holding the array ``a`` (``VALUES``), the table ``t`` (``ROWS``,
    one partition) and the sparse array ``s`` (``COO``), and its HTTP client (base ``/api/v1``,
    the user's token)."""

    owner: str
    token: str
    http: httpx.Client

    @property
    def container(self) -> str:
        return f"{self.owner}/d"

    def create(self, key: str, family: str, structure: Any, *, raw: str | None = None) -> int:
        """Create ``{container}/{key}`` of ``family``; the status (``raw``: the JSON text)."""
        body = {"key": key, "structure_family": family, "structure": structure}
        content = raw if raw is not None else json.dumps(body)
        response = self.http.post(
            f"/catalog/children/{self.container}",
            content=content.encode(),
            headers={"Content-Type": "application/json"},
        )
        return response.status_code


def seed(server: ServerThread, admin: httpx.Client, prefix: str) -> Tree:
    owner = new_user(admin, prefix)
    token = log_in(server, owner)
    http = httpx.Client(
        base_url=f"{server.http_url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    tree = Tree(owner, token, http)
    assert http.post(f"/catalog/children/{owner}", json={"key": "d"}).status_code == 201
    assert tree.create("a", "array", array_structure()) == 201
    for i in range(2):
        for j in range(2):
            block = VALUES[i * 4 : i * 4 + 4, j * 4 : j * 4 + 4]
            response = http.put(
                f"/array/block/{tree.container}/a",
                params={"block": f"{i},{j}"},
                content=np.ascontiguousarray(block).tobytes(),
                headers={"Content-Type": OCTETS},
            )
            assert response.status_code in (200, 204), response.text
    assert tree.create("t", "table", {"arrow_schema": schema_text(SCHEMA)}) == 201
    response = http.post(
        f"/table/partition/{tree.container}/t",
        content=ipc_stream(ROWS),
        headers={"Content-Type": ARROW},
    )
    assert response.status_code == 200, response.text
    sparse = {"data_type": "<f8", "shape": list(SPARSE_SHAPE)}
    assert tree.create("s", "sparse", sparse) == 201
    response = http.put(
        f"/sparse/full/{tree.container}/s", content=ipc_stream(COO), headers={"Content-Type": ARROW}
    )
    assert response.status_code in (200, 204), response.text
    return tree


def schemathesis_config(tree: Tree) -> str:
    """Each family's routes on its own node of the tree; ``/formats`` on the array."""
    config = ""
    for regex, key in (
        ("^/api/v1/array/", "a"),
        ("^/api/v1/table/", "t"),
        ("^/api/v1/sparse/", "s"),
        ("^/api/v1/formats/", "a"),
    ):
        config += (
            f'[[operations]]\ninclude-path-regex = "{regex}"\n'
            f'parameters = {{ path = "{tree.container}/{key}" }}\n\n'
        )
    return config


def test_a_user_owning_data_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, admin: httpx.Client, tmp_path: Path, unhandled: Unhandled
) -> None:
    tree = seed(server, admin, "dfu")
    try:
        output = SCHEMATHESIS.run(
            server,
            tmp_path,
            f"--header=Authorization: Bearer {tree.token}",
            config=schemathesis_config(tree),
        )
        assert tree.token not in output
        assert not unhandled.records, unhandled.records[:5]
        assert tree.http.get(f"/formats/{tree.container}/a").status_code == 200
    finally:
        tree.http.close()


# -- what schemathesis never sends ----------------------------------------------------------


@pytest.fixture(scope="module")
def document(server: ServerThread) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.http_url}/api/v1/openapi.json").json()
    return found


@pytest.fixture(scope="module")
def tree(server: ServerThread, admin: httpx.Client) -> Iterator[Tree]:
    seeded = seed(server, admin, "dfh")
    yield seeded
    seeded.http.close()


def assert_declared(
    document: dict[str, Any],
    response: httpx.Response,
    method: str,
    route: str,
    *,
    media: bool = True,
) -> None:
    """No 5xx; a status (and, with ``media``, a content type) ``route``'s ``method`` declares;
    errors in the API's error shape."""
    status = response.status_code
    assert status < 500, (status, response.text[:300])
    declared = document["paths"][f"/api/v1/{route}"][method.lower()]["responses"]
    assert str(status) in declared, (status, sorted(declared), response.text[:300])
    content = declared[str(status)].get("content")
    received = response.headers.get("content-type", "").partition(";")[0].strip()
    if media and content and received:
        assert received in content, (status, received, sorted(content))
    if status >= 400:
        error = response.json()["error"]
        assert set(error) == {"type", "message", "request_id"}, error


BLOCK = "array/block/{path}"
FULL = "array/full/{path}"
PARTITION = "table/partition/{path}"
SPARSE = "sparse/full/{path}"


def _block_of(tree: Tree, key: str, block: str) -> bytes:
    response = tree.http.get(f"/array/block/{tree.container}/{key}", params={"block": block})
    assert response.status_code == 200, response.text
    return response.content


def _stored_values(tree: Tree) -> np.ndarray[Any, Any]:
    response = tree.http.get(f"/array/full/{tree.container}/a")
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, "<f8").reshape(SHAPE)


# Selections: (id, the slice text, numpy's index or None where numpy refuses it too)
SELECTIONS: list[tuple[str, str, Any]] = [
    ("everything", "", ()),
    ("steps", "1:6:2,::3", np.s_[1:6:2, ::3]),
    ("negative", "-1,-3:", np.s_[-1, -3:]),
    ("negative-step", "::-1,4:0:-2", np.s_[::-1, 4:0:-2]),
    ("empty", "5:2,:", np.s_[5:2, :]),
    ("past-the-end", "2:999,1:", np.s_[2:999, 1:]),
    ("int-min-start", "-9223372036854775808:,:", np.s_[-9223372036854775808:, :]),
    ("int-max-stop", ":9223372036854775807,::9223372036854775807", np.s_[:, :: 2**63 - 1]),
    ("int-min-step", "::-9223372036854775808", np.s_[:: -(2**63)]),
    ("one-index", "3", np.s_[3]),
    ("spaces", " 1 : 3 , 2 ", np.s_[1:3, 2]),
    ("step-zero", "::0", None),
    ("four-parts", "1:2:3:4", None),
    ("33-dims", ",".join(["0"] * 33), None),
    ("3-dims", "0,0,0", None),
    ("index-out-of-range", "6", None),
    ("index-negative-out-of-range", "0,-6", None),
    ("index-2-63", "9223372036854775808", None),
    ("20-digits", "99999999999999999999", None),
    ("400-digits", "1" + "0" * 400, None),
    ("float", "1.5", None),
    ("nan", "nan", None),
    ("ellipsis", "...", None),
    ("letters", "a:b", None),
    ("only-commas", ",,", None),
    ("double-minus", "--1", None),
    ("plus", "+1", None),
    ("unicode-digit", "\u0661", None),  # ARABIC-INDIC ONE: str.isdigit() says yes, int() too
    ("superscript-digit", "\u00b2", None),  # SUPERSCRIPT TWO: isdigit() too, int() refuses
    ("nul", "\x00", None),
]


@pytest.mark.parametrize(
    ("text", "index"),
    [pytest.param(t, i, id=n) for n, t, i in SELECTIONS],
)
def test_a_selection_is_numpy_s_answer_or_a_declared_4xx(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, text: str, index: Any
) -> None:
    response = tree.http.get(f"/array/full/{tree.container}/a", params={"slice": text})
    assert_declared(document, response, "GET", FULL)
    if index is None:
        assert 400 <= response.status_code < 500, response.status_code
    else:
        assert response.status_code == 200, response.text
        expected = VALUES[index]
        shape = response.headers["x-aiosdk-shape"]
        assert shape == ",".join(map(str, expected.shape))
        got = np.frombuffer(response.content, "<f8").reshape(expected.shape)
        np.testing.assert_array_equal(got, expected)
    assert not unhandled.records, unhandled.records[:5]


BLOCKS = [
    "99,99",
    "2,0",
    "0",
    "0,0,0",
    "-1,0",
    "",
    ",",
    "0,",
    ",".join(["0"] * 33),
    "99999999999999999999,0",
    "9223372036854775808,0",
    "\u0661,0",
    "\u00b2,0",
    "0x1,0",
    "1e3,0",
]


@pytest.mark.parametrize(
    ("method", "block"),
    [pytest.param(m, b, id=f"{m}-{b}") for m in ("GET", "PUT") for b in BLOCKS],
)
def test_a_bad_block_index_is_a_declared_4xx(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, block: str, method: str
) -> None:
    response = tree.http.request(
        method,
        f"/array/block/{tree.container}/a",
        params={"block": block},
        content=b"\x00" * 128 if method == "PUT" else None,
        headers={"Content-Type": OCTETS} if method == "PUT" else None,
    )
    assert_declared(document, response, method, BLOCK)
    assert 400 <= response.status_code < 500
    assert not unhandled.records, unhandled.records[:5]
    np.testing.assert_array_equal(_stored_values(tree), VALUES)


@pytest.mark.parametrize(
    ("block", "size"),
    [
        ("0,0", 0),
        ("0,0", 127),
        ("0,0", 129),
        ("0,0", 4 * 1024 * 1024),
        ("1,1", 128),  # the edge block is 2 x 1: 16 bytes
        ("1,1", 15),
    ],
)
def test_a_block_of_the_wrong_size_is_422_naming_the_size_and_changes_nothing(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, block: str, size: int
) -> None:
    expected = {"0,0": 128, "1,1": 16}[block]
    response = tree.http.put(
        f"/array/block/{tree.container}/a",
        params={"block": block},
        content=b"\xff" * size,
        headers={"Content-Type": OCTETS},
    )
    assert_declared(document, response, "PUT", BLOCK)
    assert response.status_code == 422, response.text
    assert str(expected) in response.json()["error"]["message"]
    np.testing.assert_array_equal(_stored_values(tree), VALUES)
    assert not unhandled.records, unhandled.records[:5]


PATCHES = [
    ("offset-2-63", {"offset": "9223372036854775808,0", "shape": "1,1"}, 8),
    (
        "offset-huge-extend",
        {"offset": "9223372036854775807,0", "shape": "1,1", "extend": "true"},
        8,
    ),
    ("shape-huge", {"offset": "0,0", "shape": "9223372036854775807,9223372036854775807"}, 8),
    ("shape-huge-extend", {"offset": "0,0", "shape": "4294967296,4294967296", "extend": "true"}, 8),
    ("grid-too-large-extend", {"offset": "999999999999,0", "shape": "1,1", "extend": "true"}, 8),
    ("outside-no-extend", {"offset": "6,0", "shape": "1,5"}, 40),
    ("wrong-size", {"offset": "0,0", "shape": "2,2"}, 31),
    ("wrong-ndim", {"offset": "0", "shape": "1"}, 8),
    ("33-dims", {"offset": ",".join(["0"] * 33), "shape": ",".join(["1"] * 33)}, 8),
    ("extend-not-bool", {"offset": "0,0", "shape": "1,1", "extend": "maybe"}, 8),
]


@pytest.mark.parametrize(("params", "size"), [pytest.param(p, s, id=i) for i, p, s in PATCHES])
def test_a_hostile_patch_is_a_declared_4xx_and_changes_nothing(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, params: dict[str, str], size: int
) -> None:
    response = tree.http.patch(
        f"/array/full/{tree.container}/a",
        params=params,
        content=b"\x01" * size,
        headers={"Content-Type": OCTETS},
    )
    assert_declared(document, response, "PATCH", FULL)
    assert 400 <= response.status_code < 500
    node = tree.http.get(f"/catalog/nodes/{tree.container}/a").json()
    assert node["structure"]["shape"] == list(SHAPE)
    np.testing.assert_array_equal(_stored_values(tree), VALUES)
    assert not unhandled.records, unhandled.records[:5]


# -- Range ---------------------------------------------------------------------------------

FULL_BYTES = VALUES.tobytes()  # 240 bytes
RANGES: list[tuple[str, str, Any]] = [
    # (id, Range header, what must come: a (start, stop) 206, "whole" (200) or 416)
    ("first-byte", "bytes=0-0", (0, 1)),
    ("open-ended", "bytes=100-", (100, 240)),
    ("last-byte", "bytes=239-239", (239, 240)),
    ("suffix", "bytes=-10", (230, 240)),
    ("suffix-larger-than-body", "bytes=-99999", (0, 240)),
    ("stop-past-the-end", "bytes=200-999999", (200, 240)),
    ("beyond-the-end", "bytes=240-", 416),
    ("far-beyond-the-end", "bytes=999999-1000000", 416),
    ("suffix-zero", "bytes=-0", 416),
    ("reversed", "bytes=9-2", "whole"),
    ("multi-range", "bytes=0-1,5-9", "whole"),
    ("multi-range-overlapping", "bytes=0-100,50-150,-5", "whole"),
    ("other-unit", "items=0-1", "whole"),
    ("no-numbers", "bytes=-", "whole"),
    ("garbage", "bytes=abc-def", "whole"),
    ("empty", "", "whole"),
    ("negative", "bytes=-5-10", "whole"),
    ("20-digits", "bytes=99999999999999999999-", "whole"),
    ("19-digits", "bytes=9999999999999999999-", 416),
    ("spaces-inside", "bytes = 0 - 1", "whole"),
    ("unicode-digits", "bytes=\u0661-\u0662", "whole"),
    ("no-equals", "bytes0-1", "whole"),
]


@pytest.mark.parametrize("route", ["full", "block"])
@pytest.mark.parametrize(("header", "want"), [pytest.param(h, w, id=i) for i, h, w in RANGES])
def test_a_hostile_range_is_206_200_or_416_and_consistent(
    tree: Tree,
    document: dict[str, Any],
    unhandled: Unhandled,
    route: str,
    header: str,
    want: Any,
) -> None:
    url = f"/array/{route}/{tree.container}/a"
    params = {"block": "0,0"} if route == "block" else {}
    body = FULL_BYTES if route == "full" else np.ascontiguousarray(VALUES[:4, :4]).tobytes()
    size = len(body)
    if isinstance(want, tuple) and route == "block":  # the block is 128 bytes
        want = {
            (100, 240): (100, 128),
            (239, 240): 416,
            (230, 240): (118, 128),
            (0, 240): (0, 128),
            (200, 240): 416,
        }.get(want, want)
    if header == "bytes=240-" and route == "block":
        want = 416
    raw = header.encode("utf-8")
    response = tree.http.get(url, params=params, headers=[(b"Range", raw)])
    template = {"full": FULL, "block": BLOCK}[route]
    assert_declared(document, response, "GET", template)
    if want == "whole":
        assert response.status_code == 200, (response.status_code, response.text[:200])
        assert response.content == body
    elif want == 416:
        assert response.status_code == 416, (response.status_code, response.text[:200])
        assert response.headers["content-range"] == f"bytes */{size}"
    else:
        start, stop = want
        assert response.status_code == 206, (response.status_code, response.text[:200])
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert response.content == body[start:stop]
    assert not unhandled.records, unhandled.records[:5]


@pytest.mark.parametrize("if_range", ['"not-the-etag"', "", "Wed, 21 Oct 2015 07:28:00 GMT", "*"])
def test_a_range_with_a_stale_if_range_is_the_whole_body(
    tree: Tree, document: dict[str, Any], if_range: str
) -> None:
    url = f"/array/full/{tree.container}/a"
    response = tree.http.get(url, headers={"Range": "bytes=10-", "If-Range": if_range})
    assert_declared(document, response, "GET", FULL)
    assert response.status_code == 200
    assert response.content == FULL_BYTES
    etag = response.headers["etag"]
    resumed = tree.http.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
    assert resumed.status_code == 206
    assert resumed.content == FULL_BYTES[10:]


# -- Arrow IPC bodies ------------------------------------------------------------------------


def _arrow_file(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _corrupted(stream: bytes) -> bytes:
    """``stream`` with the bytes of its record batch's body overwritten (its lengths too)."""
    middle = len(stream) // 2
    return stream[:middle] + b"\xff" * 48 + stream[middle + 48 :]


GOOD_ROWS = ipc_stream(pa.table({"t": [7], "v": [7.0]}, schema=SCHEMA))
GOOD_COO = ipc_stream(COO)
IPC_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("garbage", random.Random(10).randbytes(512)),
    ("garbage-after-marker", b"\xff\xff\xff\xff" + random.Random(11).randbytes(512)),
    ("nul", b"\x00" * 64),
    ("continuation-only", b"\xff\xff\xff\xff"),
    ("huge-metadata-length", b"\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00" * 64),
    ("negative-metadata-length", b"\xff\xff\xff\xff\x00\x00\x00\x80" + b"\x00" * 64),
    ("json", b'{"t": [1], "v": [1.0]}'),
    ("parquet-magic", b"PAR1" + b"\x00" * 60 + b"PAR1"),
]


def _ipc_cases(good: bytes, other: pa.Table) -> list[tuple[str, bytes]]:
    return [
        *IPC_BODIES,
        ("truncated-in-schema", good[:20]),
        ("truncated-in-batch", good[: len(good) - 40]),
        ("truncated-by-one", good[:-1]),
        ("no-end-marker", good[:-8]),
        ("corrupted-batch", _corrupted(good)),
        ("trailing-garbage", good + secrets.token_bytes(100)),
        ("two-streams", good + good),
        ("file-format", _arrow_file(pa.ipc.open_stream(good).read_all())),
        ("another-schema", ipc_stream(other)),
        ("schema-only", ipc_stream(other.schema.empty_table())),
    ]


OTHER = pa.table({"x": ["a", "b"]})
TABLE_CASES = _ipc_cases(GOOD_ROWS, OTHER)
SPARSE_CASES = [
    *_ipc_cases(
        GOOD_COO, pa.table({"coord_0": pa.array([0], pa.int32()), "data": pa.array(["x"])})
    ),
    (
        "coords-out-of-range",
        ipc_stream(
            pa.table(
                {
                    "coord_0": pa.array([99, -1], pa.int64()),
                    "coord_1": pa.array([2**62, 0], pa.int64()),
                    "data": pa.array([1.0, 2.0]),
                }
            )
        ),
    ),
    (
        "nulls-in-coords",
        ipc_stream(
            pa.table(
                {
                    "coord_0": pa.array([None, 1], pa.int64()),
                    "coord_1": pa.array([0, 0], pa.int64()),
                    "data": pa.array([1.0, None]),
                }
            )
        ),
    ),
]


def _fresh(tree: Tree, family: str) -> str:
    """A new table (``ROWS``, one partition) or sparse array (``COO``) of the tree: its path."""
    key = f"{family}-{secrets.token_hex(4)}"
    path = f"{tree.container}/{key}"
    if family == "table":
        assert tree.create(key, "table", {"arrow_schema": schema_text(SCHEMA)}) == 201
        url = f"/table/partition/{path}"
        response = tree.http.post(url, content=ipc_stream(ROWS), headers={"Content-Type": ARROW})
    else:
        assert tree.create(key, "sparse", {"data_type": "<f8", "shape": list(SPARSE_SHAPE)}) == 201
        url = f"/sparse/full/{path}"
        response = tree.http.put(url, content=ipc_stream(COO), headers={"Content-Type": ARROW})
    assert response.status_code < 300, response.text
    return path


def _rows(tree: Tree, path: str) -> dict[str, list[Any]]:
    family = "table" if "/table-" in path else "sparse"
    response = tree.http.get(f"/{family}/full/{path}")
    assert response.status_code == 200, response.text
    rows: dict[str, list[Any]] = pa.ipc.open_stream(response.content).read_all().to_pydict()
    return rows


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize(
    "body",
    [pytest.param(b, id=i) for i, b in TABLE_CASES],
)
def test_a_hostile_partition_body_is_a_declared_4xx_and_changes_nothing(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, body: bytes, method: str
) -> None:
    """(Trailing bytes after a stream's end, or a second stream, may be taken or refused;
    anything taken must read back as the rows sent, and the whole table still reads.)"""
    path = _fresh(tree, "table")
    response = tree.http.request(
        method,
        f"/table/partition/{path}",
        params={"partition": "0"} if method == "PUT" else {},
        content=body,
        headers={"Content-Type": ARROW},
    )
    assert_declared(document, response, method, PARTITION)
    after = _rows(tree, path)
    if response.status_code < 300:
        sent = pa.ipc.open_stream(body).read_all().to_pydict()
        if method == "POST":
            sent = {name: ROWS.column(name).to_pylist() + sent[name] for name in sent}
        assert after == sent, after
        assert tree.http.get(f"/table/full/{path}", params={"format": "parquet"}).status_code == 200
    else:
        assert 400 <= response.status_code < 500
        assert after == ROWS.to_pydict(), after
    assert not unhandled.records, unhandled.records[:5]


@pytest.mark.parametrize(
    "body",
    [pytest.param(b, id=i) for i, b in SPARSE_CASES],
)
def test_a_hostile_sparse_body_is_a_declared_4xx_and_changes_nothing(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, body: bytes
) -> None:
    path = _fresh(tree, "sparse")
    response = tree.http.put(f"/sparse/full/{path}", content=body, headers={"Content-Type": ARROW})
    assert_declared(document, response, "PUT", SPARSE)
    if response.status_code >= 300:
        assert 400 <= response.status_code < 500
    # Taken (trailing bytes after the stream's end) or not: the entries are the same.
    assert _rows(tree, path) == COO.to_pydict()
    dense = tree.http.get(f"/sparse/full/{path}", params={"format": "npy"})
    assert dense.status_code == 200, dense.text
    assert not unhandled.records, unhandled.records[:5]


def test_a_table_with_no_partitions_reads_as_no_rows(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled
) -> None:
    key = f"empty-{secrets.token_hex(4)}"
    assert tree.create(key, "table", {"arrow_schema": schema_text(SCHEMA)}) == 201
    response = tree.http.get(f"/table/full/{tree.container}/{key}")
    assert_declared(document, response, "GET", "table/full/{path}")
    assert response.status_code == 200
    assert pa.ipc.open_stream(response.content).read_all().num_rows == 0
    assert not unhandled.records, unhandled.records[:5]


def test_a_partition_index_past_the_next_is_a_declared_4xx(
    tree: Tree, document: dict[str, Any]
) -> None:
    path = _fresh(tree, "table")
    for partition in ("2", "-1", "9223372036854775808", "1" + "0" * 400, "1.5", "x"):
        for method in ("GET", "PUT"):
            response = tree.http.request(
                method,
                f"/table/partition/{path}",
                params={"partition": partition},
                content=GOOD_ROWS if method == "PUT" else None,
                headers={"Content-Type": ARROW},
            )
            assert_declared(document, response, method, PARTITION)
            assert 400 <= response.status_code < 500, (method, partition, response.text)


# -- lying Content-Length ------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [
        str(512 * 1024 * 1024 + 1),
        str(2**40),
        str(2**63),
        "9" * 30,
        "-1",
        "12, 12",
        "0x10",
    ],
)
@pytest.mark.parametrize(
    ("method", "route"),
    [("PUT", "array/block/{c}/a?block=0,0"), ("POST", "table/partition/{c}/t")],
)
def test_a_huge_or_bogus_content_length_is_refused_before_the_body(
    server: ServerThread, tree: Tree, unhandled: Unhandled, length: str, method: str, route: str
) -> None:
    """Declared, not sent: answered at once (413 or 400) or closed, never read or stored."""
    target = "/api/v1/" + route.replace("{c}", tree.container)
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {tree.token}\r\nContent-Type: {OCTETS}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    answer = exchange(server.server.http_port, head + b"\x00" * 64, deadline=10)
    assert answer.seconds < 5
    if answer.status is not None:
        assert answer.status in (400, 413), (answer.status, answer.body[:200])
    np.testing.assert_array_equal(_stored_values(tree), VALUES)
    assert not unhandled.records, unhandled.records[:5]


# -- structures ------------------------------------------------------------------------------

STRUCTURES: list[Any] = [
    # (id, family, structure; a str is raw JSON text for the structure)
    ("dtype-big-endian", "array", array_structure(data_type=">f8")),
    ("dtype-object", "array", array_structure(data_type="O")),
    ("dtype-object-pipe", "array", array_structure(data_type="|O")),
    ("dtype-void", "array", array_structure(data_type="V8")),
    ("dtype-void-pipe", "array", array_structure(data_type="|V8")),
    ("dtype-U0", "array", array_structure(data_type="<U0")),
    ("dtype-S0", "array", array_structure(data_type="|S0")),
    ("dtype-f16", "array", array_structure(data_type="<f16")),
    ("dtype-i3", "array", array_structure(data_type="<i3")),
    ("dtype-c32", "array", array_structure(data_type="<c32")),
    ("dtype-native", "array", array_structure(data_type="=f8")),
    ("dtype-M8-no-unit", "array", array_structure(data_type="<M8")),
    ("dtype-M8-bad-unit", "array", array_structure(data_type="<M8[xx]")),
    ("dtype-M8-multiple", "array", array_structure(data_type="<M8[25s]")),
    ("dtype-structured", "array", array_structure(data_type="[('a', '<f8')]")),
    ("dtype-empty", "array", array_structure(data_type="")),
    ("dtype-nul", "array", array_structure(data_type="<f8\x00")),
    ("dtype-huge-U", "array", array_structure(data_type="<U99999999999999999999")),
    ("dtype-U-block-too-large", "array", array_structure(data_type="<U2147483647")),
    ("dtype-int", "array", array_structure(data_type=8)),
    ("dtype-python-name", "array", array_structure(data_type="float64")),
    ("shape-nan", "array", '{"data_type":"<f8","shape":[NaN,2],"chunks":[1,1]}'),
    ("shape-infinity", "array", '{"data_type":"<f8","shape":[Infinity],"chunks":[1]}'),
    ("chunks-nan", "array", '{"data_type":"<f8","shape":[2],"chunks":[NaN]}'),
    ("fill-nan", "array", '{"data_type":"<i4","shape":[2],"chunks":[2],"fill_value":NaN}'),
    ("fill-huge", "array", array_structure(data_type="|i1", fill_value=2**70)),
    ("fill-text", "array", array_structure(fill_value="zero")),
    ("fill-object", "array", array_structure(fill_value={"a": 1})),
    ("shape-2-63", "array", array_structure(shape=[2**63, 1], chunks=[1, 1])),
    ("shape-2-63-minus-1", "array", array_structure(shape=[2**63 - 1], chunks=[2**62])),
    ("shape-2-64", "array", array_structure(shape=[2**64], chunks=[2**64])),
    ("shape-huge", "array", '{"data_type":"<f8","shape":[1' + "0" * 400 + '],"chunks":[1]}'),
    ("shape-negative", "array", array_structure(shape=[-1, 5])),
    ("shape-float", "array", array_structure(shape=[2.5, 5])),
    ("shape-bool", "array", array_structure(shape=[True, 5])),
    ("shape-string", "array", array_structure(shape=["6", "5"])),
    ("shape-33-dims", "array", array_structure(shape=[1] * 33, chunks=[1] * 33)),
    ("shape-32-dims", "array", array_structure(shape=[1] * 32, chunks=[1] * 32)),
    ("chunks-zero", "array", array_structure(chunks=[0, 4])),
    ("chunks-mismatch", "array", array_structure(chunks=[4])),
    ("chunks-2-63", "array", array_structure(chunks=[2**63, 4])),
    ("blocks-2-31-plus", "array", array_structure(shape=[2**31 + 1], chunks=[1])),
    ("block-over-256-MiB", "array", array_structure(shape=[2**26], chunks=[2**26])),
    ("zero-length-axis", "array", array_structure(shape=[0, 5], chunks=[1, 4])),
    ("zero-d", "array", array_structure(shape=[], chunks=[])),
    ("dims-wrong-length", "array", array_structure(dims=["x"])),
    ("dims-not-strings", "array", array_structure(dims=[1, None])),
    ("structure-not-object", "array", [1, 2]),
    ("structure-null", "array", None),
    ("table-schema-garbage", "table", {"arrow_schema": "!!!not base64!!!"}),
    (
        "table-schema-not-arrow",
        "table",
        {"arrow_schema": base64.b64encode(b"\xff\xff\xff\xff" + b"\x00" * 32).decode()},
    ),
    ("table-schema-empty", "table", {"arrow_schema": ""}),
    ("table-schema-int", "table", {"arrow_schema": 7}),
    pytest.param(
        "table",
        {"arrow_schema": schema_text(pa.schema([]))},
        id="table-schema-no-fields",
    ),
    (
        "table-schema-duplicate-names",
        "table",
        {"arrow_schema": schema_text(pa.schema([("x", pa.int8()), ("x", pa.int8())]))},
    ),
    (
        "table-nrows-lie",
        "table",
        {"arrow_schema": schema_text(SCHEMA), "npartitions": 5, "nrows": [2**63]},
    ),
    ("sparse-shape-nan", "sparse", '{"data_type":"<f8","shape":[NaN,2]}'),
    ("sparse-shape-2-63", "sparse", {"data_type": "<f8", "shape": [2**63, 2]}),
    ("sparse-shape-33", "sparse", {"data_type": "<f8", "shape": [1] * 33}),
    ("sparse-dtype-object", "sparse", {"data_type": "O", "shape": [2, 2]}),
    ("sparse-dtype-big-endian", "sparse", {"data_type": ">f8", "shape": [2, 2]}),
    ("sparse-layout-csr", "sparse", {"data_type": "<f8", "shape": [2, 2], "layout": "CSR"}),
    ("sparse-nnz-lie", "sparse", {"data_type": "<f8", "shape": [2, 2], "nnz": -5}),
]


@pytest.mark.parametrize(
    ("family", "structure"),
    [c if hasattr(c, "marks") else pytest.param(c[1], c[2], id=c[0]) for c in STRUCTURES],
)
def test_a_hostile_structure_is_refused_or_every_data_route_on_it_is_declared(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, family: str, structure: Any
) -> None:
    key = f"h-{secrets.token_hex(4)}"
    if isinstance(structure, str):
        raw = '{"key":"%s","structure_family":"%s","structure":%s}' % (key, family, structure)  # noqa: UP031
        status = tree.create(key, family, None, raw=raw)
    else:
        status = tree.create(key, family, structure)
    assert status < 500, status
    assert status in (201, 400, 422), status
    if status == 201:
        path = f"{tree.container}/{key}"
        node = tree.http.get(f"/catalog/nodes/{path}").json()
        stored = node["structure"]
        if family == "array":
            assert stored["data_type"][0] in "<|", stored  # normalised little-endian
            block = ",".join(["0"] * len(stored["shape"]))
            requests = [
                ("GET", BLOCK, f"/array/block/{path}", {"block": block}),
                ("GET", FULL, f"/array/full/{path}", {}),
                ("GET", FULL, f"/array/full/{path}", {"format": "npy"}),
                ("GET", FULL, f"/array/full/{path}", {"format": "json"}),
            ]
        elif family == "table":
            requests = [
                ("GET", "table/full/{path}", f"/table/full/{path}", {}),
                ("GET", PARTITION, f"/table/partition/{path}", {"partition": "0"}),
            ]
        else:
            requests = [
                ("GET", SPARSE, f"/sparse/full/{path}", {}),
                ("GET", SPARSE, f"/sparse/full/{path}", {"format": "npy"}),
            ]
        requests.append(("GET", "formats/{path}", f"/formats/{path}", {}))
        for method, template, url, params in requests:
            response = tree.http.request(method, url, params=params)
            # (the content types of exports: test_an_export_answers_a_declared_content_type)
            assert_declared(document, response, method, template, media="format" not in params)
    assert not unhandled.records, unhandled.records[:5]


@pytest.mark.parametrize(
    "fmt", ["nope", "", ".", "text/html", "*/*", "application/x-npy;q=0", "\x00", "x" * 255]
)
def test_an_unknown_format_is_406_or_an_answer(
    tree: Tree, document: dict[str, Any], unhandled: Unhandled, fmt: str
) -> None:
    for template, url in (
        (FULL, f"/array/full/{tree.container}/a"),
        ("table/full/{path}", f"/table/full/{tree.container}/t"),
        (SPARSE, f"/sparse/full/{tree.container}/s"),
    ):
        response = tree.http.get(url, params={"format": fmt})
        assert response.status_code < 500, (url, response.text[:300])
        assert response.status_code in (200, 400, 406, 422), (url, response.status_code)
        if response.status_code >= 400:
            assert_declared(document, response, "GET", template)
    assert not unhandled.records, unhandled.records[:5]


@pytest.mark.parametrize(
    ("family", "fmt"),
    [
        ("array", "npy"),
        ("array", "csv"),
        ("array", "json"),
        ("table", "parquet"),
        ("table", "csv"),
        ("table", "json"),
        ("sparse", "npy"),
    ],
)
def test_an_export_answers_a_declared_content_type(
    tree: Tree, document: dict[str, Any], family: str, fmt: str
) -> None:
    key, template = {"array": ("a", FULL), "table": ("t", "table/full/{path}")}.get(
        family, ("s", SPARSE)
    )
    response = tree.http.get(f"/{family}/full/{tree.container}/{key}", params={"format": fmt})
    assert response.status_code == 200, response.text
    assert_declared(document, response, "GET", template)
