"""``aiosdk ls``, ``aiosdk tree``, ``aiosdk meta`` and ``aiosdk search``: the catalog from a shell.

Every command connects as a client does: ``--url`` (else ``$AIOSDK_URL``), ``--profile`` (else
``$AIOSDK_PROFILE``), and the token of ``$AIOSDK_TOKEN``, of the profile, or of the login that
``aiosdk login`` remembered. A token is never an argument.

On a terminal (and with ``rich``, the ``cli`` extra, installed) the output is tables and trees;
otherwise it is plain text in aligned columns. ``--json`` prints one JSON document for scripts:
for ``ls`` and ``search`` an array of node objects, for ``tree`` the node with nested
``children``, for ``meta`` the node. Errors are one line on stderr: status 1 for what the
server refused (not found, permission, a bad query, a conflict), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._connect import (
    UsageError,
    bounded,
    command,
    connection_arguments,
    container_at,
    nested,
    node_at,
    pair,
    path_argument,
    raw_pair,
)

if TYPE_CHECKING:
    from rich.console import Console

    from .. import AsyncClient
    from ..catalog import AsyncContainer, AsyncNode
    from ._common import Subparsers

__all__ = ["register"]

_MAX_DEPTH = 32  # a path has at most 32 segments
_METADATA_WIDTH = 60  # characters of compact metadata in `ls --long`


def register(commands: Subparsers) -> None:
    """Add ``ls``, ``tree``, ``meta`` (``show``, ``set``, ``patch``) and ``search``."""
    ls = commands.add_parser(
        "ls",
        help="list the children of a catalog container",
        description="List the children of PATH (default: the root, whose children are the"
        " namespaces you may read): key, structure family, revision and last update.",
    )
    path_argument(ls, optional=True)
    ls.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="also show specs, tags, public, creation time and metadata",
    )
    _limit_argument(ls)
    _json_argument(ls, "print a JSON array of node objects")
    connection_arguments(ls)
    ls.set_defaults(run=_command("ls", _ls))

    tree = commands.add_parser(
        "tree",
        help="show a catalog container and what is below it, as a tree",
        description="Show PATH (default: the root) and its descendants down to --depth levels.",
    )
    path_argument(tree, optional=True)
    tree.add_argument(
        "-d",
        "--depth",
        type=bounded(1, _MAX_DEPTH),
        default=3,
        metavar="N",
        help=f"how many levels below PATH to show (1-{_MAX_DEPTH}, default: 3)",
    )
    _json_argument(tree, "print the node as JSON, containers with their nested 'children'")
    connection_arguments(tree)
    tree.set_defaults(run=_command("tree", _tree))

    meta = commands.add_parser(
        "meta",
        help="show or change the metadata of a catalog node",
        description="Show, set or patch the metadata of a node. Every change carries the"
        " revision the node was read at: if someone changed it in between, nothing is"
        " written and the command says so.",
    )
    actions = meta.add_subparsers(title="actions", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="show a node and its metadata",
        description="Show the node at PATH: family, namespace, revision, times, specs, tags"
        " and its metadata.",
    )
    path_argument(show)
    _json_argument(show, "print the node object as JSON")
    connection_arguments(show)
    show.set_defaults(run=_command("meta show", _meta_show))

    set_ = actions.add_parser(
        "set",
        help="set metadata keys of a node",
        description="Set KEY to VALUE in the metadata of PATH; the other keys are kept (with"
        " --replace, the metadata becomes exactly the pairs given). VALUE is read as JSON when"
        ' it is JSON (42, 1.5, true, null, [1, 2], {"a": 1}, "quoted"), else as a string.'
        " A dotted KEY (a.b=1) sets a nested key.",
    )
    path_argument(set_)
    set_.add_argument("pairs", nargs="*", metavar="KEY=VALUE", type=pair, help="the keys to set")
    set_.add_argument(
        "--replace",
        action="store_true",
        help="replace the whole metadata with the pairs given (none: empty it)",
    )
    _json_argument(set_, "print the updated node as JSON")
    connection_arguments(set_)
    set_.set_defaults(run=_command("meta set", _meta_set, _prepare_set))

    patch = actions.add_parser(
        "patch",
        help="patch the metadata of a node (RFC 6902 JSON Patch or RFC 7386 merge patch)",
        description="Apply a JSON Patch (RFC 6902: an array of operations) or a JSON merge"
        " patch (RFC 7386: an object; null removes a key) read from FILE, or stdin for '-'.",
    )
    path_argument(patch)
    form = patch.add_mutually_exclusive_group(required=True)
    form.add_argument("--json-patch", metavar="FILE", help="an RFC 6902 patch ('-': stdin)")
    form.add_argument("--merge", metavar="FILE", help="an RFC 7386 merge patch ('-': stdin)")
    _json_argument(patch, "print the updated node as JSON")
    connection_arguments(patch)
    patch.set_defaults(run=_command("meta patch", _meta_patch, _prepare_patch))

    search = commands.add_parser(
        "search",
        help="find the children of a catalog container by their metadata",
        description="List the children of PATH whose metadata match every condition given."
        " KEY is a metadata key, dotted for nested keys (a.b); VALUE is read as JSON when it"
        ' is JSON (42, true, null, "42" for the string), else as a string. Sort by metadata'
        " keys or _key, _created_at, _updated_at, _structure_family, _revision; a '-' prefix"
        " sorts descending (write --sort=-FIELD, so that it is not read as an option).",
    )
    path_argument(search)
    conditions = search.add_argument_group("conditions (each may be repeated; all must hold)")
    for flag, meaning in _COMPARISONS.items():
        conditions.add_argument(
            f"--{flag}",
            action="append",
            default=[],
            type=pair,
            metavar="KEY=VALUE",
            help=meaning,
        )
    conditions.add_argument(
        "--contains",
        action="append",
        default=[],
        type=pair,
        metavar="KEY=VALUE",
        help="KEY is a list holding VALUE",
    )
    conditions.add_argument(
        "--regex",
        action="append",
        default=[],
        type=raw_pair,
        metavar="KEY=PATTERN",
        help="KEY is a string matching the regular expression PATTERN (taken as is)",
    )
    conditions.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="WORDS",
        help="every word appears (case-insensitive) among the metadata values",
    )
    search.add_argument(
        "--sort",
        action="append",
        default=[],
        metavar="FIELD",
        help="sort by FIELD ('-FIELD': descending); repeat for ties (default: by key)",
    )
    _limit_argument(search)
    _json_argument(search, "print a JSON array of node objects")
    connection_arguments(search)
    search.set_defaults(run=_command("search", _search, _prepare_search))


_COMPARISONS = {
    "eq": 'KEY equals VALUE (type-aware: 1 is not "1")',
    "ne": "KEY is absent or differs from VALUE",
    "lt": "KEY < VALUE (numbers with numbers, strings with strings)",
    "le": "KEY <= VALUE",
    "gt": "KEY > VALUE",
    "ge": "KEY >= VALUE",
}


# --- arguments ---------------------------------------------------------------------------


def _limit_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--limit",
        type=bounded(1, None),
        metavar="N",
        help="show at most N entries (default: all)",
    )


def _json_argument(parser: argparse.ArgumentParser, meaning: str) -> None:
    parser.add_argument("--json", action="store_true", help=meaning)


# --- running a command -------------------------------------------------------------------

CatalogWork = Callable[["AsyncClient", argparse.Namespace, "_Output"], Awaitable[int]]


def _command(
    name: str, work: CatalogWork, prepare: Callable[[argparse.Namespace], None] | None = None
) -> Callable[[argparse.Namespace], int]:
    """A catalog command: :func:`command`, with ``work`` also given where to print."""

    async def printing(client: AsyncClient, args: argparse.Namespace) -> int:
        return await work(client, args, _Output(args))

    return command(name, printing, prepare)


# --- ls ----------------------------------------------------------------------------------


async def _ls(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    container = await container_at(client, args.path)
    await _listing(out, container, args, long=args.long, extra=())
    return 0


async def _listing(
    out: _Output,
    container: AsyncContainer,
    args: argparse.Namespace,
    *,
    long: bool,
    extra: Sequence[str],
) -> None:
    """Print the entries of ``container`` (a listing or a search): JSON, or a table."""
    values = container.values()
    if args.json and args.limit is None:
        await out.json_array(_node_json(node) async for node in values)
        return
    if args.limit is None:
        nodes = [node async for node in values]
        more = False
    else:
        nodes = list(await values[: args.limit + 1])
        more = len(nodes) > args.limit
        nodes = nodes[: args.limit]
    if args.json:
        await out.json_array(_aiter(_node_json(node) for node in nodes))
    else:
        columns = ["KEY", "FAMILY", "REVISION", "UPDATED", *extra]
        if long:
            columns += ["SPECS", "TAGS", "PUBLIC", "CREATED", "METADATA"]
        out.table(columns, [_row(node, long=long, extra=extra) for node in nodes])
    if more:
        print(f"(more entries not shown: --limit {args.limit})", file=sys.stderr)


def _row(node: AsyncNode, *, long: bool, extra: Sequence[str]) -> list[str]:
    row = [node.key, node.structure_family, str(node.revision), _when(node.updated_at)]
    row += [_cell(_dotted(node.metadata, key)) for key in extra]
    if long:
        row += [
            ",".join(node.specs) or "-",
            ",".join(node.tags) or "-",
            "yes" if node.public else "no",
            _when(node.created_at),
            _compact(node.metadata, _METADATA_WIDTH),
        ]
    return row


_MISSING = object()


def _dotted(metadata: Mapping[str, Any], key: str) -> Any:
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _cell(value: Any) -> str:
    if value is _MISSING:
        return "-"
    if isinstance(value, str):
        return value
    return _compact(value, _METADATA_WIDTH)


def _compact(value: Any, width: int) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_jsonable)
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --- tree --------------------------------------------------------------------------------


@dataclass
class _Branch:
    node: AsyncNode | None  # None: the catalog's root
    children: list[_Branch] | None = field(default=None)  # None: not expanded


async def _tree(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    start = await node_at(client, args.path)
    top = _Branch(None if not args.path else start)
    lookups = asyncio.Semaphore(8)  # sibling containers are listed concurrently, a few at a time
    await _grow(top, start, args.depth, lookups)
    if args.json:
        out.json(_branch_json(top))
    else:
        out.tree(top)
    return 0


async def _grow(branch: _Branch, node: AsyncNode, depth: int, lookups: asyncio.Semaphore) -> None:
    from ..catalog import AsyncContainer

    if depth == 0 or not isinstance(node, AsyncContainer):
        return
    async with lookups:
        children = [child async for child in node.values()]
    branch.children = [_Branch(child) for child in children]
    await asyncio.gather(
        *(
            _grow(sub, child, depth - 1, lookups)
            for sub, child in zip(branch.children, children, strict=True)
        )
    )


def _branch_json(branch: _Branch) -> dict[str, Any]:
    out: dict[str, Any] = {"key": "", "path": "", "structure_family": "container"}
    if branch.node is not None:
        out = _node_json(branch.node)
    if branch.children is not None:
        out["children"] = [_branch_json(child) for child in branch.children]
    return out


def _label(node: AsyncNode) -> str:
    if node.structure_family == "container":
        return node.key + "/"
    return f"{node.key}  ({node.structure_family})"


# --- meta --------------------------------------------------------------------------------


async def _meta_show(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    node = await node_at(client, args.path)
    if args.json:
        out.json(_node_json(node))
    else:
        out.node(node)
    return 0


async def _meta_set(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    node = await node_at(client, args.path)
    if args.replace:
        await node.replace_metadata(args.metadata)
    else:
        await node.update_metadata(args.metadata)
    _report_write(out, args, node)
    return 0


def _prepare_set(args: argparse.Namespace) -> None:
    if not args.pairs and not args.replace:
        raise UsageError("nothing to set: give KEY=VALUE pairs (or --replace to empty it)")
    if not args.path:
        raise UsageError("the catalog root has no metadata: give the PATH of a node")
    args.metadata = nested(args.pairs)


async def _meta_patch(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    from ..catalog.metadata import MERGE_PATCH

    node = await node_at(client, args.path)
    if args.json_patch is not None:
        await node.patch_metadata(args.patch)
    else:
        await node.patch_metadata(args.patch, content_type=MERGE_PATCH)
    _report_write(out, args, node)
    return 0


def _prepare_patch(args: argparse.Namespace) -> None:
    if not args.path:
        raise UsageError("the catalog root has no metadata: give the PATH of a node")
    source = args.json_patch if args.json_patch is not None else args.merge
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text") from None
    try:
        patch = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where} is not JSON: {exc}") from None
    if args.json_patch is not None and not isinstance(patch, list):
        raise UsageError(f"a JSON Patch is an array of operations; {where} holds no array")
    if args.merge is not None and not isinstance(patch, dict):
        raise UsageError(f"a merge patch is a JSON object; {where} holds no object")
    args.patch = patch


def _report_write(out: _Output, args: argparse.Namespace, node: AsyncNode) -> None:
    if args.json:
        out.json(_node_json(node))
    else:
        print(f"Updated {node.path}: revision {node.revision}.")


# --- search ------------------------------------------------------------------------------


async def _search(client: AsyncClient, args: argparse.Namespace, out: _Output) -> int:
    found = await container_at(client, args.path)
    for query in args.queries:
        found = found.search(query)
    if args.order:
        found = found.sort(*args.order)
    await _listing(out, found, args, long=False, extra=args.shown)
    return 0


def _prepare_search(args: argparse.Namespace) -> None:
    """The queries and the sorting of the arguments, checked before anything is asked."""
    from ..catalog import FullText, Key

    queries: list[Any] = []
    shown: list[str] = []  # the metadata keys a condition or the sort names: columns to show
    try:
        for flag in _COMPARISONS:
            for key, value in getattr(args, flag):
                queries.append(_compare(Key(key), flag, value))
                shown.append(key)
        for key, value in args.contains:
            queries.append(Key(key).contains(value))
            shown.append(key)
        for key, pattern in args.regex:
            queries.append(Key(key).regex(pattern))
            shown.append(key)
        queries += [FullText(words) for words in args.text]
    except ValueError as exc:  # a key or value the client refuses (ConfigurationError)
        raise UsageError(exc) from None
    args.queries = queries
    args.order = _sorting(args.sort)
    shown += [name for name, _ in args.order if not name.startswith("_")]
    args.shown = list(dict.fromkeys(shown))


def _sorting(fields: Iterable[str]) -> list[tuple[str, int]]:
    """``--sort`` fields as (field, direction) pairs: ``-temperature`` is descending."""
    from ..catalog import ASCENDING, DESCENDING

    order = []
    for text in fields:
        name = text.removeprefix("-")
        if not name:
            raise UsageError("--sort needs a field name")
        order.append((name, DESCENDING if text.startswith("-") else ASCENDING))
    return order


def _compare(key: Any, flag: str, value: Any) -> Any:
    if flag == "eq":
        return key == value
    if flag == "ne":
        return key != value
    if flag == "lt":
        return key < value
    if flag == "le":
        return key <= value
    if flag == "gt":
        return key > value
    return key >= value


# --- JSON --------------------------------------------------------------------------------


def _node_json(node: AsyncNode) -> dict[str, Any]:
    """The node as the server described it (``NodeModel``), for ``--json``."""
    return node.item


def _plain(value: Any) -> Any:
    """A read-only metadata view as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


async def _aiter(items: Iterable[Any]) -> Any:
    for item in items:
        yield item


# --- output ------------------------------------------------------------------------------


class _Output:
    """Where a command prints: a rich console on a terminal, else plain text."""

    def __init__(self, args: argparse.Namespace, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.console = None if args.json else _terminal(self.stream)

    def json(self, document: Any) -> None:
        print(
            json.dumps(document, indent=2, ensure_ascii=False, default=_jsonable), file=self.stream
        )

    async def json_array(self, documents: Any) -> None:
        """One JSON array, written as the documents come (a long listing streams)."""
        first = True
        async for document in documents:
            text = json.dumps(document, ensure_ascii=False, default=_jsonable)
            self.stream.write(("[\n  " if first else ",\n  ") + text)
            first = False
        self.stream.write("[]\n" if first else "\n]\n")
        self.stream.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self.console is not None:
            from rich.table import Table
            from rich.text import Text

            table = Table(box=None, header_style="bold", pad_edge=False)
            for name in columns:
                table.add_column(name, justify="right" if name == "REVISION" else "left")
            for row in rows:
                table.add_row(*(Text(_printable(cell)) for cell in row))
            self.console.print(table)
            return
        cells = [list(columns), *[[_printable(cell) for cell in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for row in cells:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print(line.rstrip(), file=self.stream)

    def tree(self, top: _Branch) -> None:
        title = "/" if top.node is None else _label(top.node)
        if self.console is not None:
            from rich.text import Text
            from rich.tree import Tree

            def grow(into: Tree, branch: _Branch) -> None:
                for child in branch.children or ():
                    assert child.node is not None
                    grow(into.add(Text(_printable(_label(child.node)))), child)

            root = Tree(Text(_printable(title if top.node is None else top.node.path + "/")))
            grow(root, top)
            self.console.print(root)
            return
        print(_printable("/" if top.node is None else _path_label(top.node)), file=self.stream)
        self._plain_branch(top, "")

    def _plain_branch(self, branch: _Branch, prefix: str) -> None:
        children = branch.children or []
        for i, child in enumerate(children):
            assert child.node is not None
            last = i == len(children) - 1
            print(
                prefix + ("└── " if last else "├── ") + _printable(_label(child.node)),
                file=self.stream,
            )
            self._plain_branch(child, prefix + ("    " if last else "│   "))

    def node(self, node: AsyncNode) -> None:
        facts = [
            ("path", node.path),
            ("family", node.structure_family),
            ("namespace", node.namespace),
            ("revision", str(node.revision)),
            ("created", _when(node.created_at)),
            ("updated", _when(node.updated_at)),
            ("specs", ", ".join(node.specs) or "-"),
            ("tags", ", ".join(node.tags) or "-"),
            ("public", "yes" if node.public else "no"),
        ]
        if node.file_type:
            facts.append(("file type", node.file_type))
        text = json.dumps(_plain(node.metadata), indent=2, ensure_ascii=False, default=_jsonable)
        # JSON escapes C0 controls but not C1 ones or bidi overrides: escape them for the terminal
        metadata = "\n".join(_printable(line) for line in text.splitlines())
        if self.console is not None:
            from rich.json import JSON
            from rich.table import Table
            from rich.text import Text

            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column()
            for name, value in facts:
                grid.add_row(name, Text(_printable(value)))
            self.console.print(grid)
            self.console.print(Text("metadata", style="bold"))
            self.console.print(JSON(metadata))
            return
        width = max(len(name) for name, _ in facts)
        for name, value in facts:
            print(f"{name.ljust(width)}  {_printable(value)}", file=self.stream)
        print("metadata", file=self.stream)
        print(metadata, file=self.stream)


def _path_label(node: AsyncNode) -> str:
    return node.path + "/" if node.structure_family == "container" else _label(node)


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so that a metadata value cannot drive the
    terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _terminal(stream: IO[str]) -> Console | None:
    """A rich console when ``stream`` is a terminal and rich is installed, else ``None``."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False)
