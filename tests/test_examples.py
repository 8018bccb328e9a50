"""The examples run as users run them: a fresh interpreter against the embedded server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("quickstart.py", ["connected to aiosdk", "status #3", "errors are typed: NotFoundError"]),
        ("blocking.py", ["first page:", "all labels: ['admin', 'alpha', 'beta', 'gamma']"]),
        ("streaming.py", ["#5:", "within the deadline", "20 concurrent calls"]),
        (
            "accounts.py",
            ["logged in as alice", "charges: lab", "organizations: ['lab']", "logged out"],
        ),
        (
            "catalog.py",
            [
                "red runs, hottest first: ['run4', 'run2', 'run0']",
                "a write based on a stale read is a ConflictError",
                "bob cannot see alice's experiments",
                "shared with bob: ['alice/experiments']",
                "'created run4', 'updated run1']",
            ],
        ),
        (
            "data.py",
            [
                "equal to numpy's: True",
                "blocks streamed in order: [64, 64, 64, 64]",
                "extended to (300, 1000)",
                "exported ['events.parquet', 'frames.npy']",
                "identical: True, unchanged by a rerun: True",
                "blocking: [1.0, 5.0, 9.0] ArrayClient",
            ],
        ),
        (
            "tickets.py",
            [
                "equal to pandas': True",
                "bob may not fetch it without read access",
                "bob fetched 5 rows",
                "counter: 2",
                "changes of the export: ['updated', 'released']",
                "a released export is gone: NotFoundError",
                "the session is closed",
                "blocking: [15.0, 18.0, 21.0] Session",
            ],
        ),
        (
            "channels.py",
            [
                "connected to 'device-17'",
                "received in order: ['hello', 'how are you?', b'\\x00\\x01 raw bytes', 'live!']",
                "resumable after offset 4",
                "presence: ['device-17 connected', 'device-17 disconnected (clean)']",
                "pending: ['one', 'two']",
                "popped: 'one'",
                "connect and pop: 'two'",
                "has messages: False",
                "a forged token's client id: None",
                "a forged token is an InvalidTokenError",
                "a replaced token is a TokenTimedOutError",
                "over 32 KiB is a MessageTooLargeError, before any request",
                "a client id without a channel is a NotFoundError",
                "blocking: ['a', 'b', 'c'] ChannelConnection",
            ],
        ),
    ],
)
def test_example_runs(
    script: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(tmp_path))  # nothing reaches the user's config
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, result.stdout
    assert "Secret('***')" in result.stdout or script != "quickstart.py"
    assert "aio_" not in result.stdout  # no token is ever printed
