"""Applications (:mod:`aiosdk.server.tickets.apps`): the built-in ``stats`` application (its
``summary`` computed for a user of the real server, against what that user may read; its
``Counter``), the registry of applications, ``module:factory`` specs and their clear refusals."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server.auth import Principal
from aiosdk.server.authorization import caller_of
from aiosdk.server.catalog.nodes import Viewer
from aiosdk.server.errors import InvalidRequestError, NotFoundError
from aiosdk.server.tickets import apps

from ._arrays import new_array
from ._tables import new_table
from .conftest import Users, create


def stats() -> apps.Application:
    return apps.Applications(apps.builtin_applications()).get("stats")


def test_the_builtin_application() -> None:
    registry = apps.Applications(apps.builtin_applications())
    assert [app.id for app in registry] == ["stats"]
    assert len(registry) == 1
    app = registry.get("stats")
    assert app.name == "Server statistics"
    assert {name: field.type for name, field in app.fields.items()} == {
        "summary": "table",
        "counter": "Counter",
    }
    assert all(field.description for field in app.fields.values())
    with pytest.raises(NotFoundError, match="No application 'nope'"):
        registry.get("nope")
    with pytest.raises(NotFoundError, match=r"no field 'nope'; its fields are \['counter'"):
        app.field("nope")
    with pytest.raises(ValueError, match="Two applications have the id 'stats'"):
        apps.Applications([*apps.builtin_applications(), app])


def counter() -> apps.ObjectField:
    field = stats().field("counter")
    assert isinstance(field, apps.ObjectField)
    return field


def test_the_counter() -> None:
    field = counter()
    assert field.type == "Counter"
    assert field.initial_state == {"value": 0}
    assert sorted(field.methods) == ["get", "increment", "reset"]
    state = dict(field.initial_state)
    for method, arguments, value in [
        ("increment", {}, 1),
        ("increment", {"by": 5}, 6),
        ("increment", {"by": -10}, -4),
        ("reset", {}, 0),
        ("increment", {"by": 2}, 2),
    ]:
        state, result = field.methods[method](state, arguments)
        assert result == value
        assert state == {"value": value}
    assert field.methods["get"](state, {}) == ({"value": 2}, {"value": 2})


@pytest.mark.parametrize(
    ("method", "arguments", "message"),
    [
        ("increment", {"by": "2"}, "by must be a 64-bit integer, not '2'"),
        ("increment", {"by": True}, "by must be a 64-bit integer"),
        ("increment", {"by": 1.5}, "by must be a 64-bit integer"),
        ("increment", {"by": 2**63}, "by must be a 64-bit integer"),
        ("increment", {"step": 1}, r"increment takes by, not \['step'\]"),
        ("reset", {"to": 3}, r"reset takes no arguments, not \['to'\]"),
        ("get", {"x": 1}, "get takes no arguments"),
    ],
)
def test_bad_counter_arguments_are_refused(
    method: str, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        counter().methods[method]({"value": 1}, arguments)


def test_a_counter_stays_within_64_bits() -> None:
    with pytest.raises(InvalidRequestError, match="would leave the 64-bit integers"):
        counter().methods["increment"]({"value": 2**63 - 1}, {})


async def compute() -> Any:  # (a field's compute, never called here)
    raise AssertionError


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: apps.Application("a/f/b", "x", {}), "invalid application id 'a/f/b'"),
        (lambda: apps.Application("", "x", {}), "invalid application id"),
        (
            lambda: apps.Application("ok", "x", {"": apps.TableField("d", compute)}),
            "invalid application field",
        ),
        (lambda: apps.ObjectField("table", "d", {}), "a type of catalog data"),
        (lambda: apps.ObjectField("", "d", {}), "1 to 64 characters"),
        (lambda: apps.ObjectField("X" * 65, "d", {}), "1 to 64 characters"),
        (
            lambda: apps.ObjectField("Thing", "d", {}, {"get": lambda s, a: (s, s)}),
            "'get' .* is every plugin object's",
        ),
        (lambda: apps.ObjectField("Thing", "d", {"x": float("nan")}), "must be JSON"),
        (lambda: apps.ObjectField("Thing", "d", {"x": object()}), "must be JSON"),
        (lambda: apps.ObjectField("Thing", "d", [1]), "is a JSON object"),
    ],
)
def test_malformed_applications_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# --- module:factory specs ----------------------------------------------------------------------

MODULE = """
from aiosdk.server.tickets.apps import Application, ObjectField

def make():
    return Application("mine", "Mine", {"thing": ObjectField("Thing", "A thing", {"n": 1})})

class factories:
    make = staticmethod(make)

not_callable = 3

def fails():
    raise RuntimeError("no database")

def wrong():
    return {"id": "mine"}
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of application factories, importable by a name of its own."""
    name = f"aiosdk_test_apps_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_an_application_loads_from_its_spec(plugin_module: str) -> None:
    for factory in ("make", "factories.make"):
        app = apps.load_application(f"{plugin_module}:{factory}")
        assert app.id == "mine"
        thing = app.field("thing")
        assert isinstance(thing, apps.ObjectField)
        assert sorted(thing.methods) == ["get"]
    registry = apps.Applications([*apps.builtin_applications(), app])
    assert [app.id for app in registry] == ["stats", "mine"]


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("", "expected MODULE:FACTORY"),
        ("make.", "has no make."),
        ("nope", "has no nope"),
        ("not_callable", "not_callable is not callable"),
        ("fails", r"fails\(\) failed: RuntimeError\('no database'\)"),
        ("wrong", r"wrong\(\) returned a dict, not an Application"),
    ],
)
def test_a_spec_that_does_not_load_is_refused(
    plugin_module: str, factory: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        apps.load_application(f"{plugin_module}:{factory}")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected MODULE:FACTORY"),
        (":make", "expected MODULE:FACTORY"),
        ("aiosdk_no_such_module_anywhere:make", "cannot import 'aiosdk_no_such_module_anywhere'"),
    ],
)
def test_a_malformed_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apps.load_application(spec)


# --- the summary -------------------------------------------------------------------------------


async def summary(
    database: async_sessionmaker[AsyncSession], username: str
) -> list[tuple[str, str, int]]:
    """The ``summary`` table as ``username`` fetching it gets it, as (namespace, family, nodes)."""
    field = stats().field("summary")
    assert isinstance(field, apps.TableField)
    async with database() as db:
        caller = await caller_of(db, Principal(username, is_admin=False, token_id=""))
        context = apps.AppContext(username, Viewer(caller), db)
        table = await field.compute(context)
    assert table.schema.names == ["namespace", "structure_family", "nodes"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "int64"]
    return list(zip(*(table.column(n).to_pylist() for n in table.schema.names), strict=True))


@pytest.mark.anyio
async def test_the_summary_counts_what_the_user_may_read(
    users: Users, database: async_sessionmaker[AsyncSession]
) -> None:
    alice, a = await users.new()
    bob, b = await users.new()
    assert await summary(database, alice) == [(alice, "container", 1)]  # its namespace's root
    await make_nodes(a, alice)
    await create(b, bob, "lab")
    await create(b, f"{bob}/lab", "inner")
    await new_array(b, f"{bob}/lab", "image", "<f4", [4], [4])
    await new_table(b, bob, "private")
    assert await summary(database, alice) == [
        (alice, "array", 1),
        (alice, "container", 3),
        (alice, "table", 2),
    ]
    shared = await b.put(
        f"/catalog/shares/{bob}/lab", json={"namespace": alice, "actions": ["read"]}
    )
    assert shared.status_code == 200, shared.text
    expected = [
        (alice, "array", 1),
        (alice, "container", 3),
        (alice, "table", 2),
        (bob, "array", 1),
        (bob, "container", 2),
    ]
    assert await summary(database, alice) == sorted(expected)  # (by code point)
    assert await summary(database, bob) == [
        (bob, "array", 1),
        (bob, "container", 3),
        (bob, "table", 1),
    ]


async def make_nodes(http: httpx.AsyncClient, name: str) -> None:
    await create(http, name, "a")
    await create(http, f"{name}/a", "b")
    await new_table(http, f"{name}/a", "t1")
    await new_table(http, f"{name}/a/b", "t2")
    await new_array(http, name, "x", "<i8", [3], [3])
