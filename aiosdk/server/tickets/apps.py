"""Applications: named sets of fields the server serves by application ticket
(``b"a/<app id>/f/<field>"``).

A field is one of:

- a :class:`TableField` or an :class:`ArrayField`: computed for the user who fetches it (an
  :class:`AppContext` says who, with a read-only database session), each fetch into a new
  server object;
- an :class:`ObjectField`: a plugin object of a ``type`` (``"Counter"``), one per field shared
  by every user, whose JSON state its :data:`Method`\\ s change (``"get"``, the state itself,
  is always one of them).

The server starts with :func:`builtin_applications` (the ``"stats"`` application) and those it
is given as :class:`Application`\\ s or as ``"module:factory"`` specs (:func:`load_application`:
``factory()`` returns the :class:`Application`)::

    def make() -> Application:
        return Application("mine", "My application", {"rows": TableField("...", compute)})

    aiosdk serve --app mypackage.apps:make
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pyarrow
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..._core.ticket_bytes import application_bytes
from ..catalog.access import visible
from ..catalog.models import Node
from ..catalog.nodes import Viewer
from ..errors import InvalidRequestError, NotFoundError

__all__ = [
    "DATA_TYPES",
    "AppContext",
    "Application",
    "Applications",
    "ArrayField",
    "Field",
    "Method",
    "ObjectField",
    "TableField",
    "builtin_applications",
    "load_application",
]

DATA_TYPES = frozenset({"table", "array", "sparse", "container"})
"""The types of catalog data, which no plugin object's type may be."""
MAX_TYPE_LENGTH = 64
"""The longest a plugin object's type may be."""


@dataclass(frozen=True)
class AppContext:
    """Who fetches an application's field: their principal's name, the catalog's view of them
    (for what they may read: :func:`..catalog.access.visible`), and a database session to read
    with (the caller's unit of work: never write with it)."""

    principal: str
    viewer: Viewer
    db: AsyncSession


@dataclass(frozen=True)
class TableField:
    """A table computed for each fetch: ``await compute(context)`` is a
    :class:`pyarrow.Table`."""

    description: str
    compute: Callable[[AppContext], Awaitable[Any]]
    type: ClassVar[str] = "table"


@dataclass(frozen=True)
class ArrayField:
    """An array computed for each fetch: ``await compute(context)`` is a numpy array."""

    description: str
    compute: Callable[[AppContext], Awaitable[np.ndarray[Any, Any]]]
    type: ClassVar[str] = "array"


Method = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], Any]]
"""A plugin object's method: ``method(state, arguments)`` is the new state and the result (both
JSON); :class:`~..errors.InvalidRequestError` for arguments it does not take. It is called with
the object's row locked (calls of one object take turns) and must not block."""


def _get(state: dict[str, Any], arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The state, as it is."""
    _no_arguments("get", arguments)
    return state, state


def _no_arguments(method: str, arguments: Mapping[str, Any]) -> None:
    if arguments:
        raise InvalidRequestError(f"{method} takes no arguments, not {sorted(arguments)[:10]}")


@dataclass(frozen=True)
class ObjectField:
    """A plugin object of ``type``, one per field, its state ``initial_state`` at first;
    ``methods`` change it. ``"get"`` (the state) is always among them: another is refused."""

    type: str
    description: str
    initial_state: dict[str, Any]
    methods: Mapping[str, Method] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not 0 < len(self.type) <= MAX_TYPE_LENGTH:
            raise ValueError(f"A plugin object's type is 1 to {MAX_TYPE_LENGTH} characters")
        if self.type in DATA_TYPES:
            raise ValueError(f"{self.type!r} is a type of catalog data, not of a plugin object")
        if "get" in self.methods:
            raise ValueError("'get' (the state) is every plugin object's: define other methods")
        if not isinstance(self.initial_state, dict):
            raise ValueError(f"The initial state of a {self.type} is a JSON object (a dict)")  # noqa: TRY004
        try:
            json.dumps(self.initial_state, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"The initial state of a {self.type} must be JSON: {exc}") from None
        object.__setattr__(self, "methods", MappingProxyType({"get": _get, **self.methods}))


Field = TableField | ArrayField | ObjectField
"""An application's field."""


@dataclass(frozen=True)
class Application:
    """An application: its ``id`` (in its tickets), a human ``name``, and its fields by name
    (ids and names are catalog keys: an id holds no ``"/f/"``)."""

    id: str
    name: str
    fields: Mapping[str, Field]

    def __post_init__(self) -> None:
        application_bytes(self.id, "f")  # ValueError naming what is wrong (fields or not)
        for name in self.fields:
            application_bytes(self.id, name)
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def field(self, name: str) -> Field:
        """The field ``name``; :class:`~..errors.NotFoundError` if there is none."""
        found = self.fields.get(name)
        if found is None:
            raise NotFoundError(
                f"The application {self.id!r} has no field {name[:100]!r}; its fields are"
                f" {sorted(self.fields)[:50]}"
            )
        return found


class Applications:
    """The applications a server serves, by id (:class:`ValueError` for an id used twice)."""

    def __init__(self, apps: Iterable[Application]) -> None:
        self._apps: dict[str, Application] = {}
        for app in apps:
            if app.id in self._apps:
                raise ValueError(f"Two applications have the id {app.id!r}")
            self._apps[app.id] = app

    def get(self, app_id: str) -> Application:
        """The application ``app_id``; :class:`~..errors.NotFoundError` if there is none."""
        found = self._apps.get(app_id)
        if found is None:
            raise NotFoundError(f"No application {app_id[:100]!r}")
        return found

    def __iter__(self) -> Iterator[Application]:
        return iter(self._apps.values())

    def __len__(self) -> int:
        return len(self._apps)


def load_application(spec: str) -> Application:
    """The application ``factory()`` returns, for the spec ``"module:factory"`` (``factory``
    may be dotted: an attribute of an attribute). :class:`ValueError` saying what went wrong:
    a malformed spec, a module that does not import, no such factory, a factory that fails or
    returns no :class:`Application`. Blocking (an import reads files)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"Application {spec!r}: expected MODULE:FACTORY")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Application {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"Application {spec!r}: {module_name} has no {attribute}") from None
    if not callable(target):
        raise ValueError(f"Application {spec!r}: {attribute} is not callable")  # noqa: TRY004
    try:
        app = target()
    except Exception as exc:
        raise ValueError(f"Application {spec!r}: {attribute}() failed: {exc!r}") from exc
    if not isinstance(app, Application):
        raise ValueError(  # noqa: TRY004
            f"Application {spec!r}: {attribute}() returned a {type(app).__name__},"
            " not an Application"
        )
    return app


# --- the built-in application ------------------------------------------------------------------

_SUMMARY_SCHEMA = pyarrow.schema(
    [("namespace", pyarrow.string()), ("structure_family", pyarrow.string()),
     ("nodes", pyarrow.int64())]
)  # fmt: skip
_INT64 = np.iinfo(np.int64)


async def _summary(context: AppContext) -> Any:
    """How many catalog nodes the user may read, by namespace and structure family."""
    viewer = context.viewer
    rows = await context.db.execute(
        select(Node.namespace, Node.structure_family, func.count())
        .where(visible(viewer.caller, allow_anonymous=viewer.allow_anonymous))
        .group_by(Node.namespace, Node.structure_family)
    )
    found = sorted((str(n), str(f), int(c)) for n, f, c in rows)  # (by code point, any database)
    columns = list(zip(*found, strict=True)) if found else [(), (), ()]
    return pyarrow.Table.from_arrays(
        [
            pyarrow.array(values, type_.type)
            for values, type_ in zip(columns, _SUMMARY_SCHEMA, strict=True)
        ],
        schema=_SUMMARY_SCHEMA,
    )


def _increment(state: dict[str, Any], arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Add ``by`` (an integer, 1 if not given) to the value; the new value."""
    unknown = set(arguments) - {"by"}
    if unknown:
        raise InvalidRequestError(f"increment takes by, not {sorted(unknown)[:10]}")
    by = arguments.get("by", 1)
    if isinstance(by, bool) or not isinstance(by, int) or not _INT64.min <= by <= _INT64.max:
        raise InvalidRequestError(f"increment's by must be a 64-bit integer, not {by!r}"[:200])
    value = int(state.get("value", 0)) + by
    if not _INT64.min <= value <= _INT64.max:
        raise InvalidRequestError("The counter would leave the 64-bit integers")
    return {**state, "value": value}, value


def _reset(state: dict[str, Any], arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Set the value to 0; the new value."""
    _no_arguments("reset", arguments)
    return {**state, "value": 0}, 0


def builtin_applications() -> list[Application]:
    """The applications every server serves: ``"stats"`` (server statistics), with
    ``"summary"`` (a table: the catalog nodes the fetching user may read, counted by
    ``namespace`` and ``structure_family``, in ``nodes``, sorted) and ``"counter"`` (a plugin
    object of type ``"Counter"``: its state ``{"value": n}``; ``increment(by=1)`` and
    ``reset()`` return the new value)."""
    return [
        Application(
            "stats",
            "Server statistics",
            {
                "summary": TableField(
                    "The catalog nodes you may read, counted by namespace and structure family",
                    _summary,
                ),
                "counter": ObjectField(
                    "Counter",
                    "A counter everyone shares: get, increment(by=1), reset",
                    {"value": 0},
                    {"increment": _increment, "reset": _reset},
                ),
            },
        )
    ]
