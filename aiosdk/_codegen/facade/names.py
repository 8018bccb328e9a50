"""The names the generator knows: typing constructs, special methods, the runtime's helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

from .source import GenerationError, Module


def _names(*qualified: str) -> frozenset[str]:
    out = set()
    for name in qualified:
        out.add(name)
        if name.startswith("collections.abc."):
            out.add("typing." + name.removeprefix("collections.abc."))
    return frozenset(out)


SEQUENCES = _names(
    "list",
    "typing.List",
    "collections.abc.Sequence",
    "collections.abc.MutableSequence",
    "collections.abc.Collection",
    "collections.abc.Iterable",
)


SETS = _names(
    "set",
    "frozenset",
    "typing.Set",
    "typing.FrozenSet",
    "typing.AbstractSet",
    "collections.abc.Set",
    "collections.abc.MutableSet",
)


TUPLES = _names("tuple", "typing.Tuple")


MAPPINGS = _names(
    "dict", "typing.Dict", "collections.abc.Mapping", "collections.abc.MutableMapping"
)


ASYNC_ITERATORS = _names(
    "collections.abc.AsyncIterator",
    "collections.abc.AsyncIterable",
    "collections.abc.AsyncGenerator",
)


ASYNC_CONTEXTS = _names("contextlib.AbstractAsyncContextManager", "typing.AsyncContextManager")


AWAITABLES = _names("collections.abc.Awaitable", "collections.abc.Coroutine")


CONCRETE = frozenset({"list", "tuple", "dict", "set", "frozenset"})  # isinstance() tells them


UNIONS = _names("typing.Union", "typing_extensions.Union")


OPTIONALS = _names("typing.Optional", "typing_extensions.Optional")


TRANSPARENT = _names(
    "typing.ClassVar", "typing.Final", "typing.Annotated", "typing_extensions.Annotated"
)


OPAQUE = _names("typing.Any", "typing_extensions.Any", "object")


SELF = _names("typing.Self", "typing_extensions.Self")


ASYNC_CONTEXT_MANAGER_DECORATORS = _names("contextlib.asynccontextmanager")


OVERLOADS = _names("typing.overload", "typing_extensions.overload")


IGNORED_DECORATORS = _names(
    "abc.abstractmethod", "typing.override", "typing_extensions.override", "typing.final"
)


SPECIAL = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "__len__": "__len__",
    "__getitem__": "__getitem__",
    "__setitem__": "__setitem__",
    "__delitem__": "__delitem__",
    "__contains__": "__contains__",
    "__bool__": "__bool__",
    "__call__": "__call__",
}


RENAMED_METHODS = {**{k: v for k, v in SPECIAL.items() if k != v}, "aclose": "close"}


ASYNC_ONLY_MEMBERS = {"__await__"}  # members the twin leaves out on purpose


HELPERS = {
    "_portal": "from aiosdk._core import portal as _portal",
    "Twin": "from aiosdk._core.twins import Twin",
    "sync_value": "from aiosdk._core.twins import sync_value",
    "twin": "from {package}._twins import twin",
    "unwrap": "from {package}._twins import unwrap",
    "Any": "from typing import Any",
    "ClassVar": "from typing import ClassVar",
    "cast": "from typing import cast",
    "overload": "from typing import overload",
    "TYPE_CHECKING": "from typing import TYPE_CHECKING",
    "Iterator": "from collections.abc import Iterator",
    "AbstractContextManager": "from contextlib import AbstractContextManager",
}


@dataclass
class Needs:
    """The names one generated module uses, and where each comes from."""

    helpers: set[str] = field(default_factory=set)
    lines: set[str] = field(default_factory=set)  # other imports, as written
    source: dict[str, Module] = field(default_factory=dict)  # name -> module it is seen from
    runtime: set[str] = field(default_factory=set)  # source names evaluated at run time
    twins_runtime: set[str] = field(default_factory=set)  # sibling twins needed at run time
    twins_typing: set[str] = field(default_factory=set)  # ... for type checkers only

    def use(self, name: str, module: Module, *, runtime: bool = False) -> None:
        if runtime:
            self.runtime.add(name)
        seen = self.source.setdefault(name, module)
        if seen is not module and _import_of(seen, name) != _import_of(module, name):
            raise GenerationError(
                f"{name} means different things in {seen.name} and {module.name}; "
                "the generated module cannot import both"
            )


def _import_of(module: Module, name: str) -> object:
    return module.imports.get(name) or (module.name, name)
