"""The generated blocking facade: DESIGN.md's requirements 1-8, each against the real server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from blockbuster import BlockBuster
from codegen.twin_members import missing_twin_members

import aiosdk
from aiosdk._codegen.sync_facade import FACADES
from aiosdk._core import portal, twins
from aiosdk._sync import tokens as tokens_twin
from aiosdk.accounts import tokens

ROOT = Path(__file__).resolve().parent.parent


def run_script(source: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_every_public_async_member_has_a_sync_twin() -> None:
    # Coroutines, plain methods, properties, class and static methods and special methods alike.
    for facade in FACADES:
        module = importlib.import_module(facade.module)
        async_cls = getattr(module, facade.name)
        sync_cls = getattr(aiosdk, facade.sync_name)
        assert missing_twin_members(async_cls, sync_cls) == []


def test_sync_signatures_and_docstrings_match_the_async_ones() -> None:
    async_method = aiosdk.AsyncClient.watch_status
    sync_method = aiosdk.Client.watch_status
    assert list(inspect.signature(sync_method).parameters) == list(
        inspect.signature(async_method).parameters
    )
    assert sync_method.__doc__ == async_method.__doc__
    assert inspect.signature(aiosdk.Client.server_info).return_annotation == "ServerInfo"


def test_generated_code_is_up_to_date() -> None:
    for script in ("aiosdk/_codegen/sync_facade.py", "aiosdk/_codegen/protos.py"):
        result = subprocess.run(
            [sys.executable, script, "--check"], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0, f"{script} --check:\n{result.stderr}"


def test_sync_client_calls_http_and_grpc(sync_client: aiosdk.Client) -> None:
    info = sync_client.server_info()
    assert info.name == "aiosdk"
    status = sync_client.get_status()
    assert status.uptime_seconds > 0
    updates = list(sync_client.watch_status(interval=0.05, max_updates=3))
    assert [u.sequence for u in updates] == [1, 2, 3]


def test_sync_pager_iterates_pages_and_items(sync_client: aiosdk.Client) -> None:
    labels = {f"sync-pager-{i}" for i in range(5)}
    for label in labels:
        sync_client.tokens.create(label)
    pager = sync_client.tokens.list(page_size=2)
    assert isinstance(pager, aiosdk.Pager)
    assert len(pager.first_page().items) == 2
    items = [t.label for t in pager]
    assert labels <= set(items)
    assert len(items) == len(set(t.id for t in sync_client.tokens.list(page_size=3)))
    assert sum(len(p.items) for p in pager.pages()) == len(items)


def test_same_exception_classes_with_facade_frames_trimmed(sync_client: aiosdk.Client) -> None:
    with pytest.raises(aiosdk.NotFoundError) as info:
        sync_client.tokens.get("missing")
    assert info.value.status_code == 404
    assert info.value.request_id
    files = [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]
    plumbing = (
        os.path.dirname(concurrent.futures.__file__),
        os.path.dirname(asyncio.__file__),
        portal.__file__,
        twins.__file__,
    )
    assert not [f for f in files if f.startswith(plumbing)], files
    # The caller's frame, then the twin's (Python records each frame a failure passes through),
    # then the SDK's own async frames.
    assert files[0] == __file__
    assert files[1] == tokens_twin.__file__
    assert files[2] == tokens.__file__, "the SDK's own frames stay"
    assert not [f for f in files[2:] if "_sync" in Path(f).parts], files


def test_breaking_out_of_a_sync_iterator_closes_the_stream(sync_client: aiosdk.Client) -> None:
    for status in sync_client.watch_status(interval=0.05):
        assert status.active_streams >= 1
        break
    deadline = time.monotonic() + 5
    while sync_client.get_status().active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sync_client.get_status().active_streams == 0


def test_dropping_a_sync_iterator_closes_the_stream(sync_client: aiosdk.Client) -> None:
    updates = sync_client.watch_status(interval=0.05)
    assert next(updates).sequence == 1
    del updates  # the generator's finalizer closes the async stream on the loop
    deadline = time.monotonic() + 5
    while sync_client.get_status().active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sync_client.get_status().active_streams == 0


def test_calling_from_the_facade_loop_thread_raises_instead_of_deadlocking(
    sync_client: aiosdk.Client,
) -> None:
    async def call_blocking_from_loop() -> None:
        sync_client.server_info()

    with pytest.raises(RuntimeError, match="own event loop thread"):
        portal.call(call_blocking_from_loop())


def test_works_from_a_thread_that_runs_its_own_loop(
    sync_client: aiosdk.Client, blockbuster: BlockBuster
) -> None:
    # As in Jupyter: a loop already runs in the calling thread, and a blocking call is allowed
    # to block it (that is what the user asked for), so blockbuster steps aside here.
    blockbuster.deactivate()

    async def notebook_cell() -> str:
        return sync_client.server_info().name

    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(notebook_cell())))
    thread.start()
    thread.join(timeout=30)
    assert result == ["aiosdk"]


def test_twenty_threads_share_one_client(sync_client: aiosdk.Client) -> None:
    def work(i: int) -> int:
        return sum(1 for _ in range(5) if sync_client.server_info().name == "aiosdk")

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(work, range(20))) == [5] * 20


def test_a_plain_script_runs_and_exits_without_hanging(server: object) -> None:
    result = run_script(
        """
        import sys
        import aiosdk

        client = aiosdk.Client(sys.argv[1], token=sys.argv[2])
        print(client.server_info().name, client.get_status().version)
        client.close()
        """,
        server.http_url,  # type: ignore[attr-defined]
        server.admin_token,  # type: ignore[attr-defined]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["aiosdk", aiosdk.__version__]


def test_sigint_cancels_the_call_and_raises_keyboard_interrupt(server: object) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import signal, sys, time
                import aiosdk

                # A shell that starts jobs in the background (as CI may) leaves SIGINT ignored,
                # and Python keeps an ignored SIGINT: give it the usual Ctrl-C behaviour.
                signal.signal(signal.SIGINT, signal.default_int_handler)
                client = aiosdk.Client(sys.argv[1], token=sys.argv[2])
                client.server_info()
                print("calling", flush=True)
                try:
                    list(client.watch_status(interval=60, max_updates=2))  # waits ~60 s
                except KeyboardInterrupt:
                    deadline = time.monotonic() + 5
                    while client.get_status().active_streams and time.monotonic() < deadline:
                        time.sleep(0.05)
                    print("interrupted, streams open:", client.get_status().active_streams)
                    client.close()
                    raise
                """
            ),
            server.http_url,  # type: ignore[attr-defined]
            server.admin_token,  # type: ignore[attr-defined]
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first_line = proc.stdout.readline().strip()
        if first_line != "calling":
            proc.kill()
            pytest.fail(f"the script did not start: {first_line!r} {proc.communicate()[1]}")
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert time.monotonic() - started < 20
    assert proc.returncode != 0
    assert "interrupted, streams open: 0" in out, out + err
    assert "KeyboardInterrupt" in err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_gets_a_fresh_loop_and_pool(
    sync_client: aiosdk.Client, server: object
) -> None:
    assert sync_client.server_info().name == "aiosdk"  # the parent's loop thread is running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        signal.alarm(30)  # a child that hangs dies instead of holding the suite
        code = 1
        try:
            with aiosdk.Client(server.http_url, token=server.admin_token) as child:  # type: ignore[attr-defined]
                inherited = sync_client.server_info().name  # the parent's client, fresh pool
                code = 0 if child.server_info().name == inherited == "aiosdk" else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == bytes([0])
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sync_client.server_info().name == "aiosdk"  # the parent is unaffected


def test_context_managers_and_repr(server: object) -> None:
    client = aiosdk.Client(server.http_url, token=server.admin_token)  # type: ignore[attr-defined]
    with client as entered:
        assert entered is client
        assert repr(client).startswith("<Client url=")
        assert server.admin_token not in repr(client)  # type: ignore[attr-defined]


def test_the_callers_context_variables_reach_the_async_code(sync_client: aiosdk.Client) -> None:
    import contextvars

    request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag")
    seen: list[str] = []

    async def read_tag() -> None:
        seen.append(request_tag.get("unset"))

    request_tag.set("job-42")
    portal.call(read_tag())
    assert seen == ["job-42"]


def test_generated_docstrings_speak_sync() -> None:
    import re

    async_words = re.compile(r"(?<!\.)\b(async|await|aclose|Async[A-Z]\w*)\b")  # not httpx.Async*
    for facade in FACADES:
        sync_cls = getattr(aiosdk, facade.sync_name)
        docs = {"class": sync_cls.__doc__ or ""}
        docs |= {
            name: getattr(member, "__doc__", "") or ""
            for name, member in vars(sync_cls).items()
            if not name.startswith("_") or name.endswith("__")
        }
        for name, doc in docs.items():
            assert not async_words.search(doc), f"{facade.sync_name}.{name}: {doc}"


def test_the_facade_works_when_called_from_inside_trio(sync_client: aiosdk.Client) -> None:
    import anyio

    async def script_step() -> str:
        return sync_client.server_info().name  # a blocking call, as a notebook cell might make

    assert anyio.run(script_step, backend="trio") == "aiosdk"
