"""Developer sessions: ``nox -s tests lint typecheck codegen bench quickstart``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "codegen", "tests"]
nox.options.reuse_existing_virtualenvs = True

CODEGEN = ["aiosdk/_codegen/protos.py", "aiosdk/_codegen/sync_facade.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against the real server on loopback (PostgreSQL too if configured)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def codegen(session: nox.Session) -> None:
    """Regenerate the protobuf code and the sync facade; ``-- --check`` fails on any diff.

    The facade is also imported and type-checked (mypy) after generating or checking it: a
    generated module that does not import, or does not type-check, fails the session.
    """
    session.install("-e", ".[dev]")
    for script in CODEGEN:
        session.run("python", script, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks (server in its own process); prints ratios.

    bench_catalog.py and bench_data.py compare against Tiled, which they run from a virtualenv
    of its own (``AIOSDK_BENCH_TILED_PYTHON``, default /work/tiled-venv/bin/python, else
    benchmarks/.tiled-venv is created); Tiled is never installed into this session.
    bench_data.py also compares against Arrow Flight and raw aiohttp (both in the dev extra).
    """
    session.install("-e", ".[dev]", "uvloop")  # bench_http.py runs its server on uvloop
    session.run("python", "benchmarks/bench_client.py", *session.posargs)
    session.run("python", "benchmarks/bench_http.py", *session.posargs)
    session.run("python", "benchmarks/bench_server.py", *session.posargs)  # if wrk is there
    session.run("python", "benchmarks/bench_auth.py", *session.posargs)
    session.run("python", "benchmarks/bench_catalog.py", *session.posargs)  # skips Tiled if absent
    session.run("python", "benchmarks/bench_data.py", *session.posargs)  # skips Tiled if absent


@nox.session
def quickstart(session: nox.Session) -> None:
    """Install the package with the server extra and run the quickstart against it."""
    session.install("-e", ".[server]")
    session.run("python", "examples/quickstart.py")
