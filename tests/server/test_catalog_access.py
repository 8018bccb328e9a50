"""Who sees what in the catalog: private nodes stay invisible to others (by path, in children,
counts, distinct and listings), shares (with users and organizations) and public nodes open
them, read-only tokens only read."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _structures import structure

from .conftest import Users, add_member, assert_error, children, create, get, new_org, url

pytestmark = pytest.mark.anyio


async def seen_everywhere(http: httpx.AsyncClient, owner: str) -> dict[str, Any]:
    """What ``http`` learns about ``owner``'s namespace from every read."""
    roots = await children(http, "")
    listings = {}
    for kind in ("arrays", "groups"):
        for scope in ("owned", "public", "shared"):
            response = await http.get(
                f"/catalog/listings/{kind}", params={"scope": scope, "flat": "true"}
            )
            assert response.status_code == 200, response.text
            listings[kind, scope] = [
                item["path"]
                for item in response.json()["items"]
                if item["path"].split("/")[0] == owner
            ]
    count = await http.get("/catalog/count")
    distinct = await http.get(
        "/catalog/distinct", params={"metadata_keys": "color", "counts": "true"}
    )
    return {
        "roots": [item["path"] for item in roots["items"] if item["path"] == owner],
        "listings": listings,
        "count": count.json()["count"],
        "distinct": distinct.json(),
    }


async def test_others_never_see_private_nodes(users: Users) -> None:
    alice, a = await users.new()
    _bob, b = await users.new()
    await create(a, alice, "private", metadata={"color": "red"})
    await create(
        a,
        f"{alice}/private",
        "secret",
        structure_family="array",
        structure=structure("array"),
        tags=["raw"],
    )
    await create(a, alice, "colors", metadata={"color": "red"})

    for path in (alice, f"{alice}/private", f"{alice}/private/secret", f"{alice}/nope"):
        assert_error(await b.get(f"/catalog/nodes/{url(path)}"), 404, "node_not_found")
        assert_error(await b.get(f"/catalog/children/{url(path)}"), 404, "node_not_found")
        assert_error(await b.get(f"/catalog/count/{url(path)}"), 404, "node_not_found")
        assert_error(await b.get(f"/catalog/distinct/{url(path)}"), 404, "node_not_found")
    # The same message for a private node and a missing one.
    private = (await b.get(f"/catalog/nodes/{alice}/private")).json()["error"]["message"]
    missing = (await b.get(f"/catalog/nodes/{alice}/nothing")).json()["error"]["message"]
    assert private.replace("private", "X") == missing.replace("nothing", "X")
    filters = json.dumps([{"op": "eq", "key": "color", "value": "red"}])
    assert (await b.get("/catalog/count", params={"filters": filters})).json()["count"] == 0

    seen = await seen_everywhere(b, alice)
    assert seen["roots"] == []
    assert all(paths == [] for paths in seen["listings"].values()), seen
    assert seen["distinct"]["metadata"]["color"] == []
    # Writes: the same 404, before any other check.
    assert_error(
        await b.post(f"/catalog/children/{alice}", json={"key": "x"}), 404, "node_not_found"
    )
    assert_error(
        await b.patch(f"/catalog/nodes/{alice}/private", json={"metadata": {}}),
        404,
        "node_not_found",
    )
    assert_error(await b.delete(f"/catalog/nodes/{alice}/private"), 404, "node_not_found")
    assert_error(
        await b.put(f"/catalog/public/{alice}/private", json={"public": True}),
        404,
        "node_not_found",
    )


async def test_a_share_opens_a_subtree_for_its_actions(users: Users) -> None:
    alice, a = await users.new()
    bob, b = await users.new()
    await create(a, alice, "lab", metadata={"color": "blue"})
    await create(
        a,
        f"{alice}/lab",
        "scan",
        structure_family="array",
        structure=structure("array"),
        metadata={"color": "red"},
    )
    await create(a, alice, "other")

    shared = await a.put(
        f"/catalog/shares/{alice}/lab", json={"namespace": bob, "actions": ["read"]}
    )
    assert shared.status_code == 200, shared.text
    assert shared.json()["revision"] == 2
    lab = await get(b, f"{alice}/lab")
    assert lab["allowed_actions"] == ["read"]
    assert lab["shares"] == []  # only an admin of the node sees who it is shared with
    assert (await get(b, f"{alice}/lab/scan"))["allowed_actions"] == ["read"]
    assert_error(await b.get(f"/catalog/nodes/{alice}/other"), 404, "node_not_found")
    assert_error(await b.get(f"/catalog/nodes/{alice}"), 404, "node_not_found")
    assert_error(
        await b.patch(f"/catalog/nodes/{alice}/lab", json={"metadata": {}}),
        403,
        "permission_denied",
    )
    arrays = await b.get("/catalog/listings/arrays", params={"scope": "shared"})
    assert [item["path"] for item in arrays.json()["items"]] == [f"{alice}/lab/scan"]
    groups = await b.get("/catalog/listings/groups", params={"scope": "shared"})
    assert [item["path"] for item in groups.json()["items"]] == [f"{alice}/lab"]
    writable = await b.get(
        "/catalog/listings/arrays", params={"scope": "shared", "permissions": "write"}
    )
    assert writable.json()["items"] == []
    distinct = await b.get(
        f"/catalog/distinct/{alice}/lab", params={"metadata_keys": "color", "counts": "true"}
    )
    assert distinct.json()["metadata"]["color"] == [{"value": "red", "count": 1}]

    # Write too: now bob may change it, and sees it among the writable.
    await a.put(f"/catalog/shares/{alice}/lab", json={"namespace": bob, "actions": ["write"]})
    assert (await get(b, f"{alice}/lab/scan"))["allowed_actions"] == ["read", "write"]
    ok = await b.patch(f"/catalog/nodes/{alice}/lab/scan", json={"metadata_merge": {"by": bob}})
    assert ok.status_code == 200, ok.text
    writable = await b.get(
        "/catalog/listings/arrays", params={"scope": "shared", "permissions": "write"}
    )
    assert [item["path"] for item in writable.json()["items"]] == [f"{alice}/lab/scan"]
    # Only an admin may share further.
    assert_error(
        await b.put(f"/catalog/shares/{alice}/lab", json={"namespace": bob, "actions": ["admin"]}),
        403,
        "permission_denied",
    )
    owner_view = await get(a, f"{alice}/lab")
    assert owner_view["shares"] == [{"namespace": bob, "actions": ["read", "write"]}]

    unshared = await a.delete(f"/catalog/shares/{alice}/lab", params={"namespace": bob})
    assert unshared.status_code == 200, unshared.text
    assert unshared.json()["shares"] == []
    assert_error(await b.get(f"/catalog/nodes/{alice}/lab/scan"), 404, "node_not_found")
    assert_error(
        await a.delete(f"/catalog/shares/{alice}/lab", params={"namespace": bob}),
        404,
        "not_found",
    )
    assert_error(
        await a.put(f"/catalog/shares/{alice}/lab", json={"namespace": "no-such-namespace"}),
        404,
        "not_found",
    )


async def test_public_nodes_are_read_by_everyone(users: Users) -> None:
    alice, a = await users.new()
    _bob, b = await users.new()
    await create(a, alice, "open")
    await create(
        a,
        f"{alice}/open",
        "data",
        structure_family="table",
        structure=structure("table"),
        file_type="csv",
    )
    made = await a.put(f"/catalog/public/{alice}/open", json={"public": True})
    assert made.status_code == 200, made.text
    assert made.json()["public"] is True
    assert (await get(b, f"{alice}/open/data"))["allowed_actions"] == ["read"]
    listed = await b.get("/catalog/listings/arrays", params={"scope": "public"})
    assert f"{alice}/open/data" in [item["path"] for item in listed.json()["items"]]
    assert_error(
        await b.post(f"/catalog/children/{alice}/open", json={"key": "x"}),
        403,
        "permission_denied",
    )
    await a.put(f"/catalog/public/{alice}/open", json={"public": False})
    assert_error(await b.get(f"/catalog/nodes/{alice}/open/data"), 404, "node_not_found")


async def test_organization_roles_and_shares(users: Users, client: httpx.AsyncClient) -> None:
    owner, o = await users.new()
    member = await users.admin.post("/admin/users", json={"username": owner + "-m"})
    assert member.status_code == 201
    reader_name = owner + "-r"
    assert (
        await users.admin.post("/admin/users", json={"username": reader_name})
    ).status_code == 201
    org = await new_org(client, owner)
    await add_member(client, org, owner + "-m", "member")
    await add_member(client, org, reader_name, "read_only")
    m = await users.client(owner + "-m")
    r = await users.client(reader_name)
    await create(o, org, "shared-space")
    made = await create(m, org, "by-member")
    assert made["allowed_actions"] == ["read", "write"]
    assert (await get(r, f"{org}/by-member"))["allowed_actions"] == ["read"]
    assert_error(
        await r.post(f"/catalog/children/{org}", json={"key": "x"}), 403, "permission_denied"
    )
    # A share with the organization reaches its members, as far as their roles allow.
    alice, a = await users.new()
    await create(a, alice, "for-org")
    await a.put(
        f"/catalog/shares/{alice}/for-org", json={"namespace": org, "actions": ["read", "write"]}
    )
    assert (await get(m, f"{alice}/for-org"))["allowed_actions"] == ["read", "write"]
    assert (await get(r, f"{alice}/for-org"))["allowed_actions"] == ["read"]
    shared = await r.get("/catalog/listings/groups", params={"scope": "shared"})
    assert [item["path"] for item in shared.json()["items"]] == [f"{alice}/for-org"]
    roots = await children(r, "")
    assert [item["path"] for item in roots["items"]] == sorted([org, reader_name])


async def test_a_read_only_token_only_reads(users: Users) -> None:
    alice, a = await users.new()
    await create(a, alice, "x")
    reader = await users.client(alice, scope="read")
    node = await get(reader, f"{alice}/x")
    assert node["allowed_actions"] == ["read"]
    for response in [
        await reader.post(f"/catalog/children/{alice}", json={"key": "y"}),
        await reader.patch(f"/catalog/nodes/{alice}/x", json={"metadata": {}}),
        await reader.delete(f"/catalog/nodes/{alice}/x"),
        await reader.put(f"/catalog/public/{alice}/x", json={"public": True}),
    ]:
        assert_error(response, 403, "permission_denied")
    writable = await reader.get("/catalog/listings/groups", params={"permissions": "write"})
    assert writable.json()["items"] == []


async def test_the_admin_token_sees_everything(users: Users, client: httpx.AsyncClient) -> None:
    alice, a = await users.new()
    await create(a, alice, "x")
    assert (await get(client, f"{alice}/x"))["allowed_actions"] == ["read", "write", "admin"]
    roots = await children(client, "", page_size=1000)
    assert alice in [item["path"] for item in roots["items"]]


async def test_a_move_gives_the_mover_nothing_it_did_not_have(
    users: Users, client: httpx.AsyncClient
) -> None:
    """Moving a node to another namespace needs admin on it (with write only, its owners would
    lose it to the mover); within a namespace, a move may not gain the mover an action either
    (from the shares above the new place). A move that changes neither is write's."""
    owner, o = await users.new()
    member, m = await users.new()
    org = await new_org(client, owner)
    await add_member(client, org, member, "member")
    await create(o, org, "secret", metadata={"x": 1})
    assert (await get(m, f"{org}/secret"))["allowed_actions"] == ["read", "write"]
    refused = await m.post(f"/catalog/move/{org}/secret", json={"to": f"{member}/secret"})
    message = assert_error(refused, 403, "permission_denied")["message"]
    assert "admin" in message
    assert "namespace" in message
    assert (await get(o, f"{org}/secret"))["metadata"] == {"x": 1}  # nothing moved
    assert (await m.get(f"/catalog/nodes/{member}/secret")).status_code == 404

    # A read+write share is no more than write.
    alice, a = await users.new()
    bob, b = await users.new()
    await create(a, alice, "proj")
    await create(a, f"{alice}/proj", "data", metadata={"k": "v"})
    await create(a, alice, "dst")
    shared = await a.put(
        f"/catalog/shares/{alice}/proj", json={"namespace": bob, "actions": ["read", "write"]}
    )
    assert shared.status_code == 200, shared.text
    assert_error(
        await b.post(f"/catalog/move/{alice}/proj/data", json={"to": f"{bob}/data"}),
        403,
        "permission_denied",
    )
    # Within alice's namespace, under a node shared with bob for admin: bob would gain admin.
    admin_share = await a.put(
        f"/catalog/shares/{alice}/dst",
        json={"namespace": bob, "actions": ["read", "write", "admin"]},
    )
    assert admin_share.status_code == 200, admin_share.text
    refused = await b.post(f"/catalog/move/{alice}/proj/data", json={"to": f"{alice}/dst/data"})
    assert "admin" in assert_error(refused, 403, "permission_denied")["message"]
    assert (await get(a, f"{alice}/proj/data"))["metadata"] == {"k": "v"}
    # Renaming within the share changes nothing of anyone's: write is enough.
    renamed = await b.post(f"/catalog/move/{alice}/proj/data", json={"to": f"{alice}/proj/d2"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["allowed_actions"] == ["read", "write"]
    # Whoever has admin on a node may take it elsewhere.
    moved = await o.post(f"/catalog/move/{org}/secret", json={"to": f"{owner}/secret"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["namespace"] == owner
    assert (await m.get(f"/catalog/nodes/{owner}/secret")).status_code == 404
