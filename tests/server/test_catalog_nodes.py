"""``/api/v1/catalog``: nodes one at a time (create, read, change, move, delete), over loopback
against the real server, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from _structures import stored, structure

from aiosdk.server import Server, ServerConfig

from .conftest import (
    Users,
    all_keys,
    assert_error,
    children,
    create,
    get,
    make_client,
    new_org,
    url,
)

pytestmark = pytest.mark.anyio


# --- tests -----------------------------------------------------------------------------------


async def test_a_new_user_has_a_namespace_root(users: Users) -> None:
    name, http = await users.new()
    root = await get(http, name)
    assert root["key"] == root["path"] == root["namespace"] == name
    assert root["parent"] is None
    assert root["structure_family"] == "container"
    assert root["metadata"] == {}
    assert root["revision"] == 1
    assert root["allowed_actions"] == ["read", "write", "admin"]
    listed = await children(http, "")
    assert [item["path"] for item in listed["items"]] == [name]  # only what it may read


async def test_create_get_list_patch_delete(users: Users) -> None:
    name, http = await users.new()
    group = await create(http, name, "experiments", metadata={"pi": name}, specs=["run"])
    assert group["path"] == f"{name}/experiments"
    assert group["parent"] == name
    assert group["specs"] == ["run"]
    assert group["revision"] == 1
    run = await create(http, group["path"], "run42", metadata={"color": "red", "temperature": 21.5})
    asset = await create(
        http,
        group["path"],
        "image",
        structure_family="array",
        file_type="zarr",
        tags=["raw"],
        structure=structure("array"),
    )
    assert asset["structure"] == stored("array")
    assert await get(http, run["path"]) == run

    page = await children(http, group["path"], include_count="true")
    assert [item["key"] for item in page["items"]] == ["image", "run42"]
    assert page["count"] == 2
    assert page["next_page_token"] is None
    keys_only = await children(http, group["path"], fields="keys")
    assert set(keys_only["items"][0]) == {"id", "key", "path", "structure_family"}
    no_meta = await children(http, group["path"], fields="no_metadata")
    assert "metadata" not in no_meta["items"][0]
    assert "revision" in no_meta["items"][0]
    count = await http.get(f"/catalog/count/{url(group['path'])}")
    assert count.json() == {"count": 2}

    patched = await http.patch(
        f"/catalog/nodes/{url(run['path'])}",
        json={"revision": 1, "metadata_merge": {"color": "blue", "temperature": None}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"color": "blue"}
    assert patched.json()["revision"] == 2
    ops = [
        {"op": "add", "path": "/size", "value": 3},
        {"op": "test", "path": "/color", "value": "blue"},
    ]
    patched = await http.patch(
        f"/catalog/nodes/{url(run['path'])}", json={"revision": 2, "metadata_patch": ops}
    )
    assert patched.json()["metadata"] == {"color": "blue", "size": 3}
    replaced = await http.patch(
        f"/catalog/nodes/{url(run['path'])}",
        json={"metadata": {"x": [1]}, "tags": ["b", "a"], "specs": ["s"], "file_type": "hdf5"},
    )
    assert replaced.json()["metadata"] == {"x": [1]}
    assert replaced.json()["tags"] == ["a", "b"]
    assert replaced.json()["revision"] == 4

    response = await http.delete(f"/catalog/nodes/{url(run['path'])}")
    assert response.status_code == 204
    assert_error(await http.get(f"/catalog/nodes/{url(run['path'])}"), 404, "node_not_found")
    assert_error(await http.delete(f"/catalog/nodes/{url(group['path'])}"), 409, "not_empty")
    response = await http.delete(
        f"/catalog/nodes/{url(group['path'])}", params={"recursive": "true"}
    )
    assert response.status_code == 204
    assert_error(await http.get(f"/catalog/nodes/{url(asset['path'])}"), 404, "node_not_found")
    assert (await children(http, name))["items"] == []


async def test_conflicts_and_refusals(users: Users) -> None:
    name, http = await users.new()
    await create(http, name, "a")
    asset = await create(http, name, "leaf", structure_family="array", structure=structure("array"))
    assert_error(await http.post(f"/catalog/children/{name}", json={"key": "a"}), 409, "conflict")
    assert_error(
        await http.post(f"/catalog/children/{url(asset['path'])}", json={"key": "x"}),
        409,
        "conflict",
    )
    assert_error(await http.post("/catalog/children/", json={"key": "x"}), 403, "permission_denied")
    assert_error(await http.delete(f"/catalog/nodes/{name}"), 403, "permission_denied")
    assert_error(
        await http.post(f"/catalog/move/{name}", json={"to": f"{name}/b/c"}),
        403,
        "permission_denied",
    )
    assert_error(
        await http.post(f"/catalog/children/{name}/missing", json={"key": "x"}),
        404,
        "node_not_found",
    )
    stale = await http.patch(f"/catalog/nodes/{name}/a", json={"revision": 7, "metadata": {}})
    error = assert_error(stale, 409, "stale_revision")
    assert "current revision is 1" in error["message"]
    bad_patch = await http.patch(
        f"/catalog/nodes/{name}/a",
        json={"metadata_patch": [{"op": "remove", "path": "/missing"}]},
    )
    assert_error(bad_patch, 422, "invalid_request")
    failing_test = await http.patch(
        f"/catalog/nodes/{name}/a",
        json={"metadata_patch": [{"op": "test", "path": "/x", "value": 1}]},
    )
    assert_error(failing_test, 422, "invalid_request")
    two_forms = await http.patch(
        f"/catalog/nodes/{name}/a", json={"metadata": {}, "metadata_merge": {}}
    )
    assert two_forms.status_code in (400, 422)


@pytest.mark.parametrize(
    "key",
    [".", "..", " lead", "trail ", "a\x00b", "tab\there", "x" * 256, "", "bell\x07"],
)
async def test_invalid_keys_are_refused(users: Users, key: str) -> None:
    name, http = await users.new()
    response = await http.post(f"/catalog/children/{name}", json={"key": key})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize(
    "path",
    ["a//b", "a/./b", "a/../b", "/".join(["k"] * 40), "a/" + "x" * 1100, "a/%20b", "a/%00"],
)
async def test_invalid_paths_are_4xx(users: Users, path: str) -> None:
    name, http = await users.new()
    response = await http.get(f"/catalog/nodes/{name}/{path}")
    assert 400 <= response.status_code < 500, response.text
    response = await http.get(f"/catalog/children/{name}/{path}")
    assert 400 <= response.status_code < 500, response.text


async def test_keys_with_odd_characters_round_trip(users: Users) -> None:
    name, http = await users.new()
    for key in ["with space", "ünïcødé", "50%_off", "a?b#c", "日本", "a.b", "x+y"]:
        made = await create(http, name, key)
        assert made["key"] == key
        assert (await get(http, f"{name}/{key}"))["key"] == key
    assert sorted(await all_keys(http, name)) == sorted(
        ["with space", "ünïcødé", "50%_off", "a?b#c", "日本", "a.b", "x+y"]
    )


async def test_move_and_rename_carry_the_subtree_and_its_shares(
    users: Users, client: httpx.AsyncClient
) -> None:
    name, http = await users.new()
    other, other_http = await users.new()
    await create(http, name, "src")
    await create(http, f"{name}/src", "inner", metadata={"n": 1})
    await create(http, f"{name}/src/inner", "deep")
    await create(http, name, "dst")
    shared = await http.put(
        f"/catalog/shares/{name}/src/inner", json={"namespace": other, "actions": ["read"]}
    )
    assert shared.status_code == 200, shared.text
    assert shared.json()["shares"] == [{"namespace": other, "actions": ["read"]}]

    moved = await http.post(f"/catalog/move/{name}/src", json={"to": f"{name}/dst/renamed"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == f"{name}/dst/renamed"
    assert moved.json()["key"] == "renamed"
    assert moved.json()["parent"] == f"{name}/dst"
    deep = await get(http, f"{name}/dst/renamed/inner/deep")
    assert deep["parent"] == f"{name}/dst/renamed/inner"
    assert_error(await http.get(f"/catalog/nodes/{name}/src"), 404, "node_not_found")
    # The share moved with its node: the other user still reads it, at its new path.
    assert (await get(other_http, f"{name}/dst/renamed/inner/deep"))["key"] == "deep"
    assert_error(await other_http.get(f"/catalog/nodes/{name}/dst"), 404, "node_not_found")

    into_itself = await http.post(f"/catalog/move/{name}/dst", json={"to": f"{name}/dst/renamed/x"})
    assert into_itself.status_code == 400
    exists = await http.post(f"/catalog/move/{name}/dst/renamed", json={"to": f"{name}/dst"})
    assert_error(exists, 409, "conflict")
    stale = await http.post(
        f"/catalog/move/{name}/dst/renamed", json={"to": f"{name}/again", "revision": 1}
    )
    assert_error(stale, 409, "stale_revision")
    # Across namespaces: needs write on both; the subtree's namespace changes.
    denied = await http.post(f"/catalog/move/{name}/dst", json={"to": f"{other}/dst"})
    assert_error(denied, 404, "node_not_found")
    org = await new_org(client, name)
    await create(http, org, "landing")
    across = await http.post(f"/catalog/move/{name}/dst", json={"to": f"{org}/landing/dst"})
    assert across.status_code == 200, across.text
    assert across.json()["namespace"] == org
    assert (await get(http, f"{org}/landing/dst/renamed/inner/deep"))["namespace"] == org


async def test_concurrent_patches_with_one_revision_one_wins(users: Users) -> None:
    name, http = await users.new()
    made = await create(http, name, "contested", metadata={"v": 0})
    statuses: list[int] = []

    async def write(value: int) -> None:
        response = await http.patch(
            f"/catalog/nodes/{url(made['path'])}",
            json={"revision": made["revision"], "metadata": {"v": value}},
        )
        statuses.append(response.status_code)
        if response.status_code == 409:
            assert response.json()["error"]["type"] == "stale_revision"

    async with anyio.create_task_group() as group:
        for value in range(1, 9):
            group.start_soon(write, value)
    assert sorted(statuses) == [200] + [409] * 7
    assert (await get(http, made["path"]))["revision"] == 2


async def test_concurrent_merges_without_revision_lose_nothing(users: Users) -> None:
    name, http = await users.new()
    made = await create(http, name, "counter")

    async def write(index: int) -> None:
        response = await http.patch(
            f"/catalog/nodes/{url(made['path'])}", json={"metadata_merge": {f"k{index}": index}}
        )
        assert response.status_code == 200, response.text

    async with anyio.create_task_group() as group:
        for index in range(6):
            group.start_soon(write, index)
    final = await get(http, made["path"])
    assert final["metadata"] == {f"k{i}": i for i in range(6)}
    assert final["revision"] == 7


def needs_sample(metadata: dict[str, object], family: str, specs: list[str]) -> None:
    if "sample" not in metadata:
        raise ValueError("a 'sample' is required")


async def test_spec_validators_run_on_create_and_update(
    tmp_path: Path, database_url: str | None, server: Server
) -> None:
    """The validators of ``ServerConfig.spec_validators`` (``aiosdk serve --spec-validator``)."""
    config = ServerConfig(
        data_dir=tmp_path,
        database_url=database_url,
        admin_token=server.admin_token,
        spec_validators={"xrd": needs_sample},
    )
    async with Server(config) as own, make_client(own, own.admin_token) as admin:
        made = Users(own, admin)
        try:
            name, http = await made.new()
            refused = await http.post(
                f"/catalog/children/{name}", json={"key": "scan", "specs": ["xrd"]}
            )
            error = assert_error(refused, 422, "invalid_request")
            assert "sample" in error["message"]
            scan = await create(http, name, "scan", specs=["xrd"], metadata={"sample": "Si"})
            update = await http.patch(
                f"/catalog/nodes/{url(scan['path'])}", json={"metadata": {"other": 1}}
            )
            assert_error(update, 422, "invalid_request")
            ok = await http.patch(
                f"/catalog/nodes/{url(scan['path'])}", json={"metadata_merge": {"other": 1}}
            )
            assert ok.status_code == 200, ok.text
        finally:
            await made.aclose()


async def test_metadata_and_structure_are_at_most_256_kib(users: Users) -> None:
    """A node's metadata (and structure) is at most 256 KiB as JSON, on creation and after any
    change (patches included): 413, and the node stays as it was."""
    name, http = await users.new()
    limit = 256 * 1024
    # {"s":"..."} is 8 characters more than the string.
    fits = {"s": "x" * (limit - 8)}
    node = await create(http, name, "fits", metadata=fits, structure={"s": "y" * (limit - 8)})
    assert node["metadata"] == fits
    too_large = {"s": "x" * (limit - 7)}
    for body in (
        {"key": "big", "metadata": too_large},
        {"key": "big", "structure_family": "array", "structure": too_large},
        {"key": "big", "metadata": {"s": "é" * (limit // 2)}},  # bytes, not characters
    ):
        refused = await http.post(f"/catalog/children/{name}", json=body)
        assert "256 KiB" in assert_error(refused, 413, "invalid_request")["message"]
    assert (await http.get(f"/catalog/nodes/{name}/big")).status_code == 404

    small = await create(http, name, "small", metadata={"a": "x" * (limit // 2)})
    target = f"/catalog/nodes/{name}/small"
    for body in (
        {"metadata": too_large},
        {"metadata_merge": {"b": "x" * (limit // 2)}},
        {"metadata_patch": [{"op": "add", "path": "/b", "value": "x" * (limit // 2)}]},
        {"metadata_patch": [{"op": "copy", "from": "/a", "path": "/b"}]},  # grows only after
    ):
        assert_error(await http.patch(target, json=body), 413, "invalid_request")
    after = await get(http, f"{name}/small")
    assert after["metadata"] == small["metadata"]
    assert after["revision"] == small["revision"]
    grown = await http.patch(target, json={"metadata_merge": {"b": "x" * 1000}})
    assert grown.status_code == 200, grown.text
