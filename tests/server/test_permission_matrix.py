"""The permission matrix over the real HTTP routes: users A (alice, the owner) and B (bob, a
member) of an organization, its admin and read-only members, a stranger, read-only tokens and
the admin token: what each can see and change.

Every case runs on a fresh organization; the answer is checked, and so is the organization's
state afterwards (a refused change changed nothing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from aiosdk.server import Server

from .conftest import assert_error, create_token, make_client

pytestmark = pytest.mark.anyio

CALLERS = [
    "alice",  # A: an owner of the organization
    "olga",  # its other owner
    "adam",  # role admin
    "bob",  # B: role member
    "rita",  # role read_only
    "carol",  # in no organization
    "alice-read",  # A's read-scoped token
    "admin",  # the admin token
    "admin-read",  # a read-scoped admin token
]
USERS = ["alice", "olga", "adam", "bob", "rita", "carol"]
ROLES = {"alice": "owner", "olga": "owner", "adam": "admin", "bob": "member", "rita": "read_only"}


@dataclass
class People:
    """The users (unique names), and a token of each caller."""

    names: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture(scope="module")
async def people(server: Server) -> People:
    names = {user: f"{user}-{uuid.uuid4().hex[:8]}" for user in USERS}
    async with make_client(server, server.admin_token) as admin:
        for name in names.values():
            assert (await admin.post("/admin/users", json={"username": name})).status_code == 201
        tokens = {
            user: (await create_token(admin, owner=name))["token"] for user, name in names.items()
        }
        tokens["alice-read"] = (await create_token(admin, owner=names["alice"], scope="read"))[
            "token"
        ]
        tokens["admin-read"] = (await create_token(admin, scope="read"))["token"]
    tokens["admin"] = server.admin_token
    return People(names, tokens)


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(server, server.admin_token) as http:
        yield http


@pytest.fixture
async def org(admin: httpx.AsyncClient, people: People) -> str:
    """A fresh organization: alice and olga own it, adam, bob and rita have the other roles."""
    name = f"lab-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "owner": people.names["alice"]}
    assert (await admin.post("/admin/organizations", json=body)).status_code == 201
    for user, role in ROLES.items():
        if user != "alice":
            member = {"username": people.names[user], "role": role}
            added = await admin.post(f"/organizations/{name}/members", json=member)
            assert added.status_code == 201, added.text
    return name


async def roles_in(admin: httpx.AsyncClient, org: str) -> dict[str, str]:
    response = await admin.get(f"/organizations/{org}")
    assert response.status_code == 200
    return {member["username"]: member["role"] for member in response.json()["members"]}


def expect(**statuses: int) -> list[tuple[str, int]]:
    """The status each caller gets (``alice_read`` stands for ``alice-read``)."""
    found = [(caller.replace("_", "-"), status) for caller, status in statuses.items()]
    assert sorted(caller for caller, _ in found) == sorted(CALLERS)
    return found


def matrix(*cases: tuple[str, list[tuple[str, int]]]) -> list[object]:
    return [
        pytest.param(operation, caller, status, id=f"{operation}-{caller}")
        for operation, statuses in cases
        for caller, status in statuses
    ]


# Who may see an organization: its members (any role, any token scope) and the admin token.
@pytest.mark.parametrize(
    ("caller", "status"),
    expect(
        alice=200,
        olga=200,
        adam=200,
        bob=200,
        rita=200,
        carol=404,
        alice_read=200,
        admin=200,
        admin_read=200,
    ),
)
async def test_who_sees_the_organization(
    server: Server, people: People, org: str, caller: str, status: int
) -> None:
    absent = f"nope-{uuid.uuid4().hex[:8]}"
    async with make_client(server, people.tokens[caller]) as http:
        response = await http.get(f"/organizations/{org}")
        listed = (await http.get("/organizations", params={"page_size": 1000})).json()["items"]
        missing = await http.get(f"/organizations/{absent}")
    assert (
        assert_error(missing, 404, "not_found")["message"] == f"Organization {absent!r} not found"
    )
    if status == 404:
        # Indistinguishable from an organization that does not exist.
        error = assert_error(response, 404, "not_found")
        assert error["message"] == f"Organization {org!r} not found"
        assert org not in {item["name"] for item in listed}
        return
    assert response.status_code == status
    seen = response.json()
    assert {m["username"] for m in seen["members"]} == {people.names[u] for u in ROLES}
    assert org in {item["name"] for item in listed}
    assert seen in listed


ALL = ["read", "write", "admin"]


@pytest.mark.parametrize(
    ("caller", "role", "actions"),
    [
        ("alice", "owner", ALL),
        ("olga", "owner", ALL),
        ("adam", "admin", ALL),
        ("bob", "member", ["read", "write"]),
        ("rita", "read_only", ["read"]),
        ("alice-read", "owner", ["read"]),
        ("admin", None, ALL),
        ("admin-read", None, ["read"]),
    ],
)
async def test_what_each_caller_may_do_in_the_organization(
    server: Server, people: People, org: str, caller: str, role: str | None, actions: list[str]
) -> None:
    async with make_client(server, people.tokens[caller]) as http:
        seen = (await http.get(f"/organizations/{org}")).json()
        profile = (await http.get("/user")).json()
    assert seen["role"] == role
    assert seen["allowed_actions"] == actions
    if role is None:
        assert profile["is_admin"] is True
        assert profile["organizations"] == []
    else:
        assert profile["is_admin"] is False
        assert profile["username"] == people.names[caller.removesuffix("-read")]
        entry = next(o for o in profile["organizations"] if o["name"] == org)
        assert entry == {
            "name": org,
            "display_name": None,
            "role": role,
            "allowed_actions": actions,
        }


async def test_a_stranger_belongs_to_nothing(server: Server, people: People, org: str) -> None:
    async with make_client(server, people.tokens["carol"]) as http:
        profile = (await http.get("/user")).json()
        listed = (await http.get("/organizations")).json()
    assert org not in {o["name"] for o in profile["organizations"]}
    assert org not in {o["name"] for o in listed["items"]}


# Managing members: owners and admins (owners only where an owner is concerned) and the admin
# token; a member or read-only member may look but not touch (403); a stranger learns nothing
# (404); a read-only token changes nothing, whoever holds it (403).
MEMBER_MANAGEMENT = matrix(
    (
        "add-member",
        expect(
            alice=201,
            olga=201,
            adam=201,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=201,
            admin_read=403,
        ),
    ),
    (
        "add-owner",
        expect(
            alice=201,
            olga=201,
            adam=403,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=201,
            admin_read=403,
        ),
    ),
    (
        "change-role",
        expect(
            alice=200,
            olga=200,
            adam=200,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=200,
            admin_read=403,
        ),
    ),
    (
        "make-owner",
        expect(
            alice=200,
            olga=200,
            adam=403,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=200,
            admin_read=403,
        ),
    ),
    (
        "demote-owner",
        expect(
            alice=200,
            olga=200,
            adam=403,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=200,
            admin_read=403,
        ),
    ),
    (
        "remove-member",  # bob's own membership: bob may leave
        expect(
            alice=204,
            olga=204,
            adam=204,
            bob=204,
            rita=403,
            carol=404,
            alice_read=403,
            admin=204,
            admin_read=403,
        ),
    ),
    (
        "remove-owner",
        expect(
            alice=204,
            olga=204,
            adam=403,
            bob=403,
            rita=403,
            carol=404,
            alice_read=403,
            admin=204,
            admin_read=403,
        ),
    ),
)


@pytest.mark.parametrize(("operation", "caller", "status"), MEMBER_MANAGEMENT)
async def test_who_manages_the_members(
    server: Server,
    admin: httpx.AsyncClient,
    people: People,
    org: str,
    operation: str,
    caller: str,
    status: int,
) -> None:
    names = people.names
    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    assert (await admin.post("/admin/users", json={"username": newcomer})).status_code == 201
    # The owner an owner-operation concerns is never the caller: the other one.
    other_owner = names["alice"] if caller == "olga" else names["olga"]
    members = f"/organizations/{org}/members"
    before = await roles_in(admin, org)
    after = dict(before)
    async with make_client(server, people.tokens[caller]) as http:
        if operation in ("add-member", "add-owner"):
            role = "member" if operation == "add-member" else "owner"
            response = await http.post(members, json={"username": newcomer, "role": role})
            after[newcomer] = role
        elif operation in ("change-role", "make-owner"):
            role = "read_only" if operation == "change-role" else "owner"
            response = await http.patch(f"{members}/{names['bob']}", json={"role": role})
            after[names["bob"]] = role
        elif operation == "demote-owner":
            response = await http.patch(f"{members}/{other_owner}", json={"role": "member"})
            after[other_owner] = "member"
        elif operation == "remove-member":
            response = await http.delete(f"{members}/{names['bob']}")
            del after[names["bob"]]
        else:
            assert operation == "remove-owner"
            response = await http.delete(f"{members}/{other_owner}")
            del after[other_owner]
    if status >= 400:
        error_type = {403: "permission_denied", 404: "not_found"}[status]
        error = assert_error(response, status, error_type)
        if caller.endswith("-read"):
            assert "read-only" in error["message"]
        assert await roles_in(admin, org) == before  # nothing changed
    else:
        assert response.status_code == status, response.text
        assert await roles_in(admin, org) == after


@pytest.mark.parametrize("caller", ["bob", "rita", "adam", "olga"])
async def test_any_member_may_leave(
    server: Server, admin: httpx.AsyncClient, people: People, org: str, caller: str
) -> None:
    after = await roles_in(admin, org)
    del after[people.names[caller]]
    async with make_client(server, people.tokens[caller]) as http:
        response = await http.delete(f"/organizations/{org}/members/{people.names[caller]}")
        assert response.status_code == 204, response.text
        assert_error(await http.get(f"/organizations/{org}"), 404, "not_found")
    assert await roles_in(admin, org) == after


async def test_a_read_only_token_may_not_leave_for_its_user(
    server: Server, admin: httpx.AsyncClient, people: People, org: str
) -> None:
    before = await roles_in(admin, org)
    async with make_client(server, people.tokens["alice-read"]) as http:
        response = await http.delete(f"/organizations/{org}/members/{people.names['alice']}")
    assert_error(response, 403, "permission_denied")
    assert await roles_in(admin, org) == before


async def test_an_admin_member_cannot_make_itself_an_owner(
    server: Server, admin: httpx.AsyncClient, people: People, org: str
) -> None:
    adam = people.names["adam"]
    async with make_client(server, people.tokens["adam"]) as http:
        response = await http.patch(f"/organizations/{org}/members/{adam}", json={"role": "owner"})
    assert_error(response, 403, "permission_denied")
    assert (await roles_in(admin, org))[adam] == "admin"


ADMIN_ROUTES = [
    ("POST", "/admin/users", {"username": "placeholder"}),
    ("GET", "/admin/users", None),
    ("GET", "/admin/users/{bob}", None),
    ("PATCH", "/admin/users/{bob}", {"disabled": True}),
    ("POST", "/admin/organizations", {"name": "placeholder", "owner": "{alice}"}),
]


def fill(value: object, names: dict[str, str], fresh: str) -> object:
    if isinstance(value, str):
        return fresh if value == "placeholder" else value.format(**names)
    if isinstance(value, dict):
        return {key: fill(item, names, fresh) for key, item in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("caller", [c for c in CALLERS if not c.startswith("admin")])
async def test_admin_routes_refuse_every_user(
    server: Server,
    admin: httpx.AsyncClient,
    people: People,
    caller: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    async with make_client(server, people.tokens[caller]) as http:
        response = await http.request(
            method, str(fill(path, people.names, fresh)), json=fill(body, people.names, fresh)
        )
    assert_error(response, 403, "permission_denied")
    assert_error(await admin.get(f"/admin/users/{fresh}"), 404, "not_found")  # nothing created
    assert_error(await admin.get(f"/organizations/{fresh}"), 404, "not_found")
    bob = (await admin.get(f"/admin/users/{people.names['bob']}")).json()
    assert bob["disabled"] is False


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("caller", ["admin", "admin-read"])
async def test_admin_routes_serve_the_admin_token_and_a_read_one_only_reads(
    server: Server,
    admin: httpx.AsyncClient,
    people: People,
    caller: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    if method == "PATCH":  # on a user of its own, so that bob stays enabled for other cases
        assert (await admin.post("/admin/users", json={"username": fresh})).status_code == 201
        path = f"/admin/users/{fresh}"
    async with make_client(server, people.tokens[caller]) as http:
        response = await http.request(
            method, str(fill(path, people.names, fresh)), json=fill(body, people.names, fresh)
        )
    if method == "GET" or caller == "admin":
        assert response.status_code == (201 if method == "POST" else 200), response.text
    else:
        error = assert_error(response, 403, "permission_denied")
        assert "read-only" in error["message"]
        if method == "POST":
            assert_error(await admin.get(f"/admin/users/{fresh}"), 404, "not_found")
        else:
            assert (await admin.get(path)).json()["disabled"] is False
