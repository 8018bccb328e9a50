"""Which methods the routes answer on a path: for ``Allow``, and to refuse unserved requests."""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

__all__ = ["allowed_methods", "is_served"]

_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def is_served(routes: list[BaseRoute], scope: Scope, method: str) -> bool:
    """Whether one of ``routes`` answers ``method`` on the path of ``scope``."""
    # A fresh scope: the request's own carries the routing state of its dispatch.
    probe = {
        "type": "http",
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "method": method,
    }
    return any(route.matches(probe)[0] == Match.FULL for route in routes)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method the path of ``scope`` answers, sorted: HEAD wherever GET is."""
    methods = {method for method in _METHODS if is_served(routes, scope, method)}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
