"""The gRPC side of the server: grpclib services sharing the HTTP side's token store."""

from .server import GrpcServer

__all__ = ["GrpcServer"]
