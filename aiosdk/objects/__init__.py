"""The object store's client: ``client.objects`` (see :mod:`.service`)."""

from .service import SHA256_HEADER, AsyncObjects, BucketInfo, ObjectData, ObjectInfo

__all__ = ["SHA256_HEADER", "AsyncObjects", "BucketInfo", "ObjectData", "ObjectInfo"]
