"""Listing children (filters, sort, reverse, offset, keyset pages that stay stable while the
container changes), count, distinct, the listings of assets and groups, and ETag/304."""

from __future__ import annotations

import json
import random
from typing import Any

import anyio
import httpx
import pytest
from _structures import structure

from aiosdk.server.catalog.listings import MAX_OFFSET

from .conftest import Users, all_keys, assert_error, children, create, url

pytestmark = pytest.mark.anyio


async def seeded(users: Users, n: int = 30) -> tuple[str, httpx.AsyncClient, str]:
    name, http = await users.new()
    group = (await create(http, name, "g"))["path"]
    colors = ["red", "green", "blue"]

    async def one(i: int) -> None:
        metadata: dict[str, Any] = {"i": i, "color": colors[i % 3], "nested": {"x": i % 5}}
        if i % 4 == 0:
            metadata.pop("color")
        await create(
            http,
            group,
            f"k{i:03d}",
            metadata=metadata,
            **({"structure_family": "array", "structure": structure("array")} if i % 2 else {}),
        )

    async with anyio.create_task_group() as tasks:
        for i in range(n):
            tasks.start_soon(one, i)
    return name, http, group


def f(*filters: dict[str, Any]) -> str:
    return json.dumps(list(filters))


async def test_filters_sort_reverse_offset(users: Users) -> None:
    _name, http, group = await seeded(users)
    reds = await children(
        http, group, filters=f({"op": "eq", "key": "color", "value": "red"}), include_count="1"
    )
    expected = [f"k{i:03d}" for i in range(30) if i % 3 == 0 and i % 4]
    assert [item["key"] for item in reds["items"]] == expected
    assert reds["count"] == len(expected)
    by_i = await children(http, group, sort="-i", page_size=5)
    assert [item["key"] for item in by_i["items"]] == [f"k{i:03d}" for i in range(29, 24, -1)]
    last = await children(http, group, sort="i", reverse="true", page_size=1)
    assert last["items"][0]["key"] == "k029"
    offset = await children(http, group, sort="i", offset=10, page_size=3)
    assert [item["key"] for item in offset["items"]] == ["k010", "k011", "k012"]
    # Missing values last ascending; ties by key.
    by_color = await all_keys(http, group, sort="color")
    missing = [f"k{i:03d}" for i in range(0, 30, 4)]
    assert by_color[-len(missing) :] == missing
    nested = await all_keys(
        http, group, filters=f({"op": "ge", "key": "nested.x", "value": 4}), sort="_key"
    )
    assert nested == [f"k{i:03d}" for i in range(30) if i % 5 == 4]
    family = await http.get(
        f"/catalog/count/{url(group)}",
        params={"filters": f({"op": "structure_family", "value": "array"})},
    )
    assert family.json() == {"count": 15}


async def test_offset_and_page_token_together_are_refused(users: Users) -> None:
    _name, http, group = await seeded(users, 3)
    page = await children(http, group, page_size=1)
    response = await http.get(
        f"/catalog/children/{url(group)}",
        params={"offset": 1, "page_token": page["next_page_token"]},
    )
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "params",
    [
        {"filters": "not json"},
        {"filters": json.dumps([{"op": "nope", "key": "a"}])},
        {"filters": json.dumps({"op": "eq"})},
        {"sort": "a..b"},
        {"page_token": "garbage"},
        {"page_size": 0},
        {"page_size": 1001},
        {"offset": -1},
        {"fields": "some"},
    ],
)
async def test_bad_queries_are_4xx(users: Users, params: dict[str, Any]) -> None:
    name, http = await users.new()
    response = await http.get(f"/catalog/children/{name}", params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["type"] == "invalid_request"


async def test_a_page_token_is_for_its_own_query(users: Users) -> None:
    _name, http, group = await seeded(users, 5)
    page = await children(http, group, page_size=2, sort="i")
    other = await http.get(
        f"/catalog/children/{url(group)}",
        params={"page_size": 2, "sort": "-i", "page_token": page["next_page_token"]},
    )
    assert_error(other, 400, "invalid_request")


async def test_keyset_pages_stay_stable_while_the_container_changes(users: Users) -> None:
    name, http = await users.new()
    group = (await create(http, name, "live"))["path"]
    for i in range(0, 60, 2):
        await create(http, group, f"e{i:03d}")
    rng = random.Random(9)
    seen: list[str] = []
    deleted: set[str] = set()
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 7, "fields": "keys"}
        if token:
            params["page_token"] = token
        page = await children(http, group, **params)
        seen += [item["key"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
        # Between pages: new entries before and after the position, and deletions.
        await create(http, group, f"e{rng.randrange(0, 60):03d}-new{len(seen)}")
        victims = [k for k in seen[-7:] if k not in deleted] + ["e058"]
        victim = rng.choice(victims)
        if victim not in deleted:
            response = await http.delete(f"/catalog/nodes/{url(group)}/{url(victim)}")
            if response.status_code == 204:
                deleted.add(victim)
    assert len(seen) == len(set(seen))  # nothing twice
    originals = {f"e{i:03d}" for i in range(0, 60, 2)}
    assert originals - deleted <= set(seen)  # every survivor once
    assert seen == sorted(seen)


async def test_distinct_with_counts(users: Users) -> None:
    _name, http, group = await seeded(users)
    response = await http.get(
        f"/catalog/distinct/{url(group)}",
        params={
            "metadata_keys": ["color", "nested.x"],
            "structure_families": "true",
            "specs": "true",
            "counts": "true",
        },
    )
    assert response.status_code == 200, response.text
    found = response.json()
    colors = {entry["value"]: entry["count"] for entry in found["metadata"]["color"]}
    assert sum(colors.values()) == 30 - 8
    assert found["metadata"]["color"][0]["count"] >= found["metadata"]["color"][-1]["count"]
    assert sorted(e["value"] for e in found["metadata"]["nested.x"]) == [0, 1, 2, 3, 4]
    assert {e["value"]: e["count"] for e in found["structure_families"]} == {
        "array": 15,
        "container": 15,
    }
    assert found["specs"] == [{"value": [], "count": 30}]
    without = await http.get(f"/catalog/distinct/{url(group)}", params={"metadata_keys": "color"})
    assert all(entry["count"] is None for entry in without.json()["metadata"]["color"])


async def test_etag_and_304(users: Users) -> None:
    name, http = await users.new()
    made = await create(http, name, "cached", metadata={"a": 1})
    target = f"/catalog/nodes/{url(made['path'])}"
    first = await http.get(target)
    etag = first.headers["etag"]
    again = await http.get(target, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert (await http.get(target, headers={"If-None-Match": '"other"'})).status_code == 200
    listing = await http.get(f"/catalog/children/{name}")
    listed_again = await http.get(
        f"/catalog/children/{name}", headers={"If-None-Match": listing.headers["etag"]}
    )
    assert listed_again.status_code == 304
    await http.patch(target, json={"metadata": {"a": 2}})
    changed = await http.get(target, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    # Another caller sees another answer (its allowed actions): another ETag.
    _bob, b = await users.new()
    await http.put(f"/catalog/public/{url(made['path'])}", json={"public": True})
    mine = await http.get(target)
    theirs = await b.get(target)
    assert mine.headers["etag"] != theirs.headers["etag"]
    assert (await http.head(target)).headers["etag"] == mine.headers["etag"]


async def test_listings_filters_and_pages(users: Users) -> None:
    name, http = await users.new()
    await create(http, name, "proj", specs=["project"], tags=["keep"])
    await create(http, f"{name}/proj", "sub", specs=["run"])
    await create(http, name, "plain")
    for i in range(12):
        await create(
            http,
            f"{name}/proj",
            f"run{i:02d}" if i % 2 else f"scan{i:02d}",
            structure_family="array" if i % 3 else "table",
            structure=structure("array" if i % 3 else "table"),
            tags=["raw"] + (["old"] if i % 4 == 0 else []),
            file_type="zarr" if i % 2 else "csv",
            metadata={"i": i},
        )

    async def paths(kind: str, **params: Any) -> list[str]:
        response = await http.get(f"/catalog/listings/{kind}", params=params)
        assert response.status_code == 200, response.text
        return [item["path"].removeprefix(name + "/") for item in response.json()["items"]]

    assert len(await paths("arrays", namespace=name)) == 12
    assert await paths("arrays", namespace=name, search="RUN", exclude_tag="old") == [
        f"proj/run{i:02d}" for i in range(1, 12, 2)
    ]
    assert await paths("arrays", tag=["raw", "old"]) == [f"proj/scan{i:02d}" for i in (0, 4, 8)]
    assert await paths("arrays", file_type="csv", exclude_file_type="zarr") == [
        f"proj/scan{i:02d}" for i in range(0, 12, 2)
    ]
    assert await paths("arrays", structure_family="table") == sorted(
        "proj/" + (f"run{i:02d}" if i % 2 else f"scan{i:02d}") for i in (0, 3, 6, 9)
    )
    assert await paths("groups") == ["plain", "proj"]
    assert await paths("groups", flat="true") == ["plain", "proj", "proj/sub"]
    assert await paths("groups", group_type="run", flat="true") == ["proj/sub"]
    assert await paths("groups", parent=f"{name}/proj") == ["proj/sub"]
    assert await paths("groups", tag="keep") == ["proj"]

    first = await http.get(
        "/catalog/listings/arrays", params={"per_page": 5, "with_metadata": "true"}
    )
    body = first.json()
    assert body["pagination"] == {"page": 1, "per_page": 5, "total_items": 12, "total_pages": 3}
    assert body["items"][0]["metadata"] == {"i": 1}  # proj/run01, the first by path
    without = await http.get("/catalog/listings/arrays", params={"per_page": 5})
    assert "metadata" not in without.json()["items"][0]
    page2 = await http.get("/catalog/listings/arrays", params={"per_page": 5, "page": 2})
    by_token = await http.get(
        "/catalog/listings/arrays",
        params={"per_page": 5, "page_token": body["next_page_token"]},
    )
    assert [i["path"] for i in page2.json()["items"]] == [
        i["path"] for i in by_token.json()["items"]
    ]
    everything: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"per_page": 5}
        if token:
            params["page_token"] = token
        page = (await http.get("/catalog/listings/arrays", params=params)).json()
        everything += [item["path"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert everything == sorted(everything)
    assert len(everything) == 12
    bad = await http.get(
        "/catalog/listings/arrays", params={"page": 2, "page_token": body["next_page_token"]}
    )
    assert_error(bad, 400, "invalid_request")


@pytest.mark.parametrize("kind", ["arrays", "groups"])
async def test_a_listing_page_starts_at_most_a_million_items_in(users: Users, kind: str) -> None:
    """``page`` counts from the start like ``offset`` does: skipping rows costs reading them,
    so beyond :data:`MAX_OFFSET` items a listing wants its page tokens (400 says so)."""
    _name, http = await users.new()
    farthest = await http.get(
        f"/catalog/listings/{kind}", params={"page": MAX_OFFSET // 1000 + 1, "per_page": 1000}
    )
    assert farthest.status_code == 200, farthest.text
    assert farthest.json()["items"] == []
    for page, per_page in [(MAX_OFFSET // 1000 + 2, 1000), (1_000_000, 1000), (1_000_000, 2)]:
        beyond = await http.get(
            f"/catalog/listings/{kind}", params={"page": page, "per_page": per_page}
        )
        assert "page_token" in assert_error(beyond, 400, "invalid_request")["message"]
