"""``/api/v1/organizations``: listing, reading, and managing members, over loopback against the
real server. (Who may do what is the permission matrix's subject: test_permission_matrix.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from aiosdk.server import Server

from .conftest import (
    add_member,
    assert_error,
    create_token,
    make_client,
    new_org,
    new_user,
    unique,
)

pytestmark = pytest.mark.anyio


async def members(admin: httpx.AsyncClient, org: str) -> list[dict[str, str]]:
    response = await admin.get(f"/organizations/{org}")
    assert response.status_code == 200, response.text
    found: list[dict[str, str]] = response.json()["members"]
    return found


@pytest.fixture
async def as_user(server: Server, client: httpx.AsyncClient) -> AsyncIterator[UserClients]:
    clients = UserClients(server, client)
    try:
        yield clients
    finally:
        await clients.aclose()


class UserClients:
    """HTTP clients authenticated as users (an API token each, minted by the admin)."""

    def __init__(self, server: Server, admin: httpx.AsyncClient) -> None:
        self.server = server
        self.admin = admin
        self.opened: list[httpx.AsyncClient] = []

    async def __call__(self, username: str, **token_fields: object) -> httpx.AsyncClient:
        token = (await create_token(self.admin, owner=username, **token_fields))["token"]
        http = make_client(self.server, token)
        self.opened.append(http)
        return http

    async def aclose(self) -> None:
        for http in self.opened:
            await http.aclose()


async def test_a_member_sees_its_organization(
    client: httpx.AsyncClient, as_user: UserClients
) -> None:
    alice, bob, zed = await new_user(client), await new_user(client), await new_user(client)
    org = await new_org(client, alice, display_name="Lab")
    await add_member(client, org, zed, "read_only")
    await add_member(client, org, bob, "member")

    http = await as_user(bob)
    response = await http.get(f"/organizations/{org}")
    assert response.status_code == 200
    seen = response.json()
    assert seen["name"] == org
    assert seen["display_name"] == "Lab"
    assert seen["role"] == "member"
    assert seen["allowed_actions"] == ["read", "write"]
    assert seen["members"] == sorted(
        [
            {"username": alice, "role": "owner"},
            {"username": bob, "role": "member"},
            {"username": zed, "role": "read_only"},
        ],
        key=lambda member: member["username"],
    )
    listed = (await http.get("/organizations")).json()
    assert listed == {"items": [seen], "next_page_token": None}


async def test_the_profile_lists_every_organization_by_name(
    client: httpx.AsyncClient, as_user: UserClients
) -> None:
    user = await new_user(client)
    owners = [await new_user(client) for _ in range(3)]
    names = [await new_org(client, owner) for owner in owners]
    for org, role in zip(names, ["admin", "member", "read_only"], strict=True):
        await add_member(client, org, user, role)
    actions = {
        "admin": ["read", "write", "admin"],
        "member": ["read", "write"],
        "read_only": ["read"],
    }
    expected = sorted(
        (
            {"name": org, "display_name": None, "role": role, "allowed_actions": actions[role]}
            for org, role in zip(names, ["admin", "member", "read_only"], strict=True)
        ),
        key=lambda entry: str(entry["name"]),
    )
    http = await as_user(user)
    assert (await http.get("/user")).json()["organizations"] == expected
    # A read-only token of the same user may only read, whatever the role.
    reader = await as_user(user, scope="read")
    profile = (await reader.get("/user")).json()
    assert [entry["allowed_actions"] for entry in profile["organizations"]] == [["read"]] * 3


async def test_organizations_are_listed_page_by_page(
    client: httpx.AsyncClient, as_user: UserClients
) -> None:
    user = await new_user(client)
    created = [await new_org(client, user) for _ in range(5)]
    await new_org(client, await new_user(client))  # not the user's

    async def every_page(http: httpx.AsyncClient) -> list[str]:
        seen: list[str] = []
        page_token: str | None = None
        while True:
            params: dict[str, str | int] = {"page_size": 2}
            if page_token is not None:
                params["page_token"] = page_token
            response = await http.get("/organizations", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 2
            seen.extend(item["name"] for item in page["items"])
            page_token = page["next_page_token"]
            if page_token is None:
                return seen

    assert await every_page(await as_user(user)) == created  # oldest first, each once
    everything = await every_page(client)  # the admin token: every organization
    assert len(everything) == len(set(everything))
    assert set(created) < set(everything)
    http = await as_user(user)
    response = await http.get("/organizations", params={"page_token": "!!"})
    assert_error(response, 400, "invalid_request")


async def test_an_unknown_organization_is_404(client: httpx.AsyncClient) -> None:
    org = unique("none")
    assert_error(await client.get(f"/organizations/{org}"), 404, "not_found")
    body = {"username": await new_user(client), "role": "member"}
    assert_error(await client.post(f"/organizations/{org}/members", json=body), 404, "not_found")
    member = f"/organizations/{org}/members/{body['username']}"
    assert_error(await client.patch(member, json={"role": "admin"}), 404, "not_found")
    assert_error(await client.delete(member), 404, "not_found")


async def test_adding_changing_and_removing_members(client: httpx.AsyncClient) -> None:
    alice, bob = await new_user(client), await new_user(client)
    org = await new_org(client, alice)

    added = await client.post(f"/organizations/{org}/members", json={"username": bob})
    assert added.status_code == 201
    assert added.json() == {"username": bob, "role": "member"}  # the default role
    for role in ("member", "admin"):  # a member already, whatever the role asked
        again = await client.post(
            f"/organizations/{org}/members", json={"username": bob, "role": role}
        )
        assert_error(again, 409, "conflict")

    path = f"/organizations/{org}/members/{bob}"
    for role in ("admin", "read_only", "owner", "member"):
        changed = await client.patch(path, json={"role": role})
        assert changed.status_code == 200
        assert changed.json() == {"username": bob, "role": role}
        assert {"username": bob, "role": role} in await members(client, org)
    same = await client.patch(path, json={"role": "member"})
    assert same.json() == {"username": bob, "role": "member"}

    assert (await client.delete(path)).status_code == 204
    assert await members(client, org) == [{"username": alice, "role": "owner"}]
    assert_error(await client.delete(path), 404, "not_found")
    assert_error(await client.patch(path, json={"role": "admin"}), 404, "not_found")
    # Removed members may be added again.
    assert (
        await client.post(f"/organizations/{org}/members", json={"username": bob, "role": "admin"})
    ).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"username": "x", "role": "superuser"},
        {"username": "x", "role": "Owner"},
        {"username": "x", "role": None},
        {"role": "member"},
        {"username": "", "role": "member"},
        {"username": 5, "role": "member"},
        {"username": "x", "role": "member", "extra": 1},
    ],
)
async def test_invalid_member_requests_are_refused(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    org = await new_org(client, await new_user(client))
    assert_error(
        await client.post(f"/organizations/{org}/members", json=body), 422, "invalid_request"
    )


@pytest.mark.parametrize(
    "body",
    [{"role": "superuser"}, {"role": None}, {}, {"role": "member", "username": "x"}, ["member"]],
)
async def test_invalid_role_changes_are_refused(client: httpx.AsyncClient, body: object) -> None:
    owner = await new_user(client)
    org = await new_org(client, owner)
    response = await client.patch(f"/organizations/{org}/members/{owner}", json=body)
    assert_error(response, 422, "invalid_request")


async def test_adding_an_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    org = await new_org(client, await new_user(client))
    body = {"username": unique("ghost"), "role": "member"}
    assert_error(await client.post(f"/organizations/{org}/members", json=body), 404, "not_found")


async def test_an_organization_always_keeps_an_owner(client: httpx.AsyncClient) -> None:
    alice, bob = await new_user(client), await new_user(client)
    org = await new_org(client, alice)
    alone = f"/organizations/{org}/members/{alice}"
    for request in (client.patch(alone, json={"role": "admin"}), client.delete(alone)):
        error = assert_error(await request, 409, "conflict")
        assert "owner" in error["message"]
    assert await members(client, org) == [{"username": alice, "role": "owner"}]

    await add_member(client, org, bob, "owner")
    assert (await client.patch(alone, json={"role": "member"})).status_code == 200
    last = f"/organizations/{org}/members/{bob}"
    assert_error(await client.delete(last), 409, "conflict")
    assert (await client.delete(alone)).status_code == 204  # no longer an owner
    assert await members(client, org) == [{"username": bob, "role": "owner"}]


async def test_two_owners_demoting_each_other_at_once_leave_one(
    client: httpx.AsyncClient, as_user: UserClients
) -> None:
    """The membership change locks the organization: one demotion wins, the other is refused
    (no longer an owner: 403; or it would leave no owner: 409), on every backend."""
    for _ in range(5):
        alice, bob = await new_user(client), await new_user(client)
        org = await new_org(client, alice)
        await add_member(client, org, bob, "owner")
        as_alice, as_bob = await as_user(alice), await as_user(bob)
        statuses: list[int] = []

        async def demote(
            http: httpx.AsyncClient, other: str, org: str = org, statuses: list[int] = statuses
        ) -> None:
            response = await http.patch(
                f"/organizations/{org}/members/{other}", json={"role": "member"}
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            group.start_soon(demote, as_alice, bob)
            group.start_soon(demote, as_bob, alice)
        assert sorted(statuses)[0] == 200, statuses
        assert sorted(statuses)[1] in (403, 409), statuses
        owners = [m for m in await members(client, org) if m["role"] == "owner"]
        assert len(owners) == 1


async def test_concurrent_additions_of_one_member_add_it_once(client: httpx.AsyncClient) -> None:
    org = await new_org(client, await new_user(client))
    bob = await new_user(client)
    statuses: list[int] = []

    async def join(role: str) -> None:
        body = {"username": bob, "role": role}
        statuses.append((await client.post(f"/organizations/{org}/members", json=body)).status_code)

    async with anyio.create_task_group() as group:
        for role in ("member", "admin", "read_only", "member", "admin", "read_only"):
            group.start_soon(join, role)
    assert sorted(statuses) == [201] + [409] * 5
    assert len(await members(client, org)) == 2
