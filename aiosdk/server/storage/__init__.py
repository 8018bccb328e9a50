"""Persistent storage of the server: SQLAlchemy 2 async models and engine, and the migrations of
the schema (:mod:`aiosdk.server.storage.migrations`)."""

from .db import create_engine, default_database_url, session_factory
from .models import Base, IdempotencyKey, IdempotencyState, Token, new_id, utcnow

__all__ = [
    "Base",
    "IdempotencyKey",
    "IdempotencyState",
    "Token",
    "create_engine",
    "default_database_url",
    "new_id",
    "session_factory",
    "utcnow",
]
