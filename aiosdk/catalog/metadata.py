"""Metadata as a node shows it (read-only), mutable copies of it, and JSON patches between two
versions of it (RFC 6902, made by the ``jsonpatch`` library, as Tiled does).

A node's :attr:`~aiosdk.AsyncNode.metadata` is a read-only ``dict`` (nested dicts and lists
too): it compares equal to plain dicts and lists and serializes with ``json``, but changing it
raises ``TypeError``, since a change there would never reach the server. ``copy.deepcopy`` of it,
and :meth:`~aiosdk.AsyncNode.metadata_copy`, give plain mutable copies.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn, TypeAlias

import jsonpatch

from .._core.errors import ConfigurationError

__all__ = [
    "JSONDict",
    "JSONObject",
    "JSONPatch",
    "JSON_PATCH",
    "MERGE_PATCH",
    "ReadOnlyDict",
    "ReadOnlyList",
    "build_metadata_patches",
    "freeze",
    "thaw",
]

JSONObject: TypeAlias = Mapping[str, Any]
"""A JSON object a caller passes: metadata, a merge patch, a structure."""
JSONDict: TypeAlias = dict[str, Any]
"""A JSON object handed back (a copy the caller may change)."""
JSONPatch: TypeAlias = Sequence[Mapping[str, Any]]
"""An RFC 6902 JSON Patch: its operations, e.g. ``[{"op": "add", "path": "/a", "value": 1}]``."""
# (Aliases, so that the blocking facade passes these through as they are: JSON holds no twins.)

JSON_PATCH: Final = "application/json-patch+json"
"""RFC 6902 JSON Patch: a list of operations (``add``, ``remove``, ``replace``, ``test``...)."""
MERGE_PATCH: Final = "application/merge-patch+json"
"""RFC 7386 JSON Merge Patch: a dict merged in, ``None`` values removing keys."""

_READ_ONLY = (
    "a node's metadata is read-only (it would not reach the server): take metadata_copy(),"
    " change it, and send it with update_metadata() or replace_metadata()"
)


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(_READ_ONLY)


class ReadOnlyDict(dict[str, Any]):
    """A ``dict`` that refuses changes; ``copy.deepcopy`` gives a plain, mutable one."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def copy(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (thaw(self),))


class ReadOnlyList(list[Any]):
    """A ``list`` that refuses changes; ``copy.deepcopy`` gives a plain, mutable one."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __copy__(self) -> list[Any]:
        return list(self)

    def copy(self) -> list[Any]:
        return list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (thaw(self),))


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON value."""
    if isinstance(value, Mapping):
        frozen = ReadOnlyDict()
        for key, item in value.items():
            dict.__setitem__(frozen, key, freeze(item))
        return frozen
    if isinstance(value, list | tuple):
        items = ReadOnlyList()
        list.extend(items, (freeze(item) for item in value))
        return items
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a JSON value (read-only or not)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return copy.copy(value)


def build_metadata_patches(
    current_metadata: Mapping[str, Any],
    current_specs: Iterable[str],
    metadata: Mapping[str, Any] | None = None,
    specs: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The JSON patches (RFC 6902) that turn ``current_metadata`` into ``metadata`` and
    ``current_specs`` into ``specs``, for :meth:`~aiosdk.AsyncNode.patch_metadata`; ``None``
    leaves that part as it is (an empty patch).

    :meth:`AsyncNode.build_metadata_patches <aiosdk.AsyncNode.build_metadata_patches>` diffs
    against the node's own values.
    """
    metadata_patch: list[dict[str, Any]] = []
    specs_patch: list[dict[str, Any]] = []
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ConfigurationError(f"metadata must be a mapping, not {type(metadata).__name__}")
        metadata_patch = jsonpatch.make_patch(thaw(current_metadata), thaw(metadata)).patch
    if specs is not None:
        new_specs = check_specs(specs)
        specs_patch = jsonpatch.make_patch(list(current_specs), new_specs).patch
    return metadata_patch, specs_patch


def check_specs(specs: Iterable[object] | None, what: str = "specs") -> list[str]:
    """``specs`` as a list of strings; :class:`~aiosdk.ConfigurationError` if it is not one."""
    if specs is None:
        return []
    if isinstance(specs, str | bytes) or not isinstance(specs, Iterable):
        raise ConfigurationError(f"{what} must be a list of strings, not {type(specs).__name__}")
    out = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigurationError(f"{what} must be strings, not {type(spec).__name__}")
        out.append(spec)
    return out


def check_metadata(metadata: Mapping[str, Any] | None, what: str = "metadata") -> dict[str, Any]:
    """``metadata`` as a plain dict to send; :class:`~aiosdk.ConfigurationError` if it is not a
    mapping."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(f"{what} must be a mapping, not {type(metadata).__name__}")
    return thaw(metadata)  # type: ignore[no-any-return]
