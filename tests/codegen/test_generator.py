"""The facade generator, on sample async classes of every shape (codegen/samples).

The samples' twins are generated into a temporary package, imported, type-checked with mypy like
the real facade, and driven through the real portal: no server is involved.
"""

from __future__ import annotations

import collections.abc
import inspect
import shutil
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiosdk import Pager
from aiosdk._codegen.sync_facade import AIOSDK, ROOT, Facade, GenerationError, Target, verify, write
from aiosdk._core.paging import Page

from .samples import arrays, nodes, sessions
from .samples.sessions import Dropped
from .twin_members import missing_twin_members

TESTS = Path(__file__).resolve().parent.parent
SAMPLES = Target(
    facades=[
        Facade("codegen.samples.nodes", "AsyncNode", "nodes", constructible=True),
        Facade("codegen.samples.nodes", "AsyncContainer", "containers", abc="Mapping[str, Node]"),
        Facade("codegen.samples.nodes", "AsyncValues", "containers", abc="ValuesView[Node]"),
        Facade("codegen.samples.nodes", "AsyncCursor", "containers"),
        Facade("codegen.samples.arrays", "AsyncArrayClient", "arrays", constructible=True),
        Facade("codegen.samples.sessions", "AsyncSession", "sessions"),
        Facade("codegen.samples.sessions", "AsyncConnection", "sessions"),
    ],
    package="samples_sync",
    roots=[TESTS],
    uses=[replace(AIOSDK, facades=[f for f in AIOSDK.facades if f.name == "AsyncPager"])],
)
ASYNC_CLASSES = (
    nodes.AsyncNode,
    nodes.AsyncContainer,
    nodes.AsyncValues,
    nodes.AsyncCursor,
    arrays.AsyncArrayClient,
    sessions.AsyncSession,
    sessions.AsyncConnection,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The samples' twins, generated into a fresh package (on sys.path while the module runs)."""
    directory = tmp_path_factory.mktemp("twins") / SAMPLES.package
    write(SAMPLES, directory)
    sys.path.insert(0, str(directory.parent))
    yield directory
    sys.path.remove(str(directory.parent))
    for name in [n for n in sys.modules if n.split(".")[0] == SAMPLES.package]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def twins(generated: Path) -> ModuleType:
    import samples_sync

    return samples_sync


@pytest.fixture
def store() -> nodes.Store:
    """/a (a container holding the array /a/x and the container /a/y), /b (empty), /c (array)."""
    store = nodes.Store()
    store.add("/a")
    store.add("/a/x", [1, 2, 3, 4, 5])
    store.add("/a/y")
    store.add("/b")
    store.add("/c", [7])
    return store


@pytest.fixture
def root(twins: ModuleType, store: nodes.Store) -> Any:
    return twins.Container("/", store)


def assert_no_async_object(value: object) -> None:
    """No async facade object anywhere in ``value`` (a sync caller must never get one)."""
    if isinstance(value, (list, tuple, set)):
        for item in value:
            assert_no_async_object(item)
    elif isinstance(value, dict):
        for item in value.values():
            assert_no_async_object(item)
    elif isinstance(value, Page):
        assert_no_async_object(value.items)
    else:
        assert not isinstance(value, ASYNC_CLASSES), value


def test_the_generated_twins_import_and_pass_mypy_strict(generated: Path) -> None:
    assert verify(SAMPLES, generated) == []


def test_every_member_of_every_sample_class_has_a_twin(twins: ModuleType) -> None:
    for async_class in ASYNC_CLASSES:
        sync_class = getattr(twins, async_class.__name__.removeprefix("Async"))
        assert missing_twin_members(async_class, sync_class) == []
    assert isinstance(inspect.getattr_static(twins.Node, "path"), property)  # from __init__
    assert isinstance(inspect.getattr_static(twins.Session, "closed"), property)


def test_what_calls_return_is_a_twin_chosen_by_the_objects_class(root: Any, twins: Any) -> None:
    a = root["a"]  # annotated as a node: a container at run time
    assert type(a) is twins.Container
    x = a["x"]
    assert type(x) is twins.ArrayClient
    assert x.read(1, 3) == [2, 3]
    assert type(twins.Node.lookup("/a/x", root.store)) is twins.ArrayClient
    assert type(x.parent()) is twins.Container
    assert root.parent() is None


def test_unions_optionals_and_containers_of_facade_objects_come_back_as_twins(
    root: Any, twins: Any
) -> None:
    a = root["a"]
    assert type(a.child("x")) is twins.ArrayClient
    assert type(a.child("y")) is twins.Container
    assert a.child("missing") is None
    assert type(a.newest()) is twins.Container
    assert root["b"].newest() == "empty"
    children = a.children()
    assert isinstance(children, tuple)
    assert [type(c) for c in children] == [twins.ArrayClient, twins.Container]
    first, count = a.first_with_count()
    assert (type(first), count) == (twins.ArrayClient, 2)
    assert [(name, type(node)) for name, node in a.named()] == [
        ("x", twins.ArrayClient),
        ("y", twins.Container),
    ]
    assert {k: type(v) for k, v in a.by_name().items()} == {
        "x": twins.ArrayClient,
        "y": twins.Container,
    }
    assert {k: [n.path for n in v] for k, v in root.grouped().items()} == {
        "container": ["/a", "/b"],
        "array": ["/c"],
    }
    for value in (children, a.named(), a.by_name(), root.grouped(), root.values()[:2]):
        assert_no_async_object(value)


def test_a_pager_of_facade_objects_hands_out_twins(root: Any, twins: Any) -> None:
    pager = root.listing(page_size=2)
    assert isinstance(pager, Pager)
    first = pager.first_page()
    assert [type(n) for n in first.items] == [twins.Container, twins.Container]
    assert_no_async_object(first)
    assert [n.path for n in pager] == ["/a", "/b", "/c"]
    assert [len(page.items) for page in pager.pages()] == [2, 1]
    assert_no_async_object(list(pager))


def test_module_constants_are_defaults_imported_by_the_twins(root: Any, twins: Any) -> None:
    listing = inspect.signature(twins.Container.listing).parameters
    assert listing["page_size"].default == nodes.DEFAULT_PAGE_SIZE
    assert listing["limit"].default == 30  # REMOTE_PAGE_SIZE * 10, from another module
    assert inspect.signature(twins.Node.join).parameters["separator"].default == "/"
    assert len(root.listing().first_page().items) == nodes.DEFAULT_PAGE_SIZE


def test_static_and_class_methods(root: Any, twins: Any, store: nodes.Store) -> None:
    assert twins.Node.join("a", "b") == "/a/b"
    assert twins.Container.join("a", separator=".") == ".a"
    assert type(twins.Node.at("/a", store)) is twins.Node  # Self: the class it is called on
    assert type(twins.Container.at("/a", store)) is twins.Container

    class MyNode(twins.Node):  # type: ignore[misc, name-defined]
        pass

    assert type(MyNode.at("/a", store)) is MyNode
    assert type(MyNode.lookup("/c", store)) is twins.ArrayClient  # another class's object


def test_the_hierarchy_is_mirrored_with_inherited_init(twins: Any, store: nodes.Store) -> None:
    assert issubclass(twins.Container, twins.Node)
    assert issubclass(twins.ArrayClient, twins.Node)
    container = twins.Container("/a", store)  # Node's __init__, for an AsyncContainer
    assert type(container._async) is nodes.AsyncContainer
    array = twins.ArrayClient("/a/x", store, dtype="int8")  # its own __init__
    assert (type(array._async), array.dtype, array.path) == (
        arrays.AsyncArrayClient,
        "int8",
        "/a/x",
    )
    assert type(container.sibling("b")) is twins.Container  # inherited, returns Self
    assert (twins.Container.kind, twins.ArrayClient.kind) == ("container", "array")
    assert repr(container) == "<Container '/a'>"


def test_a_container_is_a_real_mapping_with_indexable_views(root: Any, twins: Any) -> None:
    assert isinstance(root, collections.abc.Mapping)
    assert len(root) == 3
    assert list(root) == ["a", "b", "c"]
    assert "a" in root
    assert "zzz" not in root
    with pytest.raises(KeyError):
        root["zzz"]
    assert root.get("zzz") is None
    assert type(root.get("a")) is twins.Container
    assert list(root.keys()) == ["a", "b", "c"]
    assert [(k, v.path) for k, v in root.items()] == [("a", "/a"), ("b", "/b"), ("c", "/c")]
    values = root.values()
    assert isinstance(values, collections.abc.ValuesView)
    assert len(values) == 3
    assert values[0].path == "/a"
    assert values[-1].path == "/c"
    assert type(values[-1]) is twins.ArrayClient
    assert [v.path for v in values[:2]] == ["/a", "/b"]
    assert [v.path for v in values] == ["/a", "/b", "/c"]
    assert root["a"] in values


def test_async_iterators_become_iterators_that_close_when_left(
    root: Any, twins: Any, store: nodes.Store
) -> None:
    assert [n.path for n in root.walk()] == ["/a", "/a/x", "/a/y", "/b", "/c"]
    assert [n.path for n in root.cursor()] == ["/a", "/b", "/c"]  # returned by a coroutine
    assert list(root["a"]["x"].iter_blocks(2)) == [[1, 2], [3, 4], [5]]
    assert store.walking == 0
    for node in root.walk():
        assert store.walking == 1
        assert type(node) is twins.Container
        break
    assert store.walking == 0  # leaving the loop closed the async generator on the loop
    walk = root.walk()
    next(walk)
    del walk
    assert store.walking == 0


def test_context_managers_hold_one_task_from_enter_to_exit(root: Any, twins: Any) -> None:
    with root.session() as session:  # an @asynccontextmanager method
        assert type(session) is twins.Session
        assert type(session.container) is twins.Container
        assert session.names() == ["a", "b", "c"]
        assert not session.closed
    assert session.closed
    opened, closed = session.tasks[0], session.tasks[-1]
    assert opened is closed is not None  # anyio's cancel scope spans the yield: one task
    with root.connect("secret") as connection:  # a method returning an async context manager
        assert type(connection) is twins.Connection
        assert connection.open
        connection.send("one")
        connection.send("two")
        assert list(connection) == ["one", "two"]  # __aiter__/__anext__ as __iter__/__next__
    assert not connection.open
    with connection as again:  # the class's own __aenter__/__aexit__
        assert again is connection
        assert connection.open
    assert not connection.open


def test_context_managers_pass_exceptions_to_the_async_exit(root: Any) -> None:
    with root.connect("t") as connection:
        raise Dropped  # the async __aexit__ suppresses it
    assert not connection.open
    with pytest.raises(ZeroDivisionError), root.connect("t") as connection:
        1 / 0  # noqa: B018
    assert not connection.open
    with pytest.raises(ZeroDivisionError), root.session() as session:
        1 / 0  # noqa: B018
    assert session.closed


def test_twins_passed_as_arguments_reach_the_async_code_unwrapped(root: Any) -> None:
    assert root.link("l", root["a"]) == "l->/a"
    assert root.count_nodes([root["a"], root["b"]], extra=root["c"]) == 3
    assert root.count_nodes((), extra=None) == 0


def test_plain_members_that_touch_loop_state_run_on_the_loop_thread(
    root: Any, store: nodes.Store
) -> None:
    a, x = root["a"], root["a"]["x"]
    for use in (lambda: a.name, lambda: x.shape, lambda: a.sibling("b")):
        del store.threads[:]
        use()
        assert store.threads == ["aiosdk-sync-loop"]
    del store.threads[:]
    x.dtype = "float32"  # a property's setter
    assert (store.threads, x.dtype) == (["aiosdk-sync-loop"], "float32")
    del store.threads[:]
    assert a.revision == 1  # only reads attributes: the caller's thread, no hand-off
    assert store.threads == [threading.current_thread().name]


def test_failures_show_the_callers_and_the_async_codes_frames(
    root: Any, twins: Any, store: nodes.Store
) -> None:
    with pytest.raises(LookupError) as info:
        root.fail()
    frames = traceback.extract_tb(info.value.__traceback__)
    assert [f.name for f in frames] == [
        "test_failures_show_the_callers_and_the_async_codes_frames",
        "fail",
        "fail",
        "_deeper",
    ]
    # The second is the twin's own frame: Python records every frame a failure passes through.
    assert frames[1].filename.endswith("samples_sync/nodes.py")
    assert [Path(f.filename).name for f in frames[2:]] == ["nodes.py", "nodes.py"]
    assert frames[2].filename == nodes.__file__
    with pytest.raises(KeyError) as info:
        next(iter(twins.ArrayClient("/gone", store).iter_blocks()))  # no facade frame at all
    names = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert names[-1] == "iter_blocks"
    assert "next_done" not in names


def test_a_failure_to_enter_shows_one_facade_frame_at_most(root: Any, twins: Any) -> None:
    with pytest.raises(PermissionError) as info, root.connect("revoked"):
        pass
    frames = traceback.extract_tb(info.value.__traceback__)
    assert [f.name for f in frames][-1] == "__aenter__"
    facade = [f for f in frames if not f.filename.startswith((__file__, sessions.__file__))]
    assert [f.name for f in facade] == ["__enter__"]  # the context manager the call returned
    connection = twins.Connection._wrap(sessions.AsyncConnection("revoked"))
    with pytest.raises(PermissionError) as info, connection:
        pass
    frames = traceback.extract_tb(info.value.__traceback__)
    facade = [f for f in frames if not f.filename.startswith((__file__, sessions.__file__))]
    assert [(Path(f.filename).name, f.name) for f in facade] == [("sessions.py", "__enter__")]
    assert "samples_sync" in facade[0].filename  # the twin's own __enter__, nothing under it


def test_docstrings_are_carried_over_in_sync_words(twins: Any) -> None:
    assert twins.Container.__doc__.startswith("A container of nodes, by name.")
    assert "``container[name]`` gives a child, ``for name in container`` the names." in (
        twins.Container.__doc__
    )
    assert "async only" not in twins.Container.__doc__
    assert twins.Container.walk.__doc__ == nodes.AsyncContainer.walk.__doc__


def test_twins_cross_reference_each_other_without_import_cycles(
    generated: Path, tmp_path: Path
) -> None:
    # Generated in the reverse order, the package's __init__ imports arrays (which subclasses
    # a twin of nodes.py and names containers) before anything else.
    package = "samples_sync_reversed"
    reverse = replace(SAMPLES, facades=list(reversed(SAMPLES.facades)), package=package)
    write(reverse, tmp_path / package)
    for module in ("arrays", "sessions", "containers", "nodes"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {package}.{module}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PYTHONPATH": f"{tmp_path}:{TESTS}:{ROOT}"},
        )
        assert result.returncode == 0, result.stderr


def test_verification_fails_on_code_that_does_not_import_or_type_check(
    generated: Path, tmp_path: Path
) -> None:
    broken = tmp_path / SAMPLES.package
    shutil.copytree(generated, broken)
    arrays_py = broken / "arrays.py"
    source = arrays_py.read_text()
    arrays_py.write_text(source.replace("-> list[int]:", "-> list[str]:", 1))
    assert "mypy found errors" in "".join(verify(SAMPLES, broken))
    arrays_py.write_text(source + "\nfrom samples_sync.missing import Nothing\n")
    assert "importing the generated modules failed" in "".join(verify(SAMPLES, broken))


def test_a_stale_generated_file_does_not_stop_regeneration(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "aiosdk", copy / "aiosdk", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    stale = copy / "aiosdk" / "_sync" / "tokens.py"
    stale.write_text("raise NameError('DEFAULT_PAGE_SIZE')  # what a stale facade did\n")
    broken = subprocess.run([sys.executable, "-c", "import aiosdk"], cwd=copy, capture_output=True)
    assert broken.returncode != 0
    run = subprocess.run(
        [sys.executable, "aiosdk/_codegen/sync_facade.py"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert stale.read_text() == (ROOT / "aiosdk" / "_sync" / "tokens.py").read_text()
    check = subprocess.run(
        [sys.executable, "-m", "aiosdk._codegen.sync_facade", "--check"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_the_generator_refuses_what_it_cannot_twin(tmp_path: Path) -> None:
    source = tmp_path / "odd.py"
    source.write_text(
        textwrap.dedent(
            """
            from collections.abc import AsyncIterator
            import functools

            class AsyncOdd:
                async def upload(self, chunks: AsyncIterator[bytes]) -> None: ...

            class AsyncCached:
                @functools.lru_cache
                def size(self) -> int: ...
            """
        )
    )
    for name, message in [("AsyncOdd", "async-only argument"), ("AsyncCached", "no twin for")]:
        odd = Target([Facade("odd", name, "odd")], "odd_sync", [tmp_path])
        with pytest.raises(GenerationError, match=message):
            write(odd, tmp_path / "odd_sync")
