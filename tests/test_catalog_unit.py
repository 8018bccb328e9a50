"""The catalog client's pure logic, without a server: query encoding, sort pairs, the views'
index arithmetic, read-only metadata and its patches, key and path checks."""

from __future__ import annotations

import copy
import itertools
import json
import pickle
from typing import Any

import pytest

import aiosdk
from aiosdk import (
    ASCENDING,
    DESCENDING,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    Key,
    KeyPresent,
    Like,
    NotEq,
    NotIn,
    Regex,
    Specs,
    StructureFamily,
    build_metadata_patches,
)
from aiosdk.catalog.metadata import freeze, thaw
from aiosdk.catalog.nodes import check_key, join_path, route, split_path
from aiosdk.catalog.queries import check_sorting, encode_filters, encode_sort
from aiosdk.catalog.views import Plan, plan_counted, plan_index, plan_slice

# -- queries -----------------------------------------------------------------------------------


def wire(*queries: aiosdk.Query) -> list[dict[str, object]]:
    encoded = encode_filters(queries)
    assert encoded is not None
    return json.loads(encoded)  # type: ignore[no-any-return]


def test_key_operators_build_each_query() -> None:
    k = Key("sample.temperature")
    assert (k == 21.5) == Eq("sample.temperature", 21.5)
    assert (k != "x") == NotEq("sample.temperature", "x")
    assert (k < 3) == Comparison("lt", "sample.temperature", 3)
    assert (k <= 3) == Comparison("le", "sample.temperature", 3)
    assert (k > "a") == Comparison("gt", "sample.temperature", "a")
    assert (k >= 3.5) == Comparison("ge", "sample.temperature", 3.5)
    assert k.in_([1, "a", None]) == In("sample.temperature", [1, "a", None])
    assert k.not_in((True,)) == NotIn("sample.temperature", [True])
    assert k.contains("raw") == Contains("sample.temperature", "raw")
    assert k.like("ru%") == Like("sample.temperature", "ru%")
    assert k.regex("^r", case_sensitive=False) == Regex("sample.temperature", "^r", False)
    assert k.exists() == KeyPresent("sample.temperature", True)
    assert k.exists(False) == KeyPresent("sample.temperature", False)
    assert hash(Key("a")) == hash(Key("a"))  # usable in sets despite == building queries


def test_every_query_has_its_wire_form() -> None:
    assert wire(
        Eq("a", 1),
        NotEq("a", None),
        Comparison("ge", "b.c", 2.5),
        Contains("tags", "raw"),
        In("k", ["x", 2]),
        NotIn("k", []),
        FullText("red run"),
        Regex("name", "^r.n$"),
        KeyPresent("note", exists=False),
        Like("name", "r_n%"),
        Specs(include=["run"], exclude=["old"]),
        StructureFamily("array"),
    ) == [
        {"op": "eq", "key": "a", "value": 1},
        {"op": "noteq", "key": "a", "value": None},
        {"op": "ge", "key": "b.c", "value": 2.5},
        {"op": "contains", "key": "tags", "value": "raw"},
        {"op": "in", "key": "k", "values": ["x", 2]},
        {"op": "notin", "key": "k", "values": []},
        {"op": "fulltext", "text": "red run"},
        {"op": "regex", "key": "name", "pattern": "^r.n$", "case_sensitive": True},
        {"op": "keypresent", "key": "note", "exists": False},
        {"op": "like", "key": "name", "pattern": "r_n%"},
        {"op": "specs", "include": ["run"], "exclude": ["old"]},
        {"op": "structure_family", "value": "array"},
    ]
    assert encode_filters([]) is None


def test_types_survive_the_wire() -> None:
    # Type-aware equality needs the JSON types intact: 1, 1.0, "1" and true all differ.
    assert [q["value"] for q in wire(Eq("x", 1), Eq("x", 1.0), Eq("x", "1"), Eq("x", True))] == [
        1,
        1.0,
        "1",
        True,
    ]
    encoded = encode_filters([Eq("x", True), Eq("x", 1.0)])
    assert encoded is not None
    assert "true" in encoded
    assert "1.0" in encoded
    assert "ü" in (encode_filters([Eq("x", "grün")]) or "")  # sent as UTF-8, not escaped


@pytest.mark.parametrize(
    "build",
    [
        lambda: Key(""),
        lambda: Key("a..b"),
        lambda: Key(".".join("k" * 17)),
        lambda: Key("x" * 256),
        lambda: Key(3),  # type: ignore[arg-type]
        lambda: Eq("a", [1]),  # type: ignore[arg-type]
        lambda: Eq("a", {"b": 1}),  # type: ignore[arg-type]
        lambda: Eq("a", float("nan")),
        lambda: Eq("a", "x" * 1001),
        lambda: Comparison("lt", "a", True),
        lambda: Comparison("lt", "a", None),  # type: ignore[arg-type]
        lambda: Comparison("eq", "a", 1),  # type: ignore[arg-type]
        lambda: In("a", range(1001)),
        lambda: In("a", "abc"),
        lambda: NotIn("a", [object()]),  # type: ignore[list-item]
        lambda: FullText(3),  # type: ignore[arg-type]
        lambda: Regex("a", "x" * 1001),
        lambda: Specs(include="run"),
        lambda: encode_filters([Eq("a", 1)] * 33),
        lambda: encode_filters(["color == red"]),  # type: ignore[list-item]
    ],
)
def test_malformed_queries_fail_before_sending(build: object) -> None:
    with pytest.raises(aiosdk.ConfigurationError) as caught:
        build()  # type: ignore[operator]
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)


def test_sort_pairs() -> None:
    pairs = check_sorting([("temperature", DESCENDING), ("_key", ASCENDING), ("color", 1)])
    assert pairs == (("temperature", -1), ("_key", 1), ("color", 1))
    assert encode_sort(pairs) == ["-temperature", "_key", "color"]
    for bad in [("a", 0), ("a", True), ("a",), ("", 1), ("-a", 1), ("a", "desc"), "a"]:
        with pytest.raises(aiosdk.ConfigurationError):
            check_sorting([bad])  # type: ignore[list-item]


# -- views' index arithmetic -------------------------------------------------------------------


def run(plan: Plan, data: list[int]) -> list[int]:
    """What the server would answer for ``plan``, then what the view makes of it."""
    ordered = data[::-1] if plan.reverse else data
    end = None if plan.limit is None else plan.offset + plan.limit
    return plan.take(ordered[plan.offset : end])


BOUNDS = [None, 0, 1, 2, 3, 5, 9, 10, 11, 25, -1, -2, -3, -5, -9, -10, -11, -25]
STEPS = [None, 1, 2, 3, 7, -1, -2, -3, -7]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 12])
def test_every_slice_matches_python(n: int) -> None:
    data = list(range(n))
    counted = 0
    for start, stop, step in itertools.product(BOUNDS, BOUNDS, STEPS):
        s = slice(start, stop, step)
        plan = plan_slice(s)
        if plan is None:
            counted += 1
            plan = plan_counted(s, n)
        assert run(plan, data) == data[s], s
        assert plan.offset >= 0, s
        assert plan.limit is None or plan.limit >= 0, s
    assert counted  # mixed signs need one count


def test_which_slices_need_a_count() -> None:
    # Non-negative bounds read forward; negative ones the reversed order; only mixed ones count.
    for s in [slice(3), slice(2, 10), slice(5, None), slice(None, None, 2), slice(8, 2, -1)]:
        plan = plan_slice(s)
        assert plan is not None, s
        assert not plan.reverse, s
    for s in [slice(-3, None), slice(-5, -1), slice(None, -1), slice(None, None, -1)]:
        plan = plan_slice(s)
        assert plan is not None, s
        assert plan.reverse, s
    for s in [slice(2, -1), slice(-5, 8), slice(3, -8, -1), slice(-2, 1, -1)]:
        assert plan_slice(s) is None, s
    assert plan_slice(slice(-10, None)) == Plan(True, 0, 10, flip=True)  # tail(10): one request
    assert plan_slice(slice(None, 10)) == Plan(False, 0, 10)  # head(10)
    with pytest.raises(ValueError, match="zero"):
        plan_slice(slice(None, None, 0))
    with pytest.raises(TypeError):
        plan_slice(slice("a", None))


def test_an_index_is_one_entry_of_one_order() -> None:
    data = list(range(7))
    for i in range(-7, 7):
        reverse, offset = plan_index(i)
        assert (data[::-1] if reverse else data)[offset] == data[i]
    assert plan_index(-1) == (True, 0)
    assert plan_index(3) == (False, 3)


# -- metadata ----------------------------------------------------------------------------------


def test_frozen_metadata_reads_like_json_and_refuses_changes() -> None:
    source: Any = {"a": {"b": [1, {"c": 2}]}, "n": None}
    frozen = freeze(source)
    assert frozen == source
    assert isinstance(frozen, dict)
    assert frozen["a"]["b"] == [1, {"c": 2}]
    assert json.loads(json.dumps(frozen)) == source
    for change in [
        lambda: frozen.__setitem__("x", 1),
        lambda: frozen.update(x=1),
        lambda: frozen.pop("a"),
        lambda: frozen.setdefault("x", 1),
        lambda: frozen["a"].clear(),
        lambda: frozen["a"]["b"].append(3),
        lambda: frozen["a"]["b"].__setitem__(0, 3),
        lambda: frozen["a"]["b"][1].__delitem__("c"),
    ]:
        with pytest.raises(TypeError, match="read-only"):
            change()  # type: ignore[no-untyped-call]
    source["a"]["b"].append(99)  # the frozen copy is a copy
    assert frozen["a"]["b"] == [1, {"c": 2}]
    mutable = copy.deepcopy(frozen)
    mutable["a"]["b"].append(3)
    assert type(mutable) is dict
    assert type(mutable["a"]["b"]) is list
    assert thaw(frozen) == {"a": {"b": [1, {"c": 2}]}, "n": None}
    assert type(pickle.loads(pickle.dumps(frozen))) is dict


def test_build_metadata_patches_diffs_with_jsonpatch() -> None:
    metadata_patch, specs_patch = build_metadata_patches(
        freeze({"color": "red", "t": 1, "nested": {"a": 1}}),
        ("run",),
        {"color": "blue", "nested": {"a": 1, "b": 2}},
        ["run", "calibrated"],
    )
    import jsonpatch

    apply = jsonpatch.apply_patch
    expected = {"color": "blue", "nested": {"a": 1, "b": 2}}
    assert apply({"color": "red", "t": 1, "nested": {"a": 1}}, metadata_patch) == expected
    assert apply(["run"], specs_patch) == ["run", "calibrated"]
    assert build_metadata_patches({"a": 1}, ["s"]) == ([], [])  # None: unchanged


# -- keys and paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", ".", "..", "a/b", " a", "a ", "a\tb", "a\x00", "a\x7f", "x" * 256, "\ud800"]
)
def test_bad_keys_are_refused_with_a_clear_message(key: str) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="invalid key"):
        check_key(key)


def test_paths_join_and_encode_each_key() -> None:
    assert check_key("100% sure? #1 ünïcode") == "100% sure? #1 ünïcode"
    assert join_path("", "alice/x") == "alice/x"
    assert join_path("alice", "x y/z") == "alice/x y/z"
    assert split_path("a/b") == ["a", "b"]
    for bad in ["", "/a", "a/", "a//b", "a/./b"]:
        with pytest.raises(aiosdk.ConfigurationError):
            join_path("alice", bad)
    with pytest.raises(aiosdk.ConfigurationError, match="deeper"):
        join_path("", "/".join(["k"] * 33))
    with pytest.raises(aiosdk.ConfigurationError, match="1024"):
        join_path("", "/".join(["k" * 200] * 6))
    assert route("/catalog/nodes", "alice/100% sure?/a#b") == (
        "/catalog/nodes/alice/100%25%20sure%3F/a%23b"
    )
    assert route("/catalog/children", "") == "/catalog/children"


def test_node_not_found_is_a_key_error() -> None:
    error = aiosdk.NodeNotFoundError("no node at 'a/b'", status_code=404)
    assert isinstance(error, aiosdk.NotFoundError)
    assert isinstance(error, KeyError)
    assert str(error) == "no node at 'a/b' (HTTP 404)"
    assert issubclass(aiosdk.WatchGapError, aiosdk.StatusError)
