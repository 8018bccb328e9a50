"""``aiosdk get``, ``put``, ``export`` and ``copy``: data between the catalog and local files.

``get PATH [OUTPUT]`` reads a node's data through the client (blocks or partitions fetched
concurrently) and saves it; ``put FILE PATH`` uploads a local file as a new node; ``export PATH
OUTPUT`` streams what the server renders (``--list``: the formats it offers); ``copy SOURCE
DEST`` copies a node and everything below it into a container, on the same server or another.

Local formats, picked by the file's suffix (or ``--format`` for ``get``):

- arrays: ``.npy`` (the default), ``.csv`` (1-d or 2-d arrays of bools, ints or floats);
- tables: ``.parquet`` (the default), ``.arrow`` and ``.feather`` (the Arrow IPC file
  format), ``.csv``;
- sparse arrays: ``.npz`` (the default: the arrays ``coords``, ``data`` and ``shape``, what
  ``put`` reads back) or ``.npy`` (the dense array).

A saved file is written under a temporary name and renamed when complete, so an interrupted
command leaves no partial file; an existing file is kept unless ``--force``. ``-`` as OUTPUT
writes to stdout. Local files are read before the event loop starts and written in a worker
thread. A progress bar goes to stderr when it is a terminal (``--progress``/``--no-progress``
force it on or off; forced on in a pipe, it is a line of text every tenth of the way). numpy
and pyarrow come with the ``dataframe`` extra; without them these commands say so (status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._common import fail
from ._connect import (
    UsageError,
    WrongNode,
    bounded,
    command,
    connection_arguments,
    container_at,
    nested,
    node_at,
    pair,
    path_argument,
)

if TYPE_CHECKING:
    from .. import AsyncClient
    from .._core.progress import Progress
    from ..catalog import AsyncNode
    from ._common import Subparsers

__all__ = ["register"]

SUFFIXES = {
    "array": (".npy", ".csv"),
    "table": (".parquet", ".arrow", ".feather", ".csv"),
    "sparse": (".npz", ".npy"),
}
"""The local formats of each structure family, the default first."""
_NAMES = {"array": "an array", "table": "a table", "sparse": "a sparse array"}
_TABLE_FILES = SUFFIXES["table"]
_CSV_KINDS = "biuf"  # numpy dtype kinds that CSV text writes and reads back exactly
_STDOUT = "-"


def register(commands: Subparsers) -> None:
    """Add ``get``, ``put``, ``export`` and ``copy``."""
    get = commands.add_parser(
        "get",
        help="save the data of an array, table or sparse array to a local file",
        description="Read the data of PATH and save it to OUTPUT (default: KEY.SUFFIX in the"
        " current directory; '-': stdout). OUTPUT's suffix (or --format) picks the format:"
        " arrays .npy (default) or .csv (1-d/2-d); tables .parquet (default), .arrow, .feather"
        " or .csv; sparse arrays .npz (default: coords, data and shape) or .npy (dense).",
    )
    path_argument(get)
    get.add_argument("output", nargs="?", metavar="OUTPUT", help="the file to write ('-': stdout)")
    get.add_argument(
        "-f", "--format", type=_suffix, metavar="SUFFIX", help="the format (npy, csv, parquet...)"
    )
    get.add_argument(
        "--slice",
        type=_selection,
        metavar="SLICE",
        help="only this part of an array, numpy-style: 10:20,::2 or 5,...,-1"
        " (write --slice=-1: when it starts with '-')",
    )
    get.add_argument(
        "--columns",
        type=_names,
        action="extend",
        metavar="A,B",
        help="only these columns of a table (comma-separated; may be repeated)",
    )
    _force_argument(get)
    _progress_argument(get)
    connection_arguments(get)
    get.set_defaults(run=command("get", _get, _prepare_get))

    put = commands.add_parser(
        "put",
        help="upload a local file as a new array, table or sparse array",
        description="Create the node PATH (CONTAINER/KEY; the container must exist) holding"
        " FILE: an array from .npy, a table from .parquet, .arrow, .feather or .csv, a sparse"
        " array from .npz (the arrays coords, data and shape, as `aiosdk get` writes them).",
    )
    put.add_argument("file", type=Path, metavar="FILE", help="the local file to upload")
    path_argument(put, help="where to create it: CONTAINER/KEY")
    put.add_argument(
        "--chunks",
        type=_chunks,
        metavar="N,M",
        help="an array's chunk shape, e.g. 256,8192 (default: chosen for the array)",
    )
    put.add_argument(
        "--partitions",
        type=bounded(1, None),
        metavar="N",
        help="a table's number of partitions (default: by size)",
    )
    put.add_argument(
        "--metadata",
        action="append",
        default=[],
        type=pair,
        metavar="KEY=VALUE",
        help="a metadata key (repeatable; VALUE read as JSON when it is JSON; a.b=1 nests)",
    )
    put.add_argument(
        "--spec", action="append", default=[], metavar="SPEC", help="a spec (repeatable)"
    )
    _progress_argument(put)
    connection_arguments(put)
    put.set_defaults(run=command("put", _put, _prepare_put))

    export = commands.add_parser(
        "export",
        help="save the data of a node as the server renders it (npy, csv, parquet, json...)",
        description="Stream PATH's data, rendered by the server in --format (a media type or"
        " a suffix; default: OUTPUT's suffix), to OUTPUT ('-': stdout). --list prints the"
        " formats PATH can be exported in.",
    )
    path_argument(export)
    export.add_argument(
        "output", nargs="?", metavar="OUTPUT", help="the file to write ('-': stdout)"
    )
    export.add_argument(
        "-f", "--format", metavar="FORMAT", help="a media type or a suffix: text/csv, .parquet"
    )
    export.add_argument(
        "--list", action="store_true", help="print the formats PATH can be exported in"
    )
    _force_argument(export)
    _progress_argument(export)
    connection_arguments(export)
    export.set_defaults(run=command("export", _export, _prepare_export))

    copy = commands.add_parser(
        "copy",
        help="copy a node and everything below it into a container, here or on another server",
        description="Copy SOURCE (on the --url/--profile server) into the container DEST (on"
        " the --to-url/--to-profile server; default: the same one) with its metadata, specs"
        " and structure. Run again after an interruption, it writes only what is missing or"
        " differs.",
    )
    path_argument(copy, name="source", help="the node to copy: alice/experiments")
    path_argument(copy, name="dest", help="the container to copy it into: bob/inbox")
    copy.add_argument("--key", help="its key in DEST (default: SOURCE's key)")
    copy.add_argument(
        "-j",
        "--concurrency",
        type=bounded(1, 256),
        default=8,
        metavar="N",
        help="transfers in flight at once (default: 8)",
    )
    _progress_argument(copy)
    connection_arguments(copy)
    to = copy.add_argument_group("destination server (default: the source's)")
    to.add_argument("--to-url", metavar="URL", help="the server to copy to")
    to.add_argument("--to-profile", metavar="PROFILE", help="a profile to copy to")
    copy.set_defaults(run=command("copy", _copy, _prepare_copy))


# --- arguments ---------------------------------------------------------------------------


def _force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")


def _progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )


def _suffix(text: str) -> str:
    """``npy`` or ``.npy`` as ``.npy``."""
    return "." + text.lower().lstrip(".")


def _names(text: str) -> list[str]:
    names = text.split(",")
    if not all(names):
        raise argparse.ArgumentTypeError(f"an empty column name in {text!r}")
    return names


def _chunks(text: str) -> tuple[int, ...]:
    parse = bounded(1, None)
    return tuple(parse(part) for part in text.split(","))


def _selection(text: str) -> tuple[Any, ...]:
    """numpy's basic indexing as text: ``10:20,::2``, ``5``, ``...,-1``; ints, slices and one
    ``...``, parsed (never evaluated)."""
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if part == "...":
            if Ellipsis in out:
                raise argparse.ArgumentTypeError(f"more than one '...' in {text!r}")
            out.append(Ellipsis)
        elif ":" in part:
            bounds = part.split(":")
            if len(bounds) > 3:
                raise argparse.ArgumentTypeError(f"{part!r} is not START:STOP:STEP")
            values = [_slice_bound(bound, text) for bound in bounds]
            if len(values) == 3 and values[2] == 0:
                raise argparse.ArgumentTypeError(f"a step of 0 in {text!r}")
            out.append(slice(*values))
        else:
            value = _slice_bound(part, text)
            if value is None:
                raise argparse.ArgumentTypeError(f"an empty index in {text!r}")
            out.append(value)
    return tuple(out)


def _slice_bound(text: str, whole: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a slice: {whole!r} (whole numbers, ':' and '...' separated by commas)"
        ) from None


# --- progress ----------------------------------------------------------------------------


def _progress(args: argparse.Namespace, what: str) -> Progress:
    """What to pass as ``progress=``: a bar on a terminal (the client draws it), lines of text
    when forced on elsewhere, else nothing."""
    terminal = sys.stderr is not None and sys.stderr.isatty()
    wanted = terminal if args.progress is None else args.progress
    if not wanted:
        return None
    return True if terminal else _Lines(what)


class _Lines:
    """Progress as a line on stderr each tenth of the way (each 16 MiB when the total is not
    known)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._step = -1

    def __call__(self, done: int, total: int | None) -> None:
        step = done * 10 // total if total else done >> 24
        if step != self._step:
            self._step = step
            of = f" of {_size(total)}" if total else ""
            print(f"{self._what}: {_size(done)}{of}", file=sys.stderr, flush=True)


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# --- get ---------------------------------------------------------------------------------


def _prepare_get(args: argparse.Namespace) -> None:
    if not args.path:
        raise UsageError("the catalog root has no data: give the PATH of an array or a table")
    if args.output == _STDOUT and args.format is None:
        raise UsageError("say which format to write to stdout: --format npy (or csv, parquet...)")


async def _get(client: AsyncClient, args: argparse.Namespace) -> int:
    import anyio

    from ..catalog import AsyncArrayClient, AsyncSparseClient, AsyncTableClient

    node = await node_at(client, args.path)
    family = _data_family(node, "get")
    suffix = args.format or (
        Path(args.output).suffix.lower() if args.output else SUFFIXES[family][0]
    )
    _check_get(node, family, suffix, args)
    output = args.output or f"{node.key}{suffix}"
    if output != _STDOUT and not args.force and await anyio.Path(output).exists():
        raise UsageError(f"{output} exists: give --force to replace it")
    data: Any
    if isinstance(node, AsyncArrayClient):
        data = await node.read(args.slice, progress=_progress(args, f"get {node.path}"))
    elif isinstance(node, AsyncTableClient):
        data = await node.read(args.columns, as_="arrow")
    else:
        assert isinstance(node, AsyncSparseClient)
        data = await node.read()
    await anyio.to_thread.run_sync(_save, data, family, suffix, output, args.force)
    if output != _STDOUT:
        print(f"{node.path} -> {output}")
    return 0


def _data_family(node: AsyncNode, name: str) -> str:
    """``node``'s structure family if it has data the command handles, else a one-line error."""
    family = node.structure_family
    if family not in SUFFIXES:
        what = "a container" if family == "container" else f"a {family} node"
        raise WrongNode(
            f"{node.path} is {what}, not an array, a table or a sparse array: nothing to {name}"
        )
    return family


def _check_get(node: Any, family: str, suffix: str, args: argparse.Namespace) -> None:
    """What the options and the format ask of the node, checked before any data is read."""
    known = SUFFIXES[family]
    if suffix not in known:
        shown = suffix or "no suffix"
        raise UsageError(
            f"{shown} is not a format for {_NAMES[family]} (use {', '.join(known)}; `aiosdk"
            " export` offers the server's formats)"
        )
    if args.slice is not None and family != "array":
        raise UsageError(f"--slice is for arrays; {node.path} is a {family}")
    if args.columns is not None and family != "table":
        raise UsageError(f"--columns is for tables; {node.path} is a {family}")
    if family == "array" and suffix == ".csv":
        dropped = sum(isinstance(index, int) for index in args.slice or ())
        if node.ndim - dropped not in (1, 2) or node.dtype.kind not in _CSV_KINDS:
            raise UsageError(
                f"CSV holds 1-d or 2-d arrays of bools, ints or floats: save {node.path} as .npy"
            )


def _save(data: Any, family: str, suffix: str, output: str, force: bool) -> None:
    """Write ``data`` to ``output`` (``-``: stdout) in the format of ``suffix``; a file under a
    temporary name first, renamed when complete. Runs in a worker thread."""
    if output == _STDOUT:
        _render(data, family, suffix, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    from .._core.downloads import temporary_name

    final = Path(output)
    temporary = temporary_name(final)
    try:
        with open(temporary, "xb") as handle:
            _render(data, family, suffix, handle)
        replaced = force or not final.exists()  # it may have appeared while the data was read
        if replaced:
            os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    if not replaced:
        raise UsageError(f"{output} exists: give --force to replace it")


def _render(data: Any, family: str, suffix: str, handle: IO[bytes]) -> None:
    from .._core.optional import require

    if family == "table":
        _write_table(data, suffix, handle)
        return
    np = require("numpy", "aiosdk get")
    if family == "sparse" and suffix == ".npz":
        np.savez(handle, coords=data.coords, data=data.data, shape=np.asarray(data.shape))
        return
    if family == "sparse":
        data = data.todense()
    if suffix == ".npy":
        np.save(handle, data, allow_pickle=False)
    else:  # .csv, of bools, ints or floats: floats with every digit that tells them apart
        np.savetxt(handle, data, fmt="%.17g" if data.dtype.kind == "f" else "%d", delimiter=",")


def _write_table(table: Any, suffix: str, handle: IO[bytes]) -> None:
    from .._core.optional import require

    pa = require("pyarrow", "aiosdk get")
    sink = pa.PythonFile(handle, mode="w")
    if suffix == ".parquet":
        require("pyarrow.parquet", "aiosdk get").write_table(table, sink)
    elif suffix == ".csv":
        require("pyarrow.csv", "aiosdk get").write_csv(table, sink)
    else:  # .arrow, .feather: the Arrow IPC file format (Feather V2)
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    sink.flush()


# --- put ---------------------------------------------------------------------------------


def _prepare_put(args: argparse.Namespace) -> None:
    """The file read (before the loop: blocking) and the destination checked."""
    parent, _, key = args.path.rpartition("/")
    if not parent or not key:
        raise UsageError(f"give the new node's path as CONTAINER/KEY, not {args.path!r}")
    args.parent, args.key = parent, key
    suffix = args.file.suffix.lower()
    if suffix == ".npy":
        args.family = "array"
    elif suffix == ".npz":
        args.family = "sparse"
    elif suffix in _TABLE_FILES:
        args.family = "table"
    else:
        raise UsageError(
            f"{args.file}: {suffix or 'no suffix'} is not a file put reads (.npy for an array;"
            f" {', '.join(_TABLE_FILES)} for a table; .npz for a sparse array)"
        )
    if args.chunks is not None and args.family != "array":
        raise UsageError("--chunks is for arrays (.npy)")
    if args.partitions is not None and args.family != "table":
        raise UsageError(f"--partitions is for tables ({', '.join(_TABLE_FILES)})")
    args.metadata = nested(args.metadata)
    try:
        args.data = _load(args.file, suffix)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None


def _load(file: Path, suffix: str) -> Any:
    from .._core.optional import require

    if suffix in (".npy", ".npz"):
        np = require("numpy", "aiosdk put")
        try:
            loaded = np.load(file, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"{file} is not a {suffix} file numpy reads: {exc}") from None
        if suffix == ".npy":
            return loaded
        with loaded:
            if set(loaded.files) != {"coords", "data", "shape"}:
                raise UsageError(
                    f"{file} holds {', '.join(loaded.files) or 'nothing'}: a sparse array's"
                    " .npz holds coords, data and shape"
                )
            return {name: loaded[name] for name in loaded.files}
    pa = require("pyarrow", "aiosdk put")
    try:
        if suffix == ".parquet":
            return require("pyarrow.parquet", "aiosdk put").read_table(file)
        if suffix == ".csv":
            return require("pyarrow.csv", "aiosdk put").read_csv(file)
        if suffix == ".feather":  # V2 is the Arrow IPC file format; this also reads V1
            return require("pyarrow.feather", "aiosdk put").read_table(file)
        try:
            with pa.ipc.open_file(file) as reader:
                return reader.read_all()
        except pa.ArrowInvalid:  # not the file format: perhaps the stream format
            with pa.ipc.open_stream(file) as stream:
                return stream.read_all()
    except pa.ArrowInvalid as exc:
        raise UsageError(f"{file} is not a {suffix} file pyarrow reads: {exc}") from None


async def _put(client: AsyncClient, args: argparse.Namespace) -> int:
    import aiosdk

    container = await container_at(client, args.parent)
    specs = args.spec or None
    try:
        if args.family == "array":
            node: AsyncNode = await container.write_array(
                args.data,
                key=args.key,
                chunks=args.chunks,
                metadata=args.metadata,
                specs=specs,
                progress=_progress(args, f"put {args.path}"),
            )
        elif args.family == "table":
            node = await container.write_dataframe(
                args.data,
                key=args.key,
                partitions=args.partitions,
                metadata=args.metadata,
                specs=specs,
            )
        else:
            sparse = args.data
            node = await container.write_sparse(
                sparse["coords"],
                sparse["data"],
                shape=[int(n) for n in sparse["shape"]],
                key=args.key,
                metadata=args.metadata,
                specs=specs,
            )
    except aiosdk.ConflictError as exc:
        return _refused("put", exc)
    print(f"{args.file} -> {node.path} ({args.family})")
    return 0


def _refused(name: str, exc: Any) -> int:
    """A conflict (the key is taken; a node of another kind is in the way): its own message,
    not the catalog commands' advice to run again."""
    return fail(name, exc.message, 1)


# --- export ------------------------------------------------------------------------------


def _prepare_export(args: argparse.Namespace) -> None:
    if not args.path:
        raise UsageError("the catalog root has no data: give the PATH of an array or a table")
    if args.list:
        if args.output is not None:
            raise UsageError("--list prints the formats: give no OUTPUT")
        return
    if args.output is None:
        raise UsageError("give the OUTPUT file ('-': stdout), or --list for the formats")
    if args.output == _STDOUT:
        if args.format is None:
            raise UsageError("say which format to write to stdout: --format text/csv (or .npy...)")
    elif not args.force and Path(args.output).exists():
        raise UsageError(f"{args.output} exists: give --force to replace it")


async def _export(client: AsyncClient, args: argparse.Namespace) -> int:
    node = await node_at(client, args.path)
    _data_family(node, "export")
    if args.list:
        for mime in await node.formats():
            print(mime)
        return 0
    target: str | IO[bytes] = sys.stdout.buffer if args.output == _STDOUT else args.output
    await node.export(target, args.format, progress=_progress(args, f"export {node.path}"))  # type: ignore[attr-defined]
    if args.output != _STDOUT:
        print(f"{node.path} -> {args.output}")
    return 0


# --- copy --------------------------------------------------------------------------------


def _prepare_copy(args: argparse.Namespace) -> None:
    """The destination's client, made before the loop (a profile is a file read)."""
    import aiosdk

    if not args.source:
        raise UsageError("the catalog root cannot be copied: give the PATH of a node")
    from ..catalog.nodes import check_key

    if args.key is not None:
        check_key(args.key)  # (a ConfigurationError, said as a usage error)
    args.destination = None
    if args.to_url or args.to_profile:
        args.destination = aiosdk.AsyncClient(args.to_url, profile=args.to_profile)


async def _copy(client: AsyncClient, args: argparse.Namespace) -> int:
    import aiosdk

    to: AsyncClient = args.destination or client
    async with contextlib.AsyncExitStack() as stack:
        if args.destination is not None:
            await stack.enter_async_context(args.destination)
        source = await node_at(client, args.source)
        destination = await container_at(to, args.dest)
        try:
            copied = await aiosdk.copy(
                source,
                destination,
                key=args.key,
                concurrency=args.concurrency,
                progress=_progress(args, f"copy {source.path}"),
            )
        except aiosdk.ConflictError as exc:
            return _refused("copy", exc)
    where = "" if args.destination is None else f" on {to.url}"
    print(f"{source.path} -> {copied.path}{where}")
    return 0
