"""Nodes of the catalog: what every node (container or asset) shows, and the writes on it.

A node remembers the revision it was read at. Every write sends it, and the server refuses a
write based on a stale read with a :class:`~aiosdk.ConflictError` (HTTP 409): two writers that
read the same revision cannot silently overwrite each other. A successful write updates the
node from the server's answer (the new revision included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import Self

from .._core.config import API_PREFIX
from .._core.context import ClientContext
from .._core.errors import (
    ConfigurationError,
    ConflictError,
    NodeNotFoundError,
    NotFoundError,
    ProtocolError,
)
from .._core.keys import MAX_KEY_LENGTH
from .._core.keys import key_problem as _key_problem
from .._core.paths import segment
from . import metadata as _metadata
from .metadata import JSONDict, JSONObject, JSONPatch

if TYPE_CHECKING:
    from .._core.progress import Progress
    from .containers import AsyncContainer

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_PATH_LENGTH",
    "AsyncNode",
    "Share",
    "check_key",
    "join_path",
    "split_path",
]

MAX_PATH_LENGTH = 1024
MAX_DEPTH = 32

PatchType = Literal["application/json-patch+json", "application/merge-patch+json"]


# -- paths -----------------------------------------------------------------------------------


def check_key(key: object) -> str:
    """``key`` if it is a valid key; :class:`~aiosdk.ConfigurationError` naming the problem if
    not: the server's rules (:mod:`aiosdk._core.keys`, shared with it): 1 to 255 characters, not
    ``.`` or ``..``, without ``/``, no leading or trailing whitespace, in Unicode NFC, without
    control, format (zero-width, bidirectional) or unassigned characters."""
    if not isinstance(key, str):
        raise ConfigurationError(f"a key must be a string, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem is not None:
        raise ConfigurationError(f"invalid key {key[:80]!r}: {problem}")
    return key


def split_path(path: object, what: str = "path") -> list[str]:
    """The keys of a relative catalog path (``"alice/experiments/run42"``), each checked."""
    if not isinstance(path, str):
        raise ConfigurationError(f"a {what} must be a string, not {type(path).__name__}")
    if not path:
        raise ConfigurationError(f"the {what} is empty")
    keys = path.split("/")
    for key in keys:
        problem = _key_problem(key)
        if problem is not None:
            hint = " (no leading, trailing or double '/')" if not key else ""
            raise ConfigurationError(f"invalid {what} {path[:200]!r}: {problem}{hint}")
    return keys


def join_path(base: str, relative: str, what: str = "path") -> str:
    """The full path of ``relative`` below the node at ``base`` (``""``: the root), checked."""
    keys = split_path(relative, what)
    full = "/".join([base, *keys]) if base else "/".join(keys)
    if len(full) > MAX_PATH_LENGTH:
        raise ConfigurationError(
            f"the path {full[:80]!r}... is {len(full)} characters long; at most {MAX_PATH_LENGTH}"
        )
    if full.count("/") + 1 > MAX_DEPTH:
        raise ConfigurationError(f"the path {full[:200]!r} is deeper than {MAX_DEPTH} keys")
    return full


def route(prefix: str, path: str) -> str:
    """``prefix`` followed by ``path``, each key percent-encoded (keys may hold spaces, ``%``,
    ``?``, ``#`` or any Unicode); ``prefix`` alone for the root."""
    if not path:
        return prefix
    return prefix + "/" + "/".join(segment(key, what="key") for key in path.split("/"))


# -- requests --------------------------------------------------------------------------------


async def call(
    ctx: ClientContext,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    json: object = None,
    content: bytes | bytearray | memoryview | None = None,
    headers: Mapping[str, str] | None = None,
    lookup: str | None = None,
    idempotency_key: bool = True,
) -> Any:
    """A catalog call (a JSON body, or raw ``content`` with its ``headers``); its decoded JSON
    answer (``None`` when there is no body). ``idempotency_key=False``: a ``PUT`` of data, which
    is idempotent by itself, goes without an ``Idempotency-Key`` (the server stores no record).

    A 404 of a call that addresses the node at ``lookup`` is a
    :class:`~aiosdk.NodeNotFoundError` (also a ``KeyError``); a stale revision, a
    :class:`~aiosdk.ConflictError` that says so.
    """
    try:
        response = await ctx.request(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            idempotency_key=idempotency_key,
        )
    except NotFoundError as exc:
        if lookup is None or isinstance(exc, NodeNotFoundError):
            raise
        raise NodeNotFoundError(
            exc.message or f"no node at {lookup!r}",
            status_code=exc.status_code,
            request_id=exc.request_id,
            body=exc.body,
        ) from exc
    except ConflictError as exc:
        if _error_type(exc.body) != "stale_revision":
            raise
        raise ConflictError(
            f"{exc.message}: refresh() the node (or read it again) and retry",
            status_code=exc.status_code,
            request_id=exc.request_id,
            body=exc.body,
        ) from exc
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ProtocolError(f"{method} {path}: the answer is not JSON") from exc


def _error_type(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        kind = body["error"].get("type")
        return kind if isinstance(kind, str) else None
    return None


def _decode(item: object, what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ProtocolError(f"{what}: expected a node, got {type(item).__name__}")
    return item


# -- nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """A grant of ``actions`` (``"read"``, ``"write"``, ``"admin"``) on a node, and on
    everything below it, to the namespace ``namespace``."""

    namespace: str
    actions: tuple[str, ...]


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return tuple(str(item) for item in value)


class AsyncNode:
    """A node of the catalog: a container or an asset (array, table, ...), as it was read.

    The attributes are what the server said when the node was read or last written
    (:meth:`refresh` reads it again). ``metadata`` is read-only: change it with
    :meth:`update_metadata`, :meth:`replace_metadata` or :meth:`patch_metadata`, each of
    which carries ``revision``, so a write based on a stale read is a
    :class:`~aiosdk.ConflictError`.

    Attributes:
        id: the node's id.
        key: its key in its container (``""`` for the catalog's root).
        path: its catalog path: keys joined by ``/``, the first one a namespace.
        parent: the path of its container; ``None`` for a namespace's root node (and the root).
        namespace: the namespace that owns it.
        structure_family: ``"container"``, ``"array"``, ``"table"``, ...
        metadata: its metadata (a read-only ``dict``).
        specs: names of the specifications its metadata and data follow.
        tags: its tags (listings filter on them).
        file_type: its file type, if it has one (listings filter on it).
        revision: its revision when read; bumped by every change of the node itself.
        created_at: when it was created (UTC).
        updated_at: when it last changed (UTC).
        public: whether it is public (readable by everyone) itself.
        shares: whom it is shared with (only for a caller with ``admin`` on it, else empty).
        allowed_actions: what the caller may do with it (``"read"``, ``"write"``, ``"admin"``).
    """

    id: str
    key: str
    path: str
    parent: str | None
    namespace: str
    structure_family: str
    metadata: JSONObject
    specs: tuple[str, ...]
    tags: tuple[str, ...]
    file_type: str | None
    revision: int
    created_at: datetime | None
    updated_at: datetime | None
    public: bool
    shares: tuple[Share, ...]
    allowed_actions: tuple[str, ...]

    def __init__(self, ctx: ClientContext, item: Mapping[str, Any]) -> None:
        self._ctx = ctx
        self._apply(item)

    def _apply(self, item: Mapping[str, Any]) -> None:
        """Take the node's attributes from its JSON (``NodeModel``)."""
        try:
            self._item = dict(item)
            self.id = str(item["id"])
            self.key = str(item["key"])
            self.path = str(item["path"])
            parent = item.get("parent")
            self.parent = None if parent is None else str(parent)
            self.namespace = str(item.get("namespace") or self.path.partition("/")[0])
            self.structure_family = str(item["structure_family"])
            self._has_metadata = "metadata" in item
            self.metadata = _metadata.freeze(_object(item.get("metadata") or {}))
            self.specs = _strings(item.get("specs"))
            self.tags = _strings(item.get("tags"))
            file_type = item.get("file_type")
            self.file_type = None if file_type is None else str(file_type)
            self.revision = int(item.get("revision", 0))
            self.created_at = _time(item.get("created_at"))
            self.updated_at = _time(item.get("updated_at"))
            self.public = bool(item.get("public", False))
            self.shares = tuple(
                Share(str(share["namespace"]), _strings(share.get("actions")))
                for share in item.get("shares") or ()
            )
            self.allowed_actions = _strings(item.get("allowed_actions"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(
                f"unexpected node in the server's answer: {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.path!r} {self.structure_family}"
            f" revision={self.revision}>"
        )

    def _writable(self, what: str) -> str:
        if not self.path:
            raise ConfigurationError(
                f"the catalog's root cannot {what}: it lists the namespaces and has no node"
                " of its own"
            )
        return route("/catalog/nodes", self.path)

    @property
    def uri(self) -> str:
        """Direct link to this node (its ``GET`` URL; the root's is its children's listing)."""
        base = self._ctx.transport.url
        if base is None:
            raise ConfigurationError("the client has no URL yet: start it (async with) first")
        prefix = "/catalog/nodes" if self.path else "/catalog/children"
        return f"{base}{API_PREFIX}{route(prefix, self.path)}"

    @property
    def item(self) -> JSONDict:
        """JSON payload describing this node, as the server sent it (a copy)."""
        return _metadata.thaw(self._item)  # type: ignore[no-any-return]

    def structure(self) -> JSONDict | None:
        """What the node's data looks like (shape, dtype, chunks, columns...), as a dict (a
        copy); ``None`` for containers and for assets without data yet."""
        structure = self._item.get("structure")
        return None if structure is None else _metadata.thaw(structure)

    async def refresh(self) -> Self:
        """Read the node again (metadata, revision, sharing...); returns the node itself."""
        if self.path:
            item = await call(
                self._ctx, "GET", route("/catalog/nodes", self.path), lookup=self.path
            )
            self._apply(_decode(item, f"GET {self.path}"))
        return self

    async def formats(self) -> list[str]:
        """The formats the node's data can be exported in, as MIME types
        (``"application/x-npy"``, ``"text/csv"``...): what ``export(..., format=)`` takes (or a
        file suffix of one)."""
        self._writable("have data to export")
        data = await call(self._ctx, "GET", route("/formats", self.path), lookup=self.path)
        try:
            return [str(entry["mime"]) for entry in data["formats"]]
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"unexpected formats of {self.path!r}: {data!r}") from exc

    async def copy_to(
        self,
        destination: AsyncContainer,
        *,
        key: str | None = None,
        concurrency: int = 8,
        progress: Progress = False,
    ) -> AsyncNode:
        """Copy this node (and everything in it) into ``destination``, perhaps on another
        server: :func:`aiosdk.copy` (``aiosdk.copy(node, destination)``), as a method, so that
        the blocking facade has it too."""
        from .copy import copy

        return await copy(self, destination, key=key, concurrency=concurrency, progress=progress)

    # -- metadata ----------------------------------------------------------------------------

    def metadata_copy(self) -> tuple[JSONDict, list[str]]:
        """Mutable deep copies of ``metadata`` and ``specs``, to change and send back with
        :meth:`update_metadata`, :meth:`replace_metadata` or :meth:`build_metadata_patches`."""
        return _metadata.thaw(self.metadata), list(self.specs)

    def build_metadata_patches(
        self, metadata: JSONObject | None = None, specs: Sequence[str] | None = None
    ) -> tuple[list[JSONDict], list[JSONDict]]:
        """The JSON patches (RFC 6902) from the node's current ``metadata`` and ``specs`` to
        those given (``None``: unchanged), for :meth:`patch_metadata`."""
        self._need_metadata()
        return _metadata.build_metadata_patches(self.metadata, self.specs, metadata, specs)

    def _need_metadata(self) -> None:
        if not self._has_metadata and self.path:
            raise ConfigurationError(
                f"{self.path!r} was listed without its metadata: refresh() it first"
            )

    async def update_metadata(
        self, metadata: JSONObject | None = None, specs: Sequence[str] | None = None
    ) -> None:
        """Merge ``metadata`` into the node's (RFC 7386 merge patch: nested dicts merge, a
        ``None`` value removes its key) and replace ``specs`` if given."""
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata_merge"] = _metadata.check_metadata(metadata)
        if specs is not None:
            body["specs"] = _metadata.check_specs(specs)
        await self._patch(body, "update metadata")

    async def replace_metadata(
        self, metadata: JSONObject | None = None, specs: Sequence[str] | None = None
    ) -> None:
        """Replace the node's metadata entirely with ``metadata``, and its specs with ``specs``
        (``None``: that part unchanged)."""
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata"] = _metadata.check_metadata(metadata)
        if specs is not None:
            body["specs"] = _metadata.check_specs(specs)
        await self._patch(body, "replace metadata")

    async def patch_metadata(
        self,
        metadata_patch: JSONPatch | JSONObject | None = None,
        specs_patch: JSONPatch | Sequence[str] | None = None,
        content_type: PatchType = _metadata.JSON_PATCH,
    ) -> None:
        """Patch the metadata and specs.

        With ``content_type="application/json-patch+json"`` (the default) the patches are RFC
        6902 JSON Patches (lists of operations, as :meth:`build_metadata_patches` makes); a
        ``test`` operation that fails, or a path that is missing, is an
        :class:`~aiosdk.UnprocessableEntityError` and changes nothing. With
        ``"application/merge-patch+json"`` the metadata patch is an RFC 7386 merge patch (a
        dict) and the specs patch, the new list of specs.
        """
        body: dict[str, Any] = {}
        if content_type == _metadata.JSON_PATCH:
            if metadata_patch is not None:
                body["metadata_patch"] = _operations(metadata_patch, "metadata_patch")
            if specs_patch is not None:
                body["specs_patch"] = _operations(specs_patch, "specs_patch")
        elif content_type == _metadata.MERGE_PATCH:
            if metadata_patch is not None:
                if not isinstance(metadata_patch, Mapping):
                    raise ConfigurationError(
                        "a merge patch (RFC 7386) of metadata is a dict, not"
                        f" {type(metadata_patch).__name__}"
                    )
                body["metadata_merge"] = _metadata.thaw(metadata_patch)
            if specs_patch is not None:
                body["specs"] = _metadata.check_specs(specs_patch, "specs_patch")
        else:
            raise ConfigurationError(
                f"content_type must be {_metadata.JSON_PATCH!r} or {_metadata.MERGE_PATCH!r},"
                f" not {content_type!r}"
            )
        await self._patch(body, "patch metadata")

    async def _patch(self, body: dict[str, Any], what: str) -> None:
        path = self._writable(what)
        item = await call(
            self._ctx,
            "PATCH",
            path,
            json={"revision": self.revision, **body},
            lookup=self.path,
        )
        self._apply(_decode(item, f"PATCH {self.path}"))

    # -- moving and deleting -----------------------------------------------------------------

    async def move(self, to: str) -> None:
        """Move the node, and everything below it, to the full path ``to`` (its container must
        exist; a move to another namespace needs ``write`` there too). The node's ``path``,
        ``key`` and ``parent`` follow."""
        self._writable("move")
        destination = join_path("", to, "destination")
        item = await call(
            self._ctx,
            "POST",
            route("/catalog/move", self.path),
            json={"to": destination, "revision": self.revision},
            lookup=self.path,
        )
        self._apply(_decode(item, f"move {self.path}"))

    async def rename(self, key: str) -> None:
        """Give the node the key ``key`` in the same container."""
        check_key(key)
        await self.move(f"{self.parent}/{key}" if self.parent else key)

    async def delete(self, recursive: bool = False) -> None:
        """Delete the node; a container with children only with ``recursive=True`` (else a
        :class:`~aiosdk.ConflictError`), which deletes everything below it."""
        path = self._writable("be deleted")
        params = {"recursive": bool(recursive), "revision": self.revision}
        await call(self._ctx, "DELETE", path, params=params, lookup=self.path)

    # -- sharing -----------------------------------------------------------------------------

    async def share(self, namespace: str, actions: Iterable[str] = ("read",)) -> None:
        """Share the node (and everything below it) with ``namespace`` (a user or an
        organization): ``actions`` among ``"read"``, ``"write"``, ``"admin"`` (read is always
        included). Replaces an earlier share with that namespace. Needs ``admin`` on the node."""
        self._writable("be shared")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty string, not {namespace!r}")
        body = {"namespace": namespace, "actions": _metadata.check_specs(actions, "actions")}
        item = await call(
            self._ctx, "PUT", route("/catalog/shares", self.path), json=body, lookup=None
        )
        self._apply(_decode(item, f"share {self.path}"))

    async def unshare(self, namespace: str) -> None:
        """End the share with ``namespace``; :class:`~aiosdk.NotFoundError` if there is none."""
        self._writable("be unshared")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty string, not {namespace!r}")
        item = await call(
            self._ctx,
            "DELETE",
            route("/catalog/shares", self.path),
            params={"namespace": namespace},
            lookup=None,
        )
        self._apply(_decode(item, f"unshare {self.path}"))

    async def set_public(self, public: bool = True) -> None:
        """Make the node (and everything below it) readable by everyone, or stop that."""
        self._writable("be made public")
        item = await call(
            self._ctx,
            "PUT",
            route("/catalog/public", self.path),
            json={"public": bool(public)},
            lookup=self.path,
        )
        self._apply(_decode(item, f"set_public {self.path}"))


def _operations(patch: object, what: str) -> list[dict[str, Any]]:
    if isinstance(patch, Mapping | str | bytes):
        raise ConfigurationError(
            f"{what} must be a list of JSON Patch operations (RFC 6902), not"
            f" {type(patch).__name__}; for a merge patch pass"
            f" content_type={_metadata.MERGE_PATCH!r}"
        )
    if not isinstance(patch, Iterable):
        raise ConfigurationError(f"{what} must be a list of operations")
    operations = []
    for operation in patch:
        if not isinstance(operation, Mapping) or "op" not in operation:
            raise ConfigurationError(
                f"{what}: each operation is a dict with 'op' and 'path', not {operation!r}"
            )
        operations.append(_metadata.thaw(operation))
    return operations
