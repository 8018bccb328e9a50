"""``/api/v1/admin``: Server administration: users and organizations (admin token only)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"])
