"""The HTTP API: a FastAPI app under ``/api/v1``."""

from .app import create_app

__all__ = ["create_app"]
