"""Generate the blocking facade (``aiosdk/_sync``) from the source of the async classes.

Each async class listed in :data:`FACADES` gets a sync twin with the same members, signatures and
docstrings, read from source (the package is never imported to generate it, so a broken
generated module cannot stop its own regeneration). A twin subclasses the twins of its async
class's bases, so the hierarchy is mirrored, and wraps one async object:

- coroutines become blocking calls on the facade's loop thread (``aiosdk._core.portal``);
- what a call returns is converted by walking its annotation (unions, ``Optional``, lists,
  tuples, dicts, ``AsyncPager[...]``...) and, at run time, by the object's class: every async
  facade object a sync caller receives is its twin, inside containers too; twins passed as
  arguments reach the async code unwrapped;
- async iterators (async generators, or coroutines and methods that return one) become
  iterators, and async context managers (``@asynccontextmanager`` methods, methods returning
  one, ``__aenter__``/``__aexit__``) become context managers that one task holds open;
- ``__aiter__``, ``__anext__``, ``__len__``, ``__getitem__``, ``__contains__`` (and the other
  container methods, ``async def`` or not) become their sync protocol methods, so a twin can be
  a real ``collections.abc.Mapping`` (``Facade(abc=...)``);
- static and class methods stay so; public attributes become read-only properties;
- plain (non-async) methods and properties run on the loop thread, so that they never race the
  loop over the state it owns, unless all they do is read attributes (``return self._x.y``),
  which runs on the caller's thread (a hand-off costs about as much as the bare round trip of
  benchmarks/bench_client.py (b); an attribute read, nothing).

Twins name each other only for type checkers (and their base classes at run time), so cross
references cannot make circular imports. Generating, and ``--check`` (which also fails when the
committed code is stale), import every generated module and type-check them with mypy, and fail
on any error. Shapes the generator cannot give a faithful twin are refused by name.

Run ``python aiosdk/_codegen/sync_facade.py`` (or ``python -m aiosdk._codegen.sync_facade``) to
rewrite the files, ``--check`` to verify them.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:  # python -m aiosdk._codegen.sync_facade, and the tests
    from .facade import Catalog, Facade, GenerationError, Renderer, Target
except ImportError:  # python aiosdk/_codegen/sync_facade.py: aiosdk itself is never imported
    from facade import (  # type: ignore[import-not-found, no-redef]
        Catalog,
        Facade,
        GenerationError,
        Renderer,
        Target,
    )

__all__ = [
    "AIOSDK",
    "FACADES",
    "TESTING_FACADES",
    "Facade",
    "GenerationError",
    "Target",
    "stale",
    "verify",
    "write",
]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "aiosdk" / "_sync"

FACADES = [
    Facade("aiosdk._core.paging", "AsyncPager", "paging"),
    Facade("aiosdk.accounts.tokens", "AsyncTokens", "tokens"),
    Facade("aiosdk.accounts.admin", "AsyncAdmin", "admin"),
    Facade("aiosdk.catalog.nodes", "AsyncNode", "nodes"),
    Facade("aiosdk.catalog.containers", "AsyncContainer", "containers", abc="Mapping[str, Node]"),
    Facade("aiosdk.catalog.views", "AsyncContainerKeys", "views", abc="KeysView[str]"),
    Facade("aiosdk.catalog.views", "AsyncContainerValues", "views", abc="ValuesView[Node]"),
    Facade("aiosdk.catalog.views", "AsyncContainerItems", "views", abc="ItemsView[str, Node]"),
    Facade("aiosdk.catalog.arrays", "AsyncArrayClient", "arrays"),
    Facade("aiosdk.catalog.tables", "AsyncTableClient", "tables"),
    Facade("aiosdk.catalog.sparse", "AsyncSparseClient", "sparse"),
    Facade("aiosdk.catalog.datasets", "AsyncDatasetClient", "datasets", abc="Mapping[str, Node]"),
    Facade("aiosdk.tickets.session", "AsyncSession", "tickets"),
    Facade("aiosdk.tickets.session", "AsyncPluginObject", "tickets"),
    Facade("aiosdk.channels.service", "AsyncChannels", "channels"),
    Facade("aiosdk.channels.connection", "AsyncChannelConnection", "channel_connection"),
    Facade("aiosdk.objects.service", "AsyncObjects", "objects"),
    Facade("aiosdk._client", "AsyncClient", "client", constructible=True),
]
"""The public facade: each twin is exported from ``aiosdk`` too."""
TESTING_FACADES = [
    Facade("aiosdk.testing.accounts", "AsyncAccounts", "testing", constructible=True),
]
"""Twins for :mod:`aiosdk.testing` (the pytest plugin's blocking fixtures): generated with the
others, into ``aiosdk._sync``, but not part of the ``aiosdk`` namespace."""
AIOSDK = Target([*FACADES, *TESTING_FACADES], "aiosdk._sync", [ROOT])


def write(target: Target, into: Path) -> None:
    """Generate ``target``'s twins into ``into`` (formatted with the pinned ruff)."""
    files = Renderer(Catalog(target)).files()
    into.mkdir(parents=True, exist_ok=True)
    for old in into.glob("*.py"):
        if old.name not in files:
            old.unlink()
    for name, source in files.items():
        (into / name).write_text(source)
    paths = sorted(str(into / name) for name in files)
    config = str(ROOT / "pyproject.toml")
    ruff = [sys.executable, "-m", "ruff"]
    fix = [*ruff, "check", "--config", config, "--fix-only", "--select", "F401,I,UP", "-q"]
    subprocess.run([*fix, *paths], check=True)
    subprocess.run([*ruff, "format", "--config", config, "-q", *paths], check=True)


def verify(target: Target, directory: Path) -> list[str]:
    """Import every generated module, and type-check them (mypy, strict); the problems found."""
    top = directory.parents[len(target.package.split(".")) - 1]  # where the package is found
    roots = [*target.roots, *(root for used in target.uses for root in used.roots)]
    path = os.pathsep.join(map(str, [top, *roots]))
    env = {**os.environ, "PYTHONPATH": path, "MYPYPATH": path}
    modules = [target.package] + [
        f"{target.package}.{p.stem}" for p in sorted(directory.glob("*.py")) if p.stem != "__init__"
    ]
    problems = []
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *modules],
        capture_output=True,
        text=True,
        env=env,
        cwd=top,
    )
    if imported.returncode:
        problems.append(f"importing the generated modules failed:\n{imported.stderr}")
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    checked = subprocess.run(
        [
            *mypy,
            "--follow-imports=silent",  # errors of the async code are `nox -s typecheck`'s
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "sync_facade"),
            "-p",
            target.package,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=top,
    )
    if checked.returncode:
        problems.append(f"mypy found errors in the generated modules:\n{checked.stdout}")
    return problems


IMPORT_ALL = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"


def stale(target: Target, directory: Path) -> list[str]:
    """The differences between what ``directory`` holds and what the generator makes now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh"
        write(target, fresh)
        diffs = []
        names = {p.name for p in fresh.glob("*.py")} | {p.name for p in directory.glob("*.py")}
        for name in sorted(names):
            new = (fresh / name).read_text() if (fresh / name).exists() else ""
            old = (directory / name).read_text() if (directory / name).exists() else ""
            if new != old:
                diff = difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), f"committed/{name}", name
                )
                diffs.append("".join(diff))
        return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed code is stale or broken"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            diffs = stale(AIOSDK, OUTPUT)
            if diffs:
                sys.stderr.writelines(diffs)
                print("sync_facade: the committed facade is stale; regenerate it", file=sys.stderr)
                return 1
        else:
            write(AIOSDK, OUTPUT)
    except GenerationError as error:
        print(f"sync_facade: {error}", file=sys.stderr)
        return 2
    problems = verify(AIOSDK, OUTPUT)
    for problem in problems:
        print(f"sync_facade: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
