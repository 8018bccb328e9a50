"""``/api/v1/organizations``: Organizations the caller belongs to, and their members."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/organizations", tags=["organizations"])
