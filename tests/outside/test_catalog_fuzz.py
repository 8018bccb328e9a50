"""The catalog API fuzzed from its published OpenAPI document by schemathesis, as a user who owns
a small seeded tree and as the admin, and its text and JSON inputs by hypothesis with what
schemathesis never sends (lone surrogates, control characters, NUL, numbers beyond 64 bits,
metadata nested thousands deep, filters past every limit).

schemathesis runs as a subprocess, bounded and seeded, over ``^/api/v1/catalog`` only, with
every phase; its path parameters are fixed to real nodes of the seeded tree (a delete and a
move to nodes of their own, so the others keep theirs). No 5xx, every status declared, every
body as declared. Meanwhile the server (in this process) must log no unhandled error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from _structures import structure

from aiosdk.server import ServerThread
from outside._tools import Schemathesis, Unhandled, fresh_name, log_in, new_user, on_any_text

CATALOG_ROUTES = r"^/api/v1/catalog"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
SCHEMATHESIS = Schemathesis(CATALOG_ROUTES, CHECKS, max_examples=3, seed=9)


@dataclass
class Tree:
    """A user's seeded tree: ``{owner}/exp`` (a container with metadata, specs and tags) holding
    an array, a nested container, and two nodes kept for the fuzzer's delete and move; shared
    with ``other`` (so that unsharing finds a share)."""

    owner: str
    token: str
    other: str  # an existing namespace to share with

    @property
    def container(self) -> str:
        return f"{self.owner}/exp"


def seed(server: ServerThread, admin: httpx.Client, prefix: str) -> Tree:
    owner, other = new_user(admin, prefix), new_user(admin, prefix)
    token = log_in(server, owner)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.http_url}/api/v1/catalog/children"
    children = [
        (owner, {"key": "exp", "metadata": {"color": "red", "n": 1}, "specs": ["run"]}),
        (
            f"{owner}/exp",
            {
                "key": "a1",
                "structure_family": "array",
                "structure": structure(),
                "metadata": {"color": "blue", "t": 21.5, "tags": ["x", "y"]},
                "tags": ["raw"],
                "file_type": "zarr",
            },
        ),
        (f"{owner}/exp", {"key": "sub", "metadata": {"deep": {"er": [1, 2]}}}),
        (f"{owner}/exp", {"key": "doomed"}),
        (f"{owner}/exp", {"key": "mover"}),
    ]
    for parent, body in children:
        response = httpx.post(f"{base}/{parent}", json=body, headers=headers, timeout=30)
        assert response.status_code == 201, response.text
    response = httpx.put(
        f"{server.http_url}/api/v1/catalog/shares/{owner}/exp",
        json={"namespace": other, "actions": ["read", "write"]},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return Tree(owner, token, other)


def schemathesis_config(tree: Tree) -> str:
    """Fixed path parameters on real nodes; a delete and a move on nodes of their own."""
    return (
        "[parameters]\n"
        f'path = "{tree.container}"\n'
        f'namespace = "{tree.other}"\n'
        f'parent = "{tree.container}"\n'
        "\n[[operations]]\n"
        'include-name = "DELETE /api/v1/catalog/nodes/{path}"\n'
        f'parameters = {{ path = "{tree.container}/doomed" }}\n'
        "\n[[operations]]\n"
        'include-name = "POST /api/v1/catalog/move/{path}"\n'
        f'parameters = {{ path = "{tree.container}/mover" }}\n'
    )


def test_a_user_owning_a_tree_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, admin: httpx.Client, tmp_path: Path, unhandled: Unhandled
) -> None:
    tree = seed(server, admin, "cfu")
    output = SCHEMATHESIS.run(
        server,
        tmp_path,
        f"--header=Authorization: Bearer {tree.token}",
        config=schemathesis_config(tree),
    )
    assert tree.token not in output  # schemathesis masks it
    assert not unhandled.records, unhandled.records[:5]
    # The tree is still the user's, and still readable.
    response = httpx.get(
        f"{server.http_url}/api/v1/catalog/nodes/{tree.owner}",
        headers={"Authorization": f"Bearer {tree.token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["namespace"] == tree.owner


def test_the_admin_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, admin: httpx.Client, tmp_path: Path, unhandled: Unhandled
) -> None:
    tree = seed(server, admin, "cfa")
    output = SCHEMATHESIS.run(
        server,
        tmp_path,
        f"--header=Authorization: Bearer {server.admin_token}",
        config=schemathesis_config(tree),
    )
    assert server.admin_token not in output
    assert not unhandled.records, unhandled.records[:5]


# -- text and JSON schemathesis cannot send -----------------------------------------------------


def q(text: str) -> str:
    """``text`` percent-encoded as a URL component, a lone surrogate as its (invalid) UTF-8."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def seg(text: str) -> str:
    """``text`` as one catalog path segment in a URL."""
    return q(text)


def filters(*items: dict[str, Any]) -> str:
    return "filters=" + q(json.dumps(list(items)))


@dataclass
class Request:
    method: str
    path: str  # below /api/v1, already encoded, "{c}" for the seeded container
    body: Any = None  # JSON, sent as ASCII (a surrogate goes as its \u escape)


Make = Callable[[str], Request]

# Each: text -> a request that puts the text where schemathesis never would.
FIELDS: dict[str, Make] = {
    "create-key": lambda t: Request("POST", "/catalog/children/{c}", {"key": t}),
    "create-metadata-value": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "metadata": {"v": t}}
    ),
    "create-metadata-key": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "metadata": {t: 1}}
    ),
    "create-nested-metadata-key": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "metadata": {"a": [{t: [t]}]}}
    ),
    "create-specs": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "specs": [t]}
    ),
    "create-tags": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "tags": [t]}
    ),
    "create-file-type": lambda t: Request(
        "POST",
        "/catalog/children/{c}",
        {
            "key": fresh_name(),
            "structure_family": "array",
            "structure": structure(),
            "file_type": t,
        },
    ),
    "create-structure-family": lambda t: Request(
        "POST", "/catalog/children/{c}", {"key": fresh_name(), "structure_family": t}
    ),
    "create-structure": lambda t: Request(
        "POST",
        "/catalog/children/{c}",
        {"key": fresh_name(), "structure_family": "other", "structure": {t: t}},
    ),
    "create-array-dims": lambda t: Request(
        "POST",
        "/catalog/children/{c}",
        {
            "key": fresh_name(),
            "structure_family": "array",
            "structure": {**structure(), "dims": [t, "y"]},
        },
    ),
    "create-array-data-type": lambda t: Request(
        "POST",
        "/catalog/children/{c}",
        {
            "key": fresh_name(),
            "structure_family": "array",
            "structure": {**structure(), "data_type": t},
        },
    ),
    "create-table-schema": lambda t: Request(
        "POST",
        "/catalog/children/{c}",
        {"key": fresh_name(), "structure_family": "table", "structure": {"arrow_schema": t}},
    ),
    "patch-metadata": lambda t: Request("PATCH", "/catalog/nodes/{c}/a1", {"metadata": {t: t}}),
    "patch-merge": lambda t: Request(
        "PATCH", "/catalog/nodes/{c}/a1", {"metadata_merge": {"color": t, t: None}}
    ),
    "patch-json-pointer": lambda t: Request(
        "PATCH",
        "/catalog/nodes/{c}/a1",
        {"metadata_patch": [{"op": "add", "path": "/" + t, "value": t}]},
    ),
    "patch-json-op": lambda t: Request(
        "PATCH", "/catalog/nodes/{c}/a1", {"metadata_patch": [{"op": t, "path": "/color"}]}
    ),
    "patch-json-test": lambda t: Request(
        "PATCH",
        "/catalog/nodes/{c}/a1",
        {"metadata_patch": [{"op": "test", "path": "/color", "value": t}]},
    ),
    "patch-json-from": lambda t: Request(
        "PATCH",
        "/catalog/nodes/{c}/a1",
        {"metadata_patch": [{"op": "copy", "from": t, "path": "/copied"}]},
    ),
    "patch-specs-patch": lambda t: Request(
        "PATCH",
        "/catalog/nodes/{c}/a1",
        {"specs_patch": [{"op": "add", "path": "/-", "value": t}]},
    ),
    "patch-tags": lambda t: Request("PATCH", "/catalog/nodes/{c}/a1", {"tags": [t]}),
    "patch-file-type": lambda t: Request("PATCH", "/catalog/nodes/{c}/a1", {"file_type": t}),
    "get-path": lambda t: Request("GET", "/catalog/nodes/{c}/" + seg(t)),
    "get-path-raw": lambda t: Request("GET", "/catalog/nodes/" + seg(t)),
    "children-path": lambda t: Request("GET", "/catalog/children/{c}/" + seg(t)),
    "delete-path": lambda t: Request("DELETE", "/catalog/nodes/{c}/" + seg(t)),
    "move-to": lambda t: Request("POST", "/catalog/move/{c}/sub", {"to": "{c}/" + t}),
    "move-to-raw": lambda t: Request("POST", "/catalog/move/{c}/sub", {"to": t}),
    "filter-eq-key": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "eq", "key": t, "value": 1})
    ),
    "filter-eq-value": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "eq", "key": "color", "value": t})
    ),
    "filter-lt-value": lambda t: Request(
        "GET", "/catalog/count/{c}?" + filters({"op": "lt", "key": "t", "value": t})
    ),
    "filter-in-values": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "notin", "key": "color", "values": [t]})
    ),
    "filter-contains": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "contains", "key": "tags", "value": t})
    ),
    "filter-fulltext": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "fulltext", "text": t})
    ),
    "filter-regex": lambda t: Request(
        "GET",
        "/catalog/children/{c}?"
        + filters({"op": "regex", "key": "color", "pattern": t, "case_sensitive": False}),
    ),
    "filter-like": lambda t: Request(
        "GET", "/catalog/distinct/{c}?" + filters({"op": "like", "key": "color", "pattern": t})
    ),
    "filter-keypresent": lambda t: Request(
        "GET", "/catalog/count/{c}?" + filters({"op": "keypresent", "key": t, "exists": True})
    ),
    "filter-specs": lambda t: Request(
        "GET",
        "/catalog/children/{c}?" + filters({"op": "specs", "include": [t], "exclude": [t]}),
    ),
    "filter-structure-family": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": "structure_family", "value": t})
    ),
    "filter-op": lambda t: Request(
        "GET", "/catalog/children/{c}?" + filters({"op": t, "key": "color", "value": 1})
    ),
    "filters-raw": lambda t: Request("GET", "/catalog/children/{c}?filters=" + q(t)),
    "root-filters": lambda t: Request(
        "GET", "/catalog/children?" + filters({"op": "eq", "key": "color", "value": t})
    ),
    "sort": lambda t: Request("GET", "/catalog/children/{c}?sort=" + q(t)),
    "sort-descending": lambda t: Request("GET", "/catalog/children/{c}?sort=-" + q(t)),
    "page-token": lambda t: Request("GET", "/catalog/children/{c}?page_token=" + q(t)),
    "distinct-key": lambda t: Request(
        "GET", "/catalog/distinct/{c}?counts=true&metadata_keys=" + q(t)
    ),
    "listing-search": lambda t: Request("GET", "/catalog/listings/arrays?search=" + q(t)),
    "listing-tag": lambda t: Request(
        "GET", f"/catalog/listings/arrays?tag={q(t)}&exclude_tag={q(t)}"
    ),
    "listing-file-type": lambda t: Request(
        "GET", f"/catalog/listings/arrays?file_type={q(t)}&exclude_file_type={q(t)}"
    ),
    "listing-namespace": lambda t: Request("GET", "/catalog/listings/groups?namespace=" + q(t)),
    "listing-parent": lambda t: Request("GET", "/catalog/listings/groups?parent=" + q(t)),
    "listing-group-type": lambda t: Request(
        "GET", "/catalog/listings/groups?flat=true&group_type=" + q(t)
    ),
    "listing-structure-family": lambda t: Request(
        "GET", "/catalog/listings/arrays?structure_family=" + q(t)
    ),
    "listing-page-token": lambda t: Request("GET", "/catalog/listings/arrays?page_token=" + q(t)),
    "share-namespace": lambda t: Request("PUT", "/catalog/shares/{c}", {"namespace": t}),
    "unshare-namespace": lambda t: Request("DELETE", "/catalog/shares/{c}?namespace=" + q(t)),
}


@dataclass
class Sender:
    http: httpx.Client
    container: str

    def send(self, request: Request) -> httpx.Response:
        container = "/".join(seg(k) for k in self.container.split("/"))
        path = request.path.replace("{c}", container)
        content = None
        headers = {}
        if request.body is not None:
            body = json.loads(json.dumps(request.body).replace("{c}", self.container))
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return self.http.request(request.method, path, content=content, headers=headers)


def assert_declared_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"type", "message", "request_id"}, error


@pytest.fixture(scope="module")
def sender(server: ServerThread, admin: httpx.Client) -> Iterator[Sender]:
    tree = seed(server, admin, "cfh")
    headers = {"Authorization": f"Bearer {tree.token}"}
    with httpx.Client(base_url=f"{server.http_url}/api/v1", headers=headers, timeout=30) as http:
        yield Sender(http, tree.container)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_any_text_in_any_catalog_input_is_never_a_5xx(
    sender: Sender, unhandled: Unhandled, field: str
) -> None:
    @on_any_text(3, "a\x00b", "..", "\u202e\ufeff")
    def check(text: str) -> None:
        assert_declared_answer(sender.send(FIELDS[field](text)))

    check()
    assert not unhandled.records, unhandled.records[:5]


def _nested(depth: int, leaf: Any = 1, *, arrays: bool = False) -> str:
    """JSON text of ``leaf`` nested ``depth`` deep (built as text: json.dumps would recurse)."""
    if arrays:
        return "[" * depth + json.dumps(leaf) + "]" * depth
    return '{"a":' * depth + json.dumps(leaf) + "}" * depth


HUGE = "1" + "0" * 400  # an integer far past 64 bits (JSON has no limit)
MANY_FILTERS = json.dumps([{"op": "eq", "key": "color", "value": "red"}] * 33)
IN_1001 = json.dumps([{"op": "in", "key": "color", "values": list(range(1001))}])


STRUCTURED: list[tuple[str, str, str, str | None]] = [
    # (id, method, path below /api/v1 with {c}, raw JSON body or None)
    ("metadata-33-deep", "POST", "/catalog/children/{c}", '{"key":"@","metadata":%s}'),
    ("metadata-1000-deep", "POST", "/catalog/children/{c}", '{"key":"@","metadata":%s}'),
    ("metadata-100000-deep", "POST", "/catalog/children/{c}", '{"key":"@","metadata":%s}'),
    (
        "metadata-arrays-100000-deep",
        "POST",
        "/catalog/children/{c}",
        '{"key":"@","metadata":{"a":%s}}',
    ),
    ("structure-5000-deep", "POST", "/catalog/children/{c}", '{"key":"@","structure":%s}'),
    ("merge-5000-deep", "PATCH", "/catalog/nodes/{c}/a1", '{"metadata_merge":%s}'),
    ("json-patch-value-5000-deep", "PATCH", "/catalog/nodes/{c}/a1", None),
    ("metadata-huge-int", "POST", "/catalog/children/{c}", '{"key":"@","metadata":{"n":%s}}'),
    ("metadata-huge-negative", "POST", "/catalog/children/{c}", '{"key":"@","metadata":{"n":-%s}}'),
    ("metadata-1e400", "POST", "/catalog/children/{c}", '{"key":"@","metadata":{"n":1e400}}'),
    ("metadata-nan", "POST", "/catalog/children/{c}", '{"key":"@","metadata":{"n":NaN}}'),
    ("metadata-infinity", "PATCH", "/catalog/nodes/{c}/a1", '{"metadata":{"n":-Infinity}}'),
    (
        "metadata-2e63",
        "POST",
        "/catalog/children/{c}",
        '{"key":"@","metadata":{"n":9223372036854775808}}',
    ),
    ("merge-huge-int", "PATCH", "/catalog/nodes/{c}/a1", '{"metadata_merge":{"t":%s}}'),
    ("revision-huge", "PATCH", "/catalog/nodes/{c}/a1", '{"revision":%s,"tags":["x"]}'),
    ("revision-2e63", "PATCH", "/catalog/nodes/{c}/a1", '{"revision":9223372036854775808}'),
    ("revision-float", "PATCH", "/catalog/nodes/{c}/a1", '{"revision":1.5}'),
    ("move-revision-huge", "POST", "/catalog/move/{c}/sub", '{"to":"{c}/sub","revision":%s}'),
    ("delete-revision-huge", "DELETE", "/catalog/nodes/{c}/doomed?revision=" + HUGE, None),
    ("offset-huge", "GET", "/catalog/children/{c}?offset=" + HUGE, None),
    ("offset-negative", "GET", "/catalog/children/{c}?offset=-1", None),
    ("page-size-huge", "GET", "/catalog/children/{c}?page_size=" + HUGE, None),
    ("listing-page-huge", "GET", "/catalog/listings/arrays?page=" + HUGE, None),
    ("listing-per-page-zero", "GET", "/catalog/listings/groups?per_page=0", None),
    ("offset-and-token", "GET", "/catalog/children/{c}?offset=1&page_token=abc", None),
    (
        "filter-huge-int",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "ge", "key": "n", "value": 0}]).replace("0}", HUGE + "}"),
    ),
    ("filter-1e400", "GET", "/catalog/count/{c}?", 'F:[{"op":"lt","key":"t","value":1e400}]'),
    ("filter-nan", "GET", "/catalog/count/{c}?", 'F:[{"op":"eq","key":"t","value":NaN}]'),
    (
        "filter-2e63-eq",
        "GET",
        "/catalog/children/{c}?",
        'F:[{"op":"eq","key":"n","value":9223372036854775808}]',
    ),
    ("filter-huge-in", "GET", "/catalog/count/{c}?", 'F:[{"op":"in","key":"n","values":[%s]}]'),
    (
        "filter-value-object",
        "GET",
        "/catalog/children/{c}?",
        'F:[{"op":"eq","key":"n","value":{"a":1}}]',
    ),
    (
        "filter-value-list",
        "GET",
        "/catalog/children/{c}?",
        'F:[{"op":"contains","key":"tags","value":[1]}]',
    ),
    ("filter-nested-300", "GET", "/catalog/children/{c}?", "F:NESTED300"),
    ("filter-nested-1000", "GET", "/catalog/children/{c}?", "F:NESTED1000"),
    ("filter-value-nested-300", "GET", "/catalog/children/{c}?", "F:VALUE300"),
    ("filter-not-array", "GET", "/catalog/children/{c}?", 'F:{"op":"eq"}'),
    ("filter-not-json", "GET", "/catalog/children/{c}?", "F:[{"),
    ("filter-33", "GET", "/catalog/children/{c}?", "F:" + MANY_FILTERS),
    ("filter-in-1001", "GET", "/catalog/children/{c}?", "F:" + IN_1001),
    (
        "filter-value-1001",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "eq", "key": "color", "value": "r" * 1001}]),
    ),
    (
        "filter-key-17-segments",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "eq", "key": ".".join("a" * 17), "value": 1}]),
    ),
    (
        "filter-key-empty-segment",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "eq", "key": "a..b", "value": 1}]),
    ),
    (
        "filter-regex-catastrophic",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "regex", "key": "color", "pattern": "(a+)+$"}]),
    ),
    (
        "filter-regex-invalid",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "regex", "key": "color", "pattern": "(["}]),
    ),
    (
        "filters-4097",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "fulltext", "text": "x" * 4060}]),
    ),
    (
        "filters-giant",
        "GET",
        "/catalog/children/{c}?",
        "F:" + json.dumps([{"op": "fulltext", "text": "x" * 30_000}]),
    ),
    ("sort-17", "GET", "/catalog/children/{c}?" + "&".join(["sort=color"] * 17), None),
    ("sort-dash-only", "GET", "/catalog/children/{c}?sort=-", None),
    ("sort-deep-key", "GET", "/catalog/children/{c}?sort=" + ".".join(["a"] * 40), None),
    ("sort-empty", "GET", "/catalog/children/{c}?sort=", None),
    (
        "distinct-33-keys",
        "GET",
        "/catalog/distinct/{c}?" + "&".join(["metadata_keys=color"] * 33),
        None,
    ),
    ("distinct-huge-key", "GET", "/catalog/distinct/{c}?metadata_keys=" + "a" * 5000, None),
    ("patch-1001-ops", "PATCH", "/catalog/nodes/{c}/a1", "OPS"),
    ("patch-two-forms", "PATCH", "/catalog/nodes/{c}/a1", '{"metadata":{},"metadata_merge":{}}'),
    ("patch-ops-not-objects", "PATCH", "/catalog/nodes/{c}/a1", '{"metadata_patch":[1,"x",null]}'),
    (
        "patch-pointer-index-huge",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"metadata_patch":[{"op":"add","path":"/tags/%s","value":1}]}',
    ),
    (
        "patch-pointer-tilde",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"metadata_patch":[{"op":"remove","path":"/~2"}]}',
    ),
    (
        "patch-replace-root",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"metadata_patch":[{"op":"replace","path":"","value":[1]}]}',
    ),
    (
        "patch-specs-to-object",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"specs_patch":[{"op":"replace","path":"","value":{"a":1}}]}',
    ),
    (
        "patch-specs-to-int",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"specs_patch":[{"op":"add","path":"/-","value":1}]}',
    ),
    (
        "patch-metadata-nul-via-op",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"metadata_patch":[{"op":"add","path":"/z","value":"\\u0000"}]}',
    ),
    (
        "patch-metadata-surrogate-via-op",
        "PATCH",
        "/catalog/nodes/{c}/a1",
        '{"metadata_patch":[{"op":"add","path":"/\\ud800","value":"\\udfff"}]}',
    ),
    ("patch-merge-deep-via-op", "PATCH", "/catalog/nodes/{c}/a1", None),
    ("body-array", "POST", "/catalog/children/{c}", "[1,2]"),
    ("body-null", "PATCH", "/catalog/nodes/{c}/a1", "null"),
    ("metadata-not-object", "POST", "/catalog/children/{c}", '{"key":"@","metadata":[1]}'),
    ("create-under-array", "POST", "/catalog/children/{c}/a1", '{"key":"@"}'),
    ("move-into-itself", "POST", "/catalog/move/{c}", '{"to":"{c}/sub/inside"}'),
    ("move-onto-root", "POST", "/catalog/move/{c}/sub", '{"to":"someone-else"}'),
    ("public-not-bool", "PUT", "/catalog/public/{c}", '{"public":"yes"}'),
    (
        "share-1000-actions",
        "PUT",
        "/catalog/shares/{c}",
        '{"namespace":"x","actions":' + json.dumps(["read"] * 1000) + "}",
    ),
]


def _structured_body(case: str, raw: str | None) -> tuple[str | None, str | None]:
    """(query to append, raw JSON body) for a STRUCTURED case."""
    if raw is None:
        if case == "json-patch-value-5000-deep":
            op = '{"op":"add","path":"/deep","value":%s}' % _nested(5000)  # noqa: UP031
            return None, '{"metadata_patch":[%s]}' % op  # noqa: UP031
        if case == "patch-merge-deep-via-op":
            op = '{"op":"add","path":"/deep","value":%s}' % _nested(40)  # noqa: UP031
            return None, '{"metadata_patch":[%s]}' % op  # noqa: UP031
        return None, None
    if raw.startswith("F:"):
        text = raw[2:]
        if text.startswith("NESTED"):
            text = "[" + _nested(int(text[6:])) + "]"
        elif text.startswith("VALUE"):
            text = '[{"op":"eq","key":"n","value":%s}]' % _nested(int(text[5:]))  # noqa: UP031
        if "%s" in text:
            text = text % HUGE
        return "filters=" + q(text), None
    if raw == "OPS":
        ops = [{"op": "test", "path": "/color", "value": "blue"}] * 1001
        return None, json.dumps({"metadata_patch": ops})
    depth = {
        "metadata-33-deep": 33,
        "metadata-1000-deep": 1000,
        "metadata-100000-deep": 100_000,
        "metadata-arrays-100000-deep": 100_000,
        "structure-5000-deep": 5000,
        "merge-5000-deep": 5000,
    }.get(case)
    if depth is not None:
        raw = raw % _nested(depth, arrays=case == "metadata-arrays-100000-deep")
    elif "%s" in raw:
        raw = raw % HUGE
    return None, raw.replace("@", fresh_name())


@pytest.mark.parametrize(
    ("case", "method", "path", "raw"),
    [pytest.param(*c, id=c[0]) for c in STRUCTURED],
)
def test_huge_deep_and_giant_inputs_are_a_declared_4xx_or_a_success(
    sender: Sender, unhandled: Unhandled, case: str, method: str, path: str, raw: str | None
) -> None:
    query, body = _structured_body(case, raw)
    container = "/".join(seg(k) for k in sender.container.split("/"))
    url = path.replace("{c}", container) + (query or "")
    headers = {}
    content = None
    if body is not None:
        content = body.replace("{c}", sender.container).encode()
        headers["Content-Type"] = "application/json"
    response = sender.http.request(method, url, content=content, headers=headers)
    assert_declared_answer(response)
    assert not unhandled.records, unhandled.records[:5]
