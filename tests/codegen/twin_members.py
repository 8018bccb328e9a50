"""Which members of an async class its sync twin lacks, or has in another kind."""

from __future__ import annotations

import inspect

from aiosdk._codegen.facade import ASYNC_ONLY_MEMBERS, RENAMED_METHODS, SPECIAL


def _kind(member: object) -> str:
    for kind in (property, staticmethod, classmethod):
        if isinstance(member, kind):
            return kind.__name__
    return "method" if inspect.isfunction(member) else "attribute"


def missing_twin_members(async_class: type, sync_class: type) -> list[str]:
    """Public members, properties and special methods of ``async_class`` without a twin.

    A twin member must be of the same kind (property, static or class method, method, class
    attribute); a method must be a plain (blocking) function.
    """
    missing = []
    for name in dir(async_class):
        if (name.startswith("_") and name not in SPECIAL) or name in ASYNC_ONLY_MEMBERS:
            continue
        twin_name = RENAMED_METHODS.get(name, name)
        member = inspect.getattr_static(async_class, name)
        try:
            twin = inspect.getattr_static(sync_class, twin_name)
        except AttributeError:
            missing.append(f"{sync_class.__name__}.{twin_name} (for {name})")
            continue
        if _kind(member) != _kind(twin) or inspect.iscoroutinefunction(twin):
            missing.append(
                f"{sync_class.__name__}.{twin_name} is a {_kind(twin)}, not a {_kind(member)}"
            )
    return missing
