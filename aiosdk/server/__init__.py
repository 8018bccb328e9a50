"""The aiosdk reference server: HTTP (FastAPI on uvicorn) and gRPC (grpclib) in one process.

Run it with ``aiosdk serve``, or embed it::

    with ServerThread(ServerConfig()) as server:
        print(server.http_url, server.admin_token)
"""

from .config import Limits, ServerConfig
from .runner import Server, ServerThread

__all__ = ["Limits", "Server", "ServerConfig", "ServerThread"]
