"""What the command-line tests share: a clean environment (:func:`isolate`), running ``aiosdk``
in this process (:func:`cli`, :func:`ok`, :func:`refused`) or on a pseudo-terminal
(:data:`ON_A_TERMINAL`), and :func:`unstyled`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import aiosdk
from aiosdk.cli import main

__all__ = ["ON_A_TERMINAL", "cli", "isolate", "ok", "refused", "token", "unstyled"]


def isolate(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    """The commands' environment: no server named, nothing remembered (the user config
    directory is ``config``), no profile, no token."""
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(config))
    monkeypatch.delenv("AIOSDK_PROFILE", raising=False)
    monkeypatch.delenv("AIOSDK_TOKEN", raising=False)
    monkeypatch.delenv("AIOSDK_URL", raising=False)


def token(client: aiosdk.Client, scope: str | None = None) -> str:
    """A new API token of ``client``'s user (``scope="read"``: a read-only one)."""
    return client.tokens.create("cli", scope=scope).secret.reveal()  # type: ignore[arg-type]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``aiosdk ARGS`` in this process: its status, stdout and stderr."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse refusing the command line
        status = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return status, out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The stdout of ``aiosdk ARGS``, which must succeed and say nothing on stderr."""
    status, out, err = cli(capsys, *args)
    assert status == 0, err
    assert err == ""
    return out


def refused(capsys: pytest.CaptureFixture[str], status: int, *args: str) -> str:
    """The one line a failing command printed on stderr (no traceback, nothing on stdout)."""
    got, out, err = cli(capsys, *args)
    assert got == status, (out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"aiosdk {args[0]}")
    return err.strip()


ON_A_TERMINAL = r"""
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.environ["COLUMNS"] = "120"
    os.execv(sys.executable, [sys.executable, "-m", "aiosdk.cli", *sys.argv[1:]])
shown = b""
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    shown += data
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""A script running ``python -m aiosdk.cli ARGS`` on a pseudo-terminal (stdout and stderr
both), printing what the terminal showed and exiting with the command's status."""


def unstyled(text: str) -> str:
    """``text`` without its terminal escape sequences, lines ending in ``\\n``."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r\n", "\n")
