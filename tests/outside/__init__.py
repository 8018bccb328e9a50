"""Tests from outside: the accounts API checked with tools nobody on the team wrote (schemathesis,
raw sockets, the official grpcio client, hypothesis) and the blocking facade used with hostility
(threads, fork, signals). Each module runs its own servers on loopback."""
