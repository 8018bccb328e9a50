"""What the scripts of the facade tests share (they run in fresh interpreters, by
:func:`outside._tools.run_script`, and import this): a forked child's work, and Ctrl-C sent at
chosen moments of a call."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import aiosdk


def in_a_forked_child(work: Callable[[], int | None], *, alarm: int | None = None) -> int:
    """Fork; the child runs ``work`` and exits with what it returns (``None``: 0), 3 if it
    failed cleanly (an :class:`aiosdk.AiosdkError`), 1 on anything else (all told on standard
    error); killed by SIGALRM after ``alarm`` s, if given, rather than hang. The parent: the
    child's pid."""
    pid = os.fork()
    if pid == 0:
        if alarm is not None:
            signal.alarm(alarm)  # a hang is exit status -SIGALRM, not a stuck test
        status = 0
        try:
            status = work() or 0
        except aiosdk.AiosdkError as exc:
            status = 3  # failing cleanly is allowed
            print("child:", repr(exc), file=sys.stderr)
        except BaseException as exc:
            status = 1
            print("child:", repr(exc), file=sys.stderr)
        finally:
            os._exit(status)
    return pid


def exit_status_of(pid: int) -> int:
    """Wait for the child ``pid``; its exit status, after checking it is 0 or 3."""
    status = os.waitpid(pid, 0)[1]
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) in (0, 3), status
    return os.WEXITSTATUS(status)


def interrupted_runs(
    work: Callable[[], object],
    *,
    runs: int,
    seconds: float,
    parts: int,
    then: Callable[[], None],
) -> int:
    """Run ``work`` ``runs`` times, a Ctrl-C (SIGINT) sent ``seconds * (i + 1) / parts`` into
    the i-th run, and ``then`` after each; how many runs it cut short (each within 5 s)."""
    interrupted = 0
    for i in range(runs):
        fired: list[float] = []

        def fire(fired: list[float] = fired) -> None:
            fired.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(seconds * (i + 1) / parts, fire)
        done = False
        try:
            timer.start()
            work()
            done = True
            timer.join()  # finished first: the interrupt lands here (or below)
        except KeyboardInterrupt:
            if not done:
                interrupted += 1
                assert time.monotonic() - fired[0] < 5, "Ctrl-C took more than 5 s"
        finally:
            try:
                timer.join()
                time.sleep(0.01)
            except KeyboardInterrupt:
                pass
        then()
    return interrupted
