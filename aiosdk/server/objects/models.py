"""Tables of the object store: a bucket per (namespace, name), an object per (bucket, key).

An object row names the file holding its bytes (``storage_id``, under the server's objects
directory: see :mod:`.store`); every write of an object gets a file of its own, so that the row's
commit is what switches readers to the new bytes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..storage.models import Base, new_id, utcnow

__all__ = ["Bucket", "StoredObject"]


class Bucket(Base):
    """A bucket: its namespace, its name and who created it."""

    __tablename__ = "buckets"
    __table_args__ = (
        UniqueConstraint("namespace", "name", name="uq_buckets_namespace_name"),
        Index("ix_buckets_namespace_created", "namespace", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(100))
    """The principal that created it."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredObject(Base):
    """An object: its key in its bucket, its size, SHA-256, content type and file."""

    __tablename__ = "objects"

    bucket_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("buckets.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    """The SHA-256 of the bytes, lowercase hex (the object's ETag)."""
    content_type: Mapped[str] = mapped_column(String(255))
    storage_id: Mapped[str] = mapped_column(String(32))
    """The name of the file of these bytes (see :mod:`.store`)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
