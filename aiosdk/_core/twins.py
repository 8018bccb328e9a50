"""The classes of the blocking facade: the base of every sync twin, and the async-to-sync map.

Every generated class (``aiosdk._sync``) derives from :class:`Twin` and names the async class it
wraps; a call that hands out an async facade object hands out its twin instead, chosen by the
object's class at run time (so an ``AsyncContainer`` typed as its base ``AsyncNode`` still comes
back as a ``Container``), inside lists, tuples, dicts and generic dataclasses too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, TypeVar, cast

from . import portal

__all__ = ["Twin", "sync_value", "twin", "unwrap"]

__tracebackhide__ = True  # facade plumbing (pytest hides it, the portal cuts it)

S = TypeVar("S", bound="Twin")
T = TypeVar("T")

_TWINS: dict[type, type[Twin] | None] = {}  # async class -> its twin (None: it has none)
_GENERATED = "aiosdk._sync"  # importing it defines (and registers) every twin
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


class Twin:
    """A sync twin: the async object it wraps, and how calls reach it.

    Generated subclasses set ``_async_class``; ``_async`` is the wrapped async object.
    """

    _async_class: ClassVar[type[Any]]
    _async: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        async_class = cls.__dict__.get("_async_class")
        if async_class is not None:
            for kind in [k for k, v in _TWINS.items() if v is None and issubclass(k, async_class)]:
                del _TWINS[kind]  # looked up before this twin existed
            _TWINS[async_class] = cls

    @classmethod
    def _wrap(cls: type[S], obj: Any) -> S:
        """The twin of ``obj`` as an instance of ``cls`` (no ``__init__``: it exists already)."""
        self = cls.__new__(cls)
        self._async = obj
        return self

    @classmethod
    def _of(cls: type[S], obj: Any) -> S:
        """The twin of ``obj``: a ``cls`` if ``obj`` is of ``cls``'s async class, else by class.

        For class methods that return their own class: ``MyClient.embedded()`` gives a
        ``MyClient``, and a lookup that finds a subclass's object gives that subclass's twin.
        """
        return cls._wrap(obj) if type(obj) is cls._async_class else cast(S, twin(obj))

    def __repr__(self) -> str:
        own: object = type(self._async).__repr__
        if own is object.__repr__:
            return object.__repr__(self)
        return repr(self._async).replace("<Async", "<", 1)

    def _enter(self, manager: AbstractAsyncContextManager[T]) -> asyncio.Future[T]:
        """``with twin``: ``manager`` (the async object) entered in a task that holds it open.

        The generated ``__enter__`` calls ``.result()`` on the future: a failure to enter is
        raised in its frame.
        """
        host = portal.hold(manager)
        if host.entered.exception() is None:
            self.__dict__.setdefault("_hosts", []).append(host)
        return host.entered

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> asyncio.Future[bool | None]:
        """The ``with`` block ends: the done future of what the async ``__aexit__`` returns."""
        hosts: list[portal.Host] = self.__dict__.get("_hosts", [])
        if not hosts:
            raise RuntimeError(f"{type(self).__name__} was not entered")
        return hosts.pop().release((exc_type, exc, tb))


def _twin_class(kind: type) -> type[Twin] | None:
    """The twin class for instances of ``kind``: its own, or its nearest ancestor's."""
    try:
        return _TWINS[kind]
    except KeyError:
        pass
    if _GENERATED not in sys.modules:
        importlib.import_module(_GENERATED)  # twins register as they are defined
    found = next((_TWINS[base] for base in kind.__mro__ if _TWINS.get(base) is not None), None)
    _TWINS[kind] = found
    return found


def twin(obj: Any) -> Any:
    """The sync twin of the async facade object ``obj`` (a ``TypeError`` if it has none)."""
    cls = _twin_class(type(obj))
    if cls is None:
        raise TypeError(f"{type(obj).__qualname__} has no sync twin")
    return cls._wrap(obj)


def sync_value(value: T) -> T:
    """``value`` with every async facade object in it replaced by its twin.

    Looks into lists, tuples, sets, dicts and instances of generic dataclasses (``Page[T]``),
    where a type variable may stand for an async facade class.
    """
    return cast(T, _sync(value))


def _sync(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    cls = _twin_class(kind)
    if cls is not None:
        return cls._wrap(value)
    if kind in (list, tuple, set, frozenset):
        items = [_sync(item) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return kind(items) if changed else value
    if kind is dict:
        pairs = {key: _sync(item) for key, item in value.items()}
        return pairs if any(pairs[key] is not item for key, item in value.items()) else value
    if dataclasses.is_dataclass(kind) and getattr(kind, "__parameters__", None):
        fields = (field.name for field in dataclasses.fields(kind) if field.init)
        old = {name: getattr(value, name) for name in fields}
        new = {name: _sync(item) for name, item in old.items()}
        replaced = {name: item for name, item in new.items() if item is not old[name]}
        return dataclasses.replace(value, **replaced) if replaced else value
    return value


def unwrap(obj: Any) -> Any:
    """The async object behind a twin (what a sync argument becomes for the async call)."""
    return obj._async if isinstance(obj, Twin) else obj
