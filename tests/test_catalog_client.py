"""The catalog API of the client against the real server: the issue's example as written, the
blocking Mapping, metadata writes and their revisions, every query operator end to end,
sharing between two users, listings with filters, and typed errors."""

from __future__ import annotations

import collections.abc
import secrets
from typing import Any

import anyio
import pytest
from _structures import stored, structure

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
)
from aiosdk._sync.testing import Accounts
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio


async def _user_client(accounts: AsyncAccounts, hint: str) -> tuple[aiosdk.AsyncClient, str]:
    user = await accounts.user(hint)
    return await accounts.client(user), user.username


# -- the issue's example, as written ---------------------------------------------------------


async def test_what_a_user_can_do_runs_as_written() -> None:
    pw = secrets.token_urlsafe(12)
    async with aiosdk.embedded() as admin:
        await admin.admin.create_user("alice", password=pw)
        await admin.admin.create_user("bob", password=pw)
        client = aiosdk.AsyncClient(admin.url)
        await client.login(username="alice", password=pw)
        json_patch_ops = [{"op": "add", "path": "/note", "value": "checked"}]
        events: list[aiosdk.CatalogEvent] = []

        root = client.catalog  # the root container (namespaces at the top)
        grp = await root.create_container(
            "alice/experiments", metadata={"pi": "alice"}, specs=["run"]
        )
        run = await grp.create_container("run42", metadata={"color": "red", "temperature": 21.5})
        node = await root.get("alice/experiments/run42")  # by path; NotFoundError if absent
        async for key, node in grp.items():  # noqa: B007
            ...  # pages lazily
        for i in range(4):  # (not in the issue: four more children, so that [3] exists)
            await grp.create_container(f"more{i}")
        await grp.values()[3]
        await grp.values()[-1]
        await grp.values()[:10]
        await grp.count()
        await grp.values().first()
        await grp.keys().head(5)
        await grp.items().tail(5)
        reds = grp.search(Key("color") == "red").sort(
            ("temperature", DESCENDING)
        )  # lazy, no request yet
        await reds.count()
        await reds.distinct("color", structure_families=True, counts=True)
        await node.update_metadata({"color": "blue"})
        await node.patch_metadata(json_patch_ops)
        # a node remembers the revision it was read at: a write based on a stale read is a
        # ConflictError
        await node.share("bob", actions=["read"])
        await node.unshare("bob")
        await grp.set_public(True)

        async def change_children() -> None:
            for i in range(100):  # until the watch has seen one (it watches from "now")
                await grp.create_container(f"watched{i}")
                if events:
                    return
                await anyio.sleep(0.2)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(change_children)
                async for event in grp.watch():  # created / updated / deleted children
                    events.append(event)
                    break
        await grp.new(
            "array",
            "run-raw",
            tags=["raw"],
            file_type="zarr",
            metadata={"m": 1},
            structure={"data_type": "<f8", "shape": [2, 2], "chunks": [2, 2]},
        )
        pager = client.list_arrays(
            namespace="alice",
            tag=["raw"],
            exclude_tag=["old"],
            search="run",
            file_type=["zarr"],
            per_page=100,
            with_metadata=True,
        )
        arrays = []
        async for arr in pager:
            arrays.append(arr)

        # What the lines above gave:
        assert grp.path == "alice/experiments"
        assert grp.metadata == {"pi": "alice"}
        assert grp.specs == ("run",)
        assert run.key == "run42"
        assert node.metadata == {"color": "blue", "temperature": 21.5, "note": "checked"}
        assert node.revision == 5  # created, updated, patched, shared, unshared
        assert node.shares == ()
        assert grp.public
        assert await reds.count() == 0  # run42 is blue now
        assert events[0].kind == "created"
        assert events[0].key.startswith("watched")
        assert [(a.path, a.metadata) for a in arrays] == [("alice/experiments/run-raw", {"m": 1})]
        stale = await root.get("alice/experiments/run42")
        await node.update_metadata({"color": "green"})
        with pytest.raises(aiosdk.ConflictError, match="revision"):
            await stale.update_metadata({"color": "red"})
        with pytest.raises(aiosdk.NotFoundError):
            await root.get("alice/experiments/run43")
        async with aiosdk.AsyncClient(admin.url) as bob:
            await bob.login(username="bob", password=pw)
            assert (await bob.catalog.get("alice/experiments/run42")).metadata["color"] == "green"
            # the root lists the namespaces bob may read; a public node does not make its own public
            assert [k async for k in bob.catalog] == ["bob"]
        await client.aclose()


def test_the_blocking_container_is_a_mapping(aiosdk_accounts_sync: Accounts) -> None:
    user = aiosdk_accounts_sync.user("mapping")
    client = aiosdk_accounts_sync.client(user)
    c = client.catalog.create_container(f"{user.username}/m", metadata={"a": [1, 2]})
    for key in ["b", "a", "d", "c", "e"]:
        c.create_container(key, metadata={"k": key})
    assert isinstance(c, collections.abc.Mapping)
    assert isinstance(c, aiosdk.Container)
    assert isinstance(c["a"], aiosdk.Node)
    assert c["a"].metadata == {"k": "a"}
    assert len(c) == 5
    assert list(c) == ["a", "b", "c", "d", "e"]
    assert c.values()[3].key == "d"
    assert c.values()[-1].key == "e"
    assert [n.key for n in c.values()[:3]] == ["a", "b", "c"]
    assert c.keys()[::-2] == ["e", "c", "a"]
    assert dict(c.items())["b"].key == "b"
    assert "c" in c
    assert "zzz" not in c
    assert 3 not in c  # type: ignore[comparison-overlap]
    with pytest.raises(KeyError):
        c["zzz"]
    with pytest.raises(aiosdk.NodeNotFoundError):
        c.get("zzz")
    assert c.get("zzz", None) is None
    assert c.values().first().key == "a"
    assert c.keys().tail(2) == ["d", "e"]
    assert c["a"] in c.values()
    assert ("a", c["a"]) in c.items()
    found = client.catalog.get(f"{user.username}/m/a")
    assert type(found) is aiosdk.Container
    with pytest.raises(TypeError, match="read-only"):
        c.metadata["a"].append(3)


# -- metadata --------------------------------------------------------------------------------


async def test_metadata_updates_replaces_and_patches(aiosdk_accounts: AsyncAccounts) -> None:
    client, ns = await _user_client(aiosdk_accounts, "meta")
    node = await client.catalog.create_container(
        f"{ns}/n", metadata={"a": {"b": 1, "c": 2}, "keep": True}, specs=["s1"]
    )
    assert node.revision == 1
    await node.update_metadata({"a": {"b": 10, "c": None}, "new": [1]})  # RFC 7386
    assert node.metadata == {"a": {"b": 10}, "keep": True, "new": [1]}
    assert node.revision == 2
    await node.replace_metadata({"only": 1}, specs=["s2"])
    assert (node.metadata, node.specs) == ({"only": 1}, ("s2",))
    await node.patch_metadata(
        [
            {"op": "test", "path": "/only", "value": 1},
            {"op": "add", "path": "/x", "value": {"y": 1}},
        ],
        [{"op": "add", "path": "/-", "value": "s3"}],
    )
    assert (node.metadata, node.specs) == ({"only": 1, "x": {"y": 1}}, ("s2", "s3"))
    await node.patch_metadata(
        {"x": {"z": 2}, "only": None}, ["s4"], content_type="application/merge-patch+json"
    )
    assert (node.metadata, node.specs) == ({"x": {"y": 1, "z": 2}}, ("s4",))
    revision = node.revision
    with pytest.raises(aiosdk.UnprocessableEntityError):
        await node.patch_metadata([{"op": "test", "path": "/x/y", "value": 999}])
    with pytest.raises(aiosdk.UnprocessableEntityError):
        await node.patch_metadata([{"op": "remove", "path": "/missing"}])
    assert (await node.refresh()).revision == revision  # a failed patch changes nothing
    metadata, specs = node.metadata_copy()
    metadata["x"]["y"] = "changed"
    specs.append("s5")
    patches = node.build_metadata_patches(metadata, specs)
    await node.patch_metadata(*patches)
    assert (node.metadata, node.specs) == ({"x": {"y": "changed", "z": 2}}, ("s4", "s5"))
    assert (await client.catalog.get(node.path)).metadata == node.metadata
    with pytest.raises(aiosdk.ConfigurationError):
        await node.patch_metadata({"a": 1})  # a dict is a merge patch: say so
    with pytest.raises(aiosdk.ConfigurationError):
        await node.patch_metadata([], content_type="text/plain")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read-only"):
        node.metadata["x"] = 1  # type: ignore[index]


async def test_a_stale_write_is_a_conflict_and_one_of_two_racing_wins(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    client, ns = await _user_client(aiosdk_accounts, "race")
    node = await client.catalog.create_container(f"{ns}/r", metadata={"n": 0})
    readers = [await client.catalog.get(node.path) for _ in range(2)]
    outcomes: list[str] = []

    async def write(reader: aiosdk.AsyncNode, value: int) -> None:
        try:
            await reader.update_metadata({"n": value})
            outcomes.append("ok")
        except aiosdk.ConflictError as exc:
            outcomes.append("conflict" if "revision" in str(exc) else str(exc))

    async with anyio.create_task_group() as tg:
        for i, reader in enumerate(readers):
            tg.start_soon(write, reader, i + 1)
    assert sorted(outcomes) == ["conflict", "ok"]
    final = await client.catalog.get(node.path)
    assert final.revision == 2
    assert final.metadata["n"] in (1, 2)
    with pytest.raises(aiosdk.ConflictError):
        await node.delete()  # still at revision 1
    for stale_write in (
        node.move(f"{ns}/moved"),
        node.set_public(True) if False else node.rename("x"),
    ):
        with pytest.raises(aiosdk.ConflictError):
            await stale_write
    await node.refresh()
    await node.update_metadata({"n": 3})  # read again: accepted
    assert node.revision == 3


# -- queries ---------------------------------------------------------------------------------


async def test_every_query_operator_end_to_end(aiosdk_accounts: AsyncAccounts) -> None:
    client, ns = await _user_client(aiosdk_accounts, "query")
    tree = await client.catalog.create_container(f"{ns}/tree")
    seeds: dict[str, dict[str, Any]] = {
        "a": {"color": "red", "n": 1, "tags": ["raw", "x"], "s": {"t": 20.5}, "note": "Blue sky"},
        "b": {"color": "blue", "n": 1.0, "tags": ["old"], "s": {"t": 30}},
        "c": {"color": "red", "n": "1", "tags": [], "s": {"t": "warm"}},
        "d": {"color": None, "n": True, "s": {"t": 10}, "note": "red sky at night"},
        "e": {"n": 5},
    }
    for key, metadata in seeds.items():
        await tree.create_container(key, metadata=metadata, specs=["run"] if key < "c" else [])
    await tree.new("array", "f", metadata={"color": "red", "n": 2}, structure=structure())

    async def keys(*queries: aiosdk.Query) -> list[str]:
        found = tree
        for query in queries:
            found = found.search(query)
        return [key async for key in found]

    assert await keys(Key("color") == "red") == ["a", "c", "f"]
    assert await keys(Eq("n", 1)) == ["a", "b"]  # 1 == 1.0; not "1", not true
    assert await keys(Eq("n", "1")) == ["c"]
    assert await keys(Eq("n", True)) == ["d"]
    assert await keys(Eq("color", None)) == ["d"]
    assert await keys(Key("color") != "red") == ["b", "d", "e"]  # absent counts as different
    assert await keys(NotEq("n", 1)) == ["c", "d", "e", "f"]
    assert await keys(Key("s.t") > 15) == ["a", "b"]  # numbers with numbers only
    assert await keys(Key("s.t") <= 20.5) == ["a", "d"]
    assert await keys(Comparison("ge", "s.t", "a")) == ["c"]  # strings with strings
    assert await keys(Key("n") < 3) == ["a", "b", "f"]  # true is not a number
    assert await keys(Key("tags").contains("raw")) == ["a"]
    assert await keys(Contains("color", "re")) == []  # lists only, no substrings
    assert await keys(Key("color").in_(["blue", None])) == ["b", "d"]
    assert await keys(In("n", [1, "1"])) == ["a", "b", "c"]
    assert await keys(Key("color").not_in(["red"])) == ["b", "d", "e"]
    assert await keys(NotIn("n", [1, 5, 2])) == ["c", "d"]
    assert await keys(FullText("sky")) == ["a", "d"]
    assert await keys(FullText("NIGHT sky")) == ["d"]
    assert await keys(FullText("red sky")) == ["a", "d"]  # words from any of the values
    assert await keys(Key("note").regex("^blue", case_sensitive=False)) == ["a"]
    assert await keys(Regex("note", "^blue")) == []
    assert await keys(Key("note").exists()) == ["a", "d"]
    assert await keys(KeyPresent("color", exists=False)) == ["e"]
    assert await keys(Key("color").like("r_d")) == ["a", "c", "f"]
    assert await keys(Like("note", "%sky%")) == ["a", "d"]
    assert await keys(Specs(include=["run"])) == ["a", "b"]
    assert await keys(Specs(exclude=["run"])) == ["c", "d", "e", "f"]
    assert await keys(StructureFamily("array")) == ["f"]
    assert await keys(Key("color") == "red", StructureFamily("container"), Key("n") == 1) == ["a"]
    assert await tree.search(Key("color") == "red").count() == 3

    ordered = tree.sort(("n", DESCENDING))
    # descending: booleans, then strings, then numbers (5, 2, then 1 == 1.0 by key)
    assert [k async for k in ordered] == ["d", "c", "e", "f", "a", "b"]
    by_t = tree.search(StructureFamily("container")).sort(("s.t", ASCENDING))
    numbers = [k async for k in by_t.search(Key("s.t") > 0)]
    assert numbers == ["d", "a", "b"]
    missing_last = [k async for k in tree.sort(("note", ASCENDING))]
    assert missing_last[:2] == ["a", "d"]
    assert missing_last[2:] == ["b", "c", "e", "f"]
    assert [k async for k in tree.sort(("_key", DESCENDING))] == ["f", "e", "d", "c", "b", "a"]
    assert await tree.sort(("color", ASCENDING)).keys()[-1] == "e"  # missing sorts last
    distinct = await tree.search(Key("color") == "red").distinct(
        "color", structure_families=True, specs=True, counts=True
    )
    assert distinct["metadata"]["color"] == [{"value": "red", "count": 3}]
    assert distinct["structure_families"] == [
        {"value": "container", "count": 2},
        {"value": "array", "count": 1},
    ]
    assert {"value": ["run"], "count": 1} in distinct["specs"]
    with pytest.raises(aiosdk.BadRequestError, match="regular expression"):
        await tree.search(Key("note").regex("(")).count()


# -- sharing and permissions -----------------------------------------------------------------


async def test_two_users_see_only_what_is_shared(aiosdk_accounts: AsyncAccounts) -> None:
    alice, a = await _user_client(aiosdk_accounts, "alice")
    bob, b = await _user_client(aiosdk_accounts, "bob")
    private = await alice.catalog.create_container(f"{a}/private", metadata={"secret": 1})
    shared = await alice.catalog.create_container(f"{a}/shared", tags=["t"])
    await shared.new("array", "arr", metadata={"secret": 2}, tags=["raw"], structure=structure())
    await private.new("array", "hidden", tags=["raw"], structure=structure())
    for path in (private.path, f"{a}/private/hidden", a):
        with pytest.raises(aiosdk.NodeNotFoundError):
            await bob.catalog.get(path)
    assert not await bob.catalog.__contains__(f"{a}/private")
    assert a not in [key async for key in bob.catalog]
    assert b in [key async for key in bob.catalog]
    assert [n.path async for n in bob.list_shared_arrays()] == []
    assert [n.path async for n in bob.list_public_arrays(namespace=a)] == []

    await shared.share(b, actions=["read"])
    assert shared.shares == (aiosdk.Share(b, ("read",)),)
    seen = await bob.catalog.get(f"{a}/shared")
    assert seen.shares == ()
    assert seen.allowed_actions == ("read",)
    assert [k async for k in seen] == ["arr"]  # type: ignore[attr-defined]
    assert await seen.count() == 1  # type: ignore[attr-defined]
    assert [n.path async for n in bob.list_shared_arrays()] == [f"{a}/shared/arr"]
    assert [n.path async for n in bob.list_shared_groups()] == [f"{a}/shared"]
    with pytest.raises(aiosdk.PermissionDeniedError):
        await seen.update_metadata({"x": 1})
    with pytest.raises(aiosdk.PermissionDeniedError):
        await seen.create_container("mine")  # type: ignore[attr-defined]
    with pytest.raises(aiosdk.NodeNotFoundError):
        await bob.catalog.get(f"{a}/private")
    await shared.share(b, actions=["read", "write"])
    await (await bob.catalog.get(f"{a}/shared/arr")).update_metadata({"by": "bob"})
    await shared.unshare(b)
    with pytest.raises(aiosdk.NotFoundError):
        await shared.unshare(b)
    with pytest.raises(aiosdk.NodeNotFoundError):
        await bob.catalog.get(f"{a}/shared/arr")
    await private.set_public(True)
    assert [n.path async for n in bob.list_public_arrays(namespace=a)] == [f"{a}/private/hidden"]
    assert (await bob.catalog.get(f"{a}/private")).metadata == {"secret": 1}
    await private.set_public(False)
    assert not private.public
    with pytest.raises(aiosdk.NotFoundError):
        await shared.share("no-such-namespace-" + secrets.token_hex(4))


# -- listings --------------------------------------------------------------------------------


async def test_listings_filter_and_page(aiosdk_accounts: AsyncAccounts) -> None:
    client, ns = await _user_client(aiosdk_accounts, "list")
    top = await client.catalog.create_container(f"{ns}/g1", specs=["project"], tags=["keep"])
    await client.catalog.create_container(f"{ns}/g2")
    sub = await top.create_container("sub", specs=["project"])
    for i in range(7):
        await top.new(
            "array",
            f"run{i}",
            tags=["raw"] + (["old"] if i % 3 == 0 else []),
            file_type="zarr" if i % 2 else "tiff",
            metadata={"i": i},
            structure=structure(),
        )
    await sub.new("table", "Table-Run", file_type="parquet", structure=structure("table"))

    async def paths(pager: aiosdk.AsyncPager[aiosdk.AsyncNode]) -> list[str]:
        return [node.path.removeprefix(f"{ns}/") async for node in pager]

    every = await paths(client.list_arrays(namespace=ns))
    assert every == [f"g1/run{i}" for i in range(7)] + ["g1/sub/Table-Run"]
    assert await paths(client.list_arrays(namespace=ns, tag=["raw"], exclude_tag="old")) == [
        "g1/run1", "g1/run2", "g1/run4", "g1/run5",
    ]  # fmt: skip
    assert await paths(client.list_arrays(namespace=ns, file_type=["zarr"])) == [
        "g1/run1", "g1/run3", "g1/run5",
    ]  # fmt: skip
    assert await paths(client.list_arrays(namespace=ns, exclude_file_type=["zarr", "tiff"])) == [
        "g1/sub/Table-Run"
    ]
    assert await paths(client.list_arrays(namespace=ns, search="table-r")) == ["g1/sub/Table-Run"]
    assert await paths(client.list_arrays(namespace=ns, permissions="admin")) == every
    assert await paths(client.list_arrays(namespace=ns, structure_family="table")) == [
        "g1/sub/Table-Run"
    ]
    pager = client.list_arrays(namespace=ns, per_page=3)
    first = await pager
    assert [n.key for n in first.items] == ["run0", "run1", "run2"]
    assert first.has_next
    assert len([page async for page in pager.pages()]) == 3
    assert await paths(pager) == every
    assert await paths(client.list_arrays(namespace=ns, per_page=3, page=2)) == every[3:]
    (listed,) = (await client.list_arrays(namespace=ns, search="run3")).items
    assert listed.metadata == {}
    (listed,) = (await client.list_arrays(namespace=ns, search="run3", with_metadata=True)).items
    assert listed.metadata == {"i": 3}
    assert await paths(client.list_groups(namespace=ns)) == ["g1", "g2"]
    assert await paths(client.list_groups(namespace=ns, flat=True)) == ["g1", "g1/sub", "g2"]
    assert await paths(client.list_groups(namespace=ns, group_type="project", flat=True)) == [
        "g1", "g1/sub",
    ]  # fmt: skip
    assert await paths(client.list_groups(parent=top.path)) == ["g1/sub"]
    assert await paths(client.list_groups(namespace=ns, tag="keep")) == ["g1"]
    groups = [g async for g in client.list_groups(namespace=ns)]
    assert all(isinstance(g, aiosdk.AsyncContainer) for g in groups)
    assert await paths(client.list_public_groups(namespace=ns)) == []
    with pytest.raises(aiosdk.ConfigurationError):
        client.list_arrays(permissions="owner")  # type: ignore[arg-type]
    with pytest.raises(aiosdk.ConfigurationError):
        client.list_arrays(per_page=0)


# -- nodes: create, move, delete, paths, errors ----------------------------------------------


async def test_nodes_move_rename_delete_and_odd_keys(aiosdk_accounts: AsyncAccounts) -> None:
    client, ns = await _user_client(aiosdk_accounts, "nodes")
    root = client.catalog
    odd = "100% sure? #1 ünïcode & spaces"
    box = await root.create_container(f"{ns}/{odd}", metadata={"k": odd})
    assert (await root.get(f"{ns}/{odd}")).metadata == {"k": odd}
    assert box.uri.endswith(
        "/api/v1/catalog/nodes/"
        + ns
        + "/100%25%20sure%3F%20%231%20%C3%BC"
        + "n%C3%AFcode%20%26%20spaces"
    )
    assert box.item["path"] == box.path
    assert box.structure() is None
    child = await box.new("array", "a", structure=structure(), file_type="zarr")
    assert type(child) is aiosdk.AsyncArrayClient  # an AsyncNode of the array family
    assert child.structure() == stored()
    assert (await box["a"]).file_type == "zarr"
    assert await box.__contains__("a")
    with pytest.raises(aiosdk.ConflictError):
        await box.create_container("a")  # exists
    with pytest.raises(aiosdk.ConflictError):
        await root.create_container(f"{ns}/{odd}/a/below")  # not a container
    with pytest.raises(aiosdk.NodeNotFoundError):
        await root.create_container(f"{ns}/missing/below")  # the parent must exist
    with pytest.raises(aiosdk.ConfigurationError, match="root"):
        await root.create_container("newnamespace")
    await child.rename("b")
    assert (child.key, child.path) == ("b", f"{ns}/{odd}/b")
    other = await root.create_container(f"{ns}/other")
    await box.move(f"{ns}/other/box")
    assert box.path == f"{ns}/other/box"
    assert box.parent == other.path
    assert [k async for k in box] == ["b"]
    assert (await root.get(f"{ns}/other/box/b")).id == child.id
    with pytest.raises(aiosdk.StatusError) as caught:
        await other.move(f"{ns}/other/box/inside")
    assert caught.value.status_code in (400, 409)
    with pytest.raises(aiosdk.ConflictError):
        await other.delete()  # not empty
    await other.refresh()
    await other.delete(recursive=True)
    with pytest.raises(aiosdk.NodeNotFoundError):
        await root.get(f"{ns}/other/box/b")
    namespace_root = await root.get(ns)
    with pytest.raises(aiosdk.PermissionDeniedError):
        await namespace_root.delete(recursive=True)


@pytest.mark.parametrize(
    "bad", ["", "/x", "x/", "a//b", ".", "..", "a/../b", " x", "x\x00", "x" * 256]
)
async def test_bad_paths_fail_before_sending(client: aiosdk.AsyncClient, bad: str) -> None:
    with pytest.raises(aiosdk.ConfigurationError):
        await client.catalog.get(bad)
    with pytest.raises(aiosdk.ConfigurationError):
        await client.catalog.create_container(f"ns/{bad}" if bad else "")
    assert not await client.catalog.__contains__(bad)


async def test_the_root_lists_namespaces_and_has_no_node(aiosdk_accounts: AsyncAccounts) -> None:
    client, ns = await _user_client(aiosdk_accounts, "root")
    root = client.catalog
    assert (root.path, root.key, root.parent) == ("", "", None)
    assert ns in [k async for k in root]
    assert await root[ns] is not None
    assert (await root[ns]).parent is None
    for write in (root.update_metadata({"a": 1}), root.delete(), root.share("x")):
        with pytest.raises(aiosdk.ConfigurationError, match="root"):
            await write
    with pytest.raises(aiosdk.ConfigurationError):
        async for _ in root.watch():
            pass
