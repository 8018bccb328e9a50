"""Containers: the catalog's folders, read like mappings of their children.

``await container["k"]`` (or ``await container.get("a/b")``) looks a child up in one request;
``keys()``, ``values()`` and ``items()`` are views with random access (see :mod:`.views`);
``search(...)`` and ``sort(...)`` give new containers that carry the query and order and send
nothing until they are used. The blocking twin, :class:`aiosdk.Container`, is a real
``collections.abc.Mapping``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

from typing_extensions import Self

from .._core.context import ClientContext
from .._core.errors import ConfigurationError, NodeNotFoundError, ProtocolError
from . import metadata as _metadata
from .metadata import JSONDict, JSONObject
from .nodes import AsyncNode, call, check_key, join_path, route, split_path
from .queries import Query, check_sorting, encode_filters, encode_sort
from .views import MAX_PAGE_SIZE, AsyncContainerItems, AsyncContainerKeys, AsyncContainerValues

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._core.progress import Progress
    from .arrays import AsyncArrayClient
    from .datasets import AsyncDatasetClient
    from .sparse import AsyncSparseClient
    from .tables import AsyncTableClient
    from .watch import CatalogEvent

__all__ = ["AsyncContainer", "node_from_item"]

T = TypeVar("T")

_ROOT_ITEM: Final[Mapping[str, Any]] = {
    "id": "",
    "key": "",
    "path": "",
    "parent": None,
    "namespace": "",
    "structure_family": "container",
    "metadata": {},
    "specs": [],
    "tags": [],
    "file_type": None,
    "structure": None,
    "public": False,
    "shares": [],
    "allowed_actions": [],
    "revision": 0,
}


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Final = _Missing()


def node_from_item(ctx: ClientContext, item: Mapping[str, Any]) -> AsyncNode:
    """The node a node JSON describes, as the class of its structure family: an
    :class:`AsyncContainer` (an ``AsyncDatasetClient`` if its specs say ``"dataset"``), an
    ``AsyncArrayClient``, ``AsyncTableClient`` or ``AsyncSparseClient``; an
    :class:`AsyncNode` for any other family."""
    if not isinstance(item, Mapping):
        raise ProtocolError(f"expected a node in the server's answer, got {type(item).__name__}")
    # The data clients import this module (they are nodes and containers): imported here.
    family = item.get("structure_family")
    if family == "container":
        specs = item.get("specs")
        if isinstance(specs, list) and "dataset" in specs:
            from .datasets import AsyncDatasetClient

            return AsyncDatasetClient(ctx, item)
        return AsyncContainer(ctx, item)
    if family == "array":
        from .arrays import AsyncArrayClient

        return AsyncArrayClient(ctx, item)
    if family == "table":
        from .tables import AsyncTableClient

        return AsyncTableClient(ctx, item)
    if family == "sparse":
        from .sparse import AsyncSparseClient

        return AsyncSparseClient(ctx, item)
    return AsyncNode(ctx, item)


class AsyncContainer(AsyncNode):
    """A container of the catalog: its children by key, in a stable order (its sort, then key).

    ``await c["k"]`` (``NodeNotFoundError``, a ``KeyError``, if absent),
    ``await c.get("a/b")``, ``async for key in c``, ``await c.__contains__("k")``,
    ``await c.count()``; ``c.keys()``, ``c.values()``, ``c.items()``
    (``await c.values()[3]``, ``[-1]``, ``[:10]``, ``first()``, ``tail(5)``...).
    ``c.search(query)`` and ``c.sort(...)`` narrow and order it lazily. The catalog's root
    (``client.catalog``) holds the namespaces the caller may read; it has no node of its own
    (path and key ``""``).
    """

    def __init__(self, ctx: ClientContext, item: Mapping[str, Any]) -> None:
        super().__init__(ctx, item)
        self._queries: tuple[Query, ...] = ()
        self._sorting: tuple[tuple[str, int], ...] = ()
        self._filters: str | None = None

    @classmethod
    def _root(cls, ctx: ClientContext) -> AsyncContainer:
        return cls(ctx, _ROOT_ITEM)

    def _derived(self, queries: tuple[Query, ...], sorting: tuple[tuple[str, int], ...]) -> Self:
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._queries = queries
        clone._sorting = sorting
        clone._filters = encode_filters(queries)
        return clone

    def __repr__(self) -> str:
        extra = ""
        if self._queries:
            extra += f" queries={list(self._queries)!r}"
        if self._sorting:
            extra += f" sorting={list(self._sorting)!r}"
        return f"<{type(self).__name__} {self.path!r}{extra}>"

    def _describe(self) -> str:
        what = f"the container {self.path!r}" if self.path else "the catalog's root"
        return what + (" (searched)" if self._queries else "")

    def _node(self, item: Mapping[str, Any]) -> AsyncNode:
        return node_from_item(self._ctx, item)

    # -- listing -----------------------------------------------------------------------------

    def _listing_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self._filters is not None:
            params["filters"] = self._filters
        if self._sorting:
            params["sort"] = encode_sort(self._sorting)
        return params

    async def _page(
        self,
        *,
        offset: int | None,
        page_token: str | None,
        page_size: int,
        reverse: bool,
        fields: Literal["keys", "full", "no_metadata"],
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the children: their JSON, and the next page's cursor."""
        params = self._listing_params()
        params["page_size"] = max(1, min(page_size, MAX_PAGE_SIZE))
        if offset:
            params["offset"] = offset
        if page_token is not None:
            params["page_token"] = page_token
        if reverse:
            params["reverse"] = True
        if fields != "full":
            params["fields"] = fields
        data = await call(
            self._ctx,
            "GET",
            route("/catalog/children", self.path),
            params=params,
            lookup=self.path or None,
        )
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ProtocolError(f"unexpected listing of {self._describe()}: {str(data)[:200]}")
        token = data.get("next_page_token")
        return items, None if token is None else str(token)

    def keys(self) -> AsyncContainerKeys:
        """The children's keys, as a view with random access: ``await c.keys()[0]``,
        ``await c.keys().head(5)``, ``async for key in c.keys()``."""
        return AsyncContainerKeys(self)

    def values(self) -> AsyncContainerValues:
        """The children, as a view with random access: ``await c.values()[3]``, ``[-1]``,
        ``[:10]``, ``first()``, ``last()``, ``head(n)``, ``tail(n)``, ``async for``."""
        return AsyncContainerValues(self)

    def items(self) -> AsyncContainerItems:
        """``(key, child)`` pairs, as a view with random access: ``await c.items()[0]``,
        ``await c.items().tail(5)``, ``async for key, node in c.items()``."""
        return AsyncContainerItems(self)

    async def __aiter__(self) -> AsyncIterator[str]:
        """The children's keys, page by page."""
        async for key in self.keys():
            yield key

    async def __len__(self) -> int:
        """How many children there are (that the search matches): :meth:`count`."""
        return await self.count()

    async def count(self) -> int:
        """How many children there are (that the search matches): one request."""
        data = await call(
            self._ctx,
            "GET",
            route("/catalog/count", self.path),
            params=self._listing_params(),
            lookup=self.path or None,
        )
        try:
            return int(data["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"unexpected count of {self._describe()}: {data!r}") from exc

    # -- lookups -----------------------------------------------------------------------------

    @overload
    async def get(self, path: str) -> AsyncNode: ...
    @overload
    async def get(self, path: str, default: T) -> AsyncNode | T: ...
    async def get(self, path: str, default: Any = _MISSING) -> Any:
        """The node at ``path`` below this container (a key, or keys joined by ``/``): one
        request. Absent (or not readable by the caller): ``default`` if given, else
        :class:`~aiosdk.NodeNotFoundError` (a :class:`~aiosdk.NotFoundError` and a
        ``KeyError``), unlike ``Mapping.get``, which answers ``None``: the catalog's lookup by path
        says when there is nothing there. A lookup finds the node whatever the container's
        search."""
        full = join_path(self.path, path)
        try:
            item = await call(self._ctx, "GET", route("/catalog/nodes", full), lookup=full)
        except NodeNotFoundError:
            if default is _MISSING:
                raise
            return default
        return self._node(item)

    async def __getitem__(self, key: str) -> AsyncNode:
        """The child ``key`` (or the node at a relative path ``"a/b"``): one request;
        :class:`~aiosdk.NodeNotFoundError`, a ``KeyError``, if there is none."""
        return await self.get(key)

    async def __contains__(self, key: object) -> bool:
        """Whether there is a child ``key`` (one request, never a listing)."""
        if not isinstance(key, str):
            return False
        try:
            split_path(key)
        except ConfigurationError:
            return False
        return await self.get(key, None) is not None

    async def _holds(self, value: object) -> bool:
        # By attributes, not class: a pair from the blocking facade holds the node's twin.
        key, parent, node_id = (getattr(value, name, None) for name in ("key", "parent", "id"))
        if not (isinstance(key, str) and key and isinstance(node_id, str)):
            return False
        if (parent or "") != self.path:
            return False
        found = await self.get(key, None)
        return isinstance(found, AsyncNode) and found.id == node_id

    # -- search, sort, distinct --------------------------------------------------------------

    @property
    def queries(self) -> tuple[Query, ...]:
        """The queries this container's children must match (ANDed)."""
        return self._queries

    @property
    def sorting(self) -> list[tuple[str, int]]:
        """The order of the children: ``(key, ASCENDING | DESCENDING)`` pairs, then key (and
        id) ascending; ``[]`` is key order."""
        return list(self._sorting)

    def search(self, query: Query) -> Self:
        """This container narrowed to the children that match ``query`` too (ANDed with the
        queries it has). Lazy: no request until it is used."""
        return self._derived((*self._queries, query), self._sorting)

    def sort(self, *sorting: tuple[str, int]) -> Self:
        """This container with its children ordered by ``sorting``: ``(key, direction)``
        pairs, a key being a metadata key (dotted) or ``_key``, ``_created_at``,
        ``_updated_at``, ``_structure_family``, ``_revision``; direction ``ASCENDING`` or
        ``DESCENDING``. Ties are broken by key. Lazy: no request until it is used."""
        return self._derived(self._queries, check_sorting(sorting))

    async def distinct(
        self,
        *metadata_keys: str,
        structure_families: bool = False,
        specs: bool = False,
        counts: bool = False,
    ) -> JSONDict:
        """The distinct values of ``metadata_keys``, and optionally of the structure families
        and specs, among the children the search matches, each with its count if ``counts``:
        ``{"metadata": {"color": [{"value": "red", "count": 3}, ...]},
        "structure_families": [...], "specs": [...]}``, most frequent first."""
        for key in metadata_keys:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"a metadata key is a non-empty string, not {key!r}")
        params = self._listing_params()
        params.pop("sort", None)
        params.update(
            metadata_keys=list(metadata_keys),
            structure_families=bool(structure_families),
            specs=bool(specs),
            counts=bool(counts),
        )
        data = await call(
            self._ctx,
            "GET",
            route("/catalog/distinct", self.path),
            params=params,
            lookup=self.path or None,
        )
        if not isinstance(data, dict):
            raise ProtocolError(f"unexpected distinct of {self._describe()}: {data!r}")
        return data

    # -- writing -----------------------------------------------------------------------------

    async def new(
        self,
        structure_family: str,
        key: str,
        *,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
        tags: Iterable[str] | None = None,
        file_type: str | None = None,
        structure: JSONObject | None = None,
    ) -> AsyncNode:
        """Create a node (a container, or an asset to write data into) at ``key`` (or a
        relative path whose container exists); :class:`~aiosdk.ConflictError` if it exists."""
        if not isinstance(structure_family, str) or not structure_family:
            raise ConfigurationError(
                f"structure_family must be a non-empty string, not {structure_family!r}"
            )
        full = join_path(self.path, key, "key")
        parent, _, leaf = full.rpartition("/")
        if not parent:
            raise ConfigurationError(
                f"cannot create {full!r} at the catalog's root: its top level holds the"
                " namespaces, which come with users and organizations"
            )
        body = {
            "key": check_key(leaf),
            "structure_family": structure_family,
            "metadata": _metadata.check_metadata(metadata),
            "specs": _metadata.check_specs(specs),
            "tags": _metadata.check_specs(tags, "tags"),
            "file_type": file_type,
            "structure": None if structure is None else _metadata.check_metadata(structure),
        }
        item = await call(
            self._ctx, "POST", route("/catalog/children", parent), json=body, lookup=parent
        )
        return self._node(item)

    async def create_container(
        self,
        key: str,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
        tags: Iterable[str] | None = None,
    ) -> AsyncContainer:
        """Create an empty container at ``key`` (or a relative path whose container exists:
        ``root.create_container("alice/experiments")``)."""
        node = await self.new("container", key, metadata=metadata, specs=specs, tags=tags)
        if not isinstance(node, AsyncContainer):
            raise ProtocolError(f"created {node.path!r} is not a container")
        return node

    async def write_array(
        self,
        array: npt.ArrayLike,
        *,
        key: str,
        chunks: int | Sequence[int] | None = None,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
        dims: Sequence[str] | None = None,
        concurrency: int = 8,
        progress: Progress = None,
    ) -> AsyncArrayClient:
        """Create an array at ``key`` holding ``array`` (numpy, or anything ``numpy.asarray``
        takes), uploaded block by block, ``concurrency`` blocks at a time. ``chunks``: the block
        shape; by default blocks of at most 16 MiB. ``dims``: names of the axes. ``progress``:
        a callable ``(done_bytes, total_bytes)`` or ``True`` (a bar on a terminal)."""
        from .arrays import write_array

        return await write_array(
            self,
            array,
            key=key,
            chunks=chunks,
            metadata=metadata,
            specs=specs,
            dims=dims,
            concurrency=concurrency,
            progress=progress,
        )

    async def write_dataframe(
        self,
        df: Any,
        *,
        key: str,
        partitions: Any = None,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
    ) -> AsyncTableClient:
        """Create a table at ``key`` holding ``df`` (a pandas DataFrame or a pyarrow Table),
        in ``partitions`` (see :func:`aiosdk.catalog.tables.write_dataframe`)."""
        from .tables import write_dataframe

        return await write_dataframe(
            self, df, key=key, partitions=partitions, metadata=metadata, specs=specs
        )

    async def write_sparse(
        self,
        coords: Any,
        data: Any,
        *,
        shape: Sequence[int],
        key: str,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
        dims: Sequence[str] | None = None,
    ) -> AsyncSparseClient:
        """Create a sparse array (COO) at ``key``: ``coords`` (ndim by nnz ints) and ``data``
        (nnz values) in an array of ``shape``."""
        from .sparse import write_sparse

        return await write_sparse(
            self, coords, data, shape=shape, key=key, metadata=metadata, specs=specs, dims=dims
        )

    async def write_dataset(
        self,
        mapping: Mapping[str, Any],
        *,
        key: str,
        metadata: JSONObject | None = None,
        specs: Sequence[str] | None = None,
    ) -> AsyncDatasetClient:
        """Create a dataset at ``key``: a container of named arrays sharing dimensions, from
        ``mapping`` of name to a numpy array or a ``(dims, array)`` pair (like xarray's
        ``data_vars``)."""
        from .datasets import write_dataset

        return await write_dataset(self, mapping, key=key, metadata=metadata, specs=specs)

    async def watch(self, after: int | None = None) -> AsyncIterator[CatalogEvent]:
        """The changes among the children, as they happen: created, updated and deleted, in
        order, until the caller stops iterating; from now, or resumed after the event numbered
        ``after`` (:class:`~aiosdk.WatchGapError` if the server no longer keeps those)."""
        if not self.path:
            raise ConfigurationError("the catalog's root cannot be watched: watch a container")
        from .watch import watch

        async for event in watch(self._ctx, self.path, after):
            yield event
