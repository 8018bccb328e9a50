"""``aiosdk get``, ``put``, ``export`` and ``copy`` against real servers (the session's, and a
second one for copies): local files round-trip with equal values, slices and columns match
numpy's and pyarrow's answers, exports parse back, and the refusals are one line. Progress: none
in a pipe, a bar on a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.feather
import pyarrow.parquet as pq
import pytest
from _cli import ON_A_TERMINAL, cli, isolate, ok, refused, token, unstyled

import aiosdk
from aiosdk._sync.testing import Accounts
from aiosdk.server import ServerConfig, ServerThread

FRAMES = np.random.default_rng(3).standard_normal((300, 70))
EVENTS = pa.table(
    {
        "t": np.arange(1000, dtype=np.int64),
        "v": np.random.default_rng(4).random(1000),
        "s": [f"e{i % 7}" for i in range(1000)],
    }
)
COORDS = np.array([[0, 2, 4], [1, 3, 0]])
VALUES = np.array([1.5, -2.0, 3.0])


@dataclass
class Lab:
    """A user's ``NS/lab`` holding the array ``frames`` (FRAMES, chunks 64 x 32), the table
    ``events`` (EVENTS, 3 partitions), the sparse array ``sp`` and the container ``box``; the
    commands run in ``here`` (the current directory) with the user's token."""

    ns: str
    client: aiosdk.Client
    here: Path

    @property
    def path(self) -> str:
        return f"{self.ns}/lab"


@pytest.fixture
def lab(aiosdk_accounts_sync: Accounts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    isolate(monkeypatch, tmp_path / "config")
    user = aiosdk_accounts_sync.user("alice")
    client = aiosdk_accounts_sync.client(user)
    grp = client.catalog.create_container(f"{user.username}/lab")
    grp.write_array(FRAMES, key="frames", chunks=(64, 32), metadata={"unit": "V"})
    grp.write_dataframe(EVENTS, key="events", partitions=3)
    grp.write_sparse(COORDS, VALUES, shape=(5, 4), key="sp")
    grp.create_container("box")
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("AIOSDK_URL", str(client.url))
    monkeypatch.setenv("AIOSDK_TOKEN", token(client))
    return Lab(user.username, client, here)


def _node(capsys: pytest.CaptureFixture[str], path: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(ok(capsys, "meta", "show", path, "--json"))
    return document


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m aiosdk.cli ARGS`` in a subprocess, stdout and stderr pipes."""
    return subprocess.run(
        [sys.executable, "-m", "aiosdk.cli", *args],
        capture_output=True,
        timeout=60,
        env=os.environ,
        cwd=cwd,
    )


# --- get and put -------------------------------------------------------------------------


def test_an_array_round_trips(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "get", f"{lab.path}/frames") == f"{lab.path}/frames -> frames.npy\n"
    assert np.array_equal(np.load(lab.here / "frames.npy"), FRAMES)
    assert os.listdir(lab.here) == ["frames.npy"]  # no temporary file left behind

    ok(capsys, "get", f"{lab.path}/frames", "part.npy", "--slice", "10:20, ::-3")
    assert np.array_equal(np.load("part.npy"), FRAMES[10:20, ::-3])
    ok(capsys, "get", f"{lab.path}/frames", "row.npy", "--slice=-1,...")
    assert np.array_equal(np.load("row.npy"), FRAMES[-1, ...])
    ok(capsys, "get", f"{lab.path}/frames", "cols.csv", "--slice=:,-5:")
    assert np.array_equal(np.loadtxt("cols.csv", delimiter=","), FRAMES[:, -5:])  # exact

    ok(
        capsys,
        "put",
        "part.npy",
        f"{lab.path}/box/part",
        "--chunks",
        "4,8",
        "--metadata",
        "unit=mV",
        "--metadata",
        "gain.x=2",
        "--spec",
        "frames",
    )
    node = _node(capsys, f"{lab.path}/box/part")
    assert node["metadata"] == {"unit": "mV", "gain": {"x": 2}}
    assert node["specs"] == ["frames"]
    assert node["structure"]["chunks"] == [4, 8]  # type: ignore[index]
    ok(capsys, "get", f"{lab.path}/box/part", "back.npy")
    assert np.array_equal(np.load("back.npy"), FRAMES[10:20, ::-3])


def test_a_table_round_trips(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "get", f"{lab.path}/events")
    assert pq.read_table("events.parquet").equals(EVENTS)
    ok(capsys, "get", f"{lab.path}/events", "e.arrow")
    assert pa.ipc.open_file("e.arrow").read_all().equals(EVENTS)
    ok(capsys, "get", f"{lab.path}/events", "e.feather", "--columns", "v,s")
    assert pyarrow.feather.read_table("e.feather").equals(EVENTS.select(["v", "s"]))
    ok(capsys, "get", f"{lab.path}/events", "e.csv", "--columns", "t", "--columns", "v")
    assert pyarrow.csv.read_csv("e.csv").equals(EVENTS.select(["t", "v"]))

    for name in ("events.parquet", "e.arrow", "e.feather", "e.csv"):
        key = name.replace(".", "_")
        ok(capsys, "put", name, f"{lab.path}/box/{key}", "--partitions", "4")
        assert _node(capsys, f"{lab.path}/box/{key}")["structure"]["npartitions"] == 4  # type: ignore[index]
    ok(capsys, "get", f"{lab.path}/box/events_parquet", "again.parquet")
    assert pq.read_table("again.parquet").equals(EVENTS)
    ok(capsys, "get", f"{lab.path}/box/e_csv", "again.arrow")
    assert pa.ipc.open_file("again.arrow").read_all().equals(EVENTS.select(["t", "v"]))


def test_a_sparse_array_round_trips(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "get", f"{lab.path}/sp")
    with np.load("sp.npz") as saved:
        assert np.array_equal(saved["coords"], COORDS)
        assert np.array_equal(saved["data"], VALUES)
        assert saved["shape"].tolist() == [5, 4]
    ok(capsys, "get", f"{lab.path}/sp", "dense.npy")
    dense = np.zeros((5, 4))
    dense[tuple(COORDS)] = VALUES
    assert np.array_equal(np.load("dense.npy"), dense)
    ok(capsys, "put", "sp.npz", f"{lab.path}/box/sp")
    ok(capsys, "get", f"{lab.path}/box/sp", "back.npy")
    assert np.array_equal(np.load("back.npy"), dense)


def test_get_writes_to_stdout_in_a_pipe_without_a_bar(lab: Lab) -> None:
    done = _run("get", f"{lab.path}/frames", "-", "--format", "npy")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no bar, no message: stderr is not a terminal
    assert np.array_equal(np.load(io.BytesIO(done.stdout)), FRAMES)
    table = _run("get", f"{lab.path}/events", "-", "-f", ".parquet", "--columns", "t")
    assert table.returncode == 0, table.stderr
    assert pq.read_table(io.BytesIO(table.stdout)).equals(EVENTS.select(["t"]))

    saved = _run("get", f"{lab.path}/frames", "f.npy", cwd=lab.here)
    assert (saved.returncode, saved.stderr) == (0, b"")
    forced = _run("get", f"{lab.path}/frames", "g.npy", "--progress", cwd=lab.here)
    assert forced.returncode == 0, forced.stderr
    lines = forced.stderr.decode().splitlines()
    assert lines[-1] == f"get {lab.path}/frames: 164.1 KiB of 164.1 KiB"  # 300 x 70 x 8 bytes
    assert "\x1b[" not in forced.stderr.decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_on_a_terminal_a_bar_shows(lab: Lab) -> None:
    def shown(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", ON_A_TERMINAL, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TERM": "xterm-256color"},
            cwd=lab.here,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    screen = shown("get", f"{lab.path}/frames", "t.npy")
    assert "━" in screen  # rich's bar
    assert f"{lab.path}/frames -> t.npy" in unstyled(screen)
    quiet = shown("get", f"{lab.path}/frames", "u.npy", "--no-progress")
    assert "━" not in quiet
    assert unstyled(quiet) == f"{lab.path}/frames -> u.npy\n"


# --- export ------------------------------------------------------------------------------


def test_export_streams_what_the_server_renders(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = ok(capsys, "export", f"{lab.path}/frames", "--list").splitlines()
    assert "application/x-npy" in formats
    assert "text/csv" in ok(capsys, "export", f"{lab.path}/events", "--list").splitlines()

    ok(capsys, "export", f"{lab.path}/frames", "frames.npy")
    assert np.array_equal(np.load("frames.npy"), FRAMES)
    ok(capsys, "export", f"{lab.path}/events", "events.data", "--format", "parquet")
    assert pq.read_table("events.data").equals(EVENTS)
    out = ok(capsys, "export", f"{lab.path}/events", "-", "--format", "text/csv")
    assert pyarrow.csv.read_csv(io.BytesIO(out.encode())).equals(EVENTS)
    assert sorted(os.listdir(lab.here)) == ["events.data", "frames.npy"]

    assert "exists: give --force" in refused(
        capsys, 2, "export", f"{lab.path}/frames", "frames.npy"
    )
    ok(capsys, "export", f"{lab.path}/frames", "frames.npy", "--force")
    assert "--format" in refused(capsys, 2, "export", f"{lab.path}/frames", "-")
    assert "OUTPUT" in refused(capsys, 2, "export", f"{lab.path}/frames")
    assert "is a container" in refused(capsys, 1, "export", f"{lab.path}/box", "--list")


# --- refusals ----------------------------------------------------------------------------


def test_refusals_are_one_line(
    lab: Lab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = f"{lab.path}/frames"
    ok(capsys, "get", frames)
    assert "frames.npy exists: give --force" in refused(capsys, 2, "get", frames)
    ok(capsys, "get", frames, "--force")
    assert "exists: give --force" in refused(capsys, 2, "get", frames, "frames.npy")
    assert ".txt is not a format for an array" in refused(capsys, 2, "get", frames, "a.txt")
    assert ".parquet is not a format" in refused(capsys, 2, "get", frames, "-f", "parquet")
    assert "CSV holds 1-d or 2-d" in refused(capsys, 2, "get", frames, "c.csv", "--slice=1,-1")
    assert "--columns is for tables" in refused(capsys, 2, "get", frames, "--columns", "a")
    assert "--slice is for arrays" in refused(
        capsys, 2, "get", f"{lab.path}/events", "--slice", "1"
    )
    assert "--format" in refused(capsys, 2, "get", frames, "-")
    assert "is a container" in refused(capsys, 1, "get", f"{lab.path}/box")
    assert "No node at" in refused(capsys, 1, "get", f"{lab.path}/absent")
    for text in ("1:2:3:4", "a:b", "1,,2", "::0", "...,..."):
        status, out, err = cli(capsys, "get", frames, f"--slice={text}")
        assert (status, out) == (2, "")
        assert "argument --slice" in err
    assert not list(lab.here.glob(".*.part"))

    np.save("small.npy", np.arange(5))
    assert "not a file put reads" in refused(capsys, 2, "put", "frames.npy.txt", f"{lab.path}/x")
    assert "CONTAINER/KEY" in refused(capsys, 2, "put", "small.npy", lab.ns)
    assert "cannot read" in refused(capsys, 2, "put", "absent.npy", f"{lab.path}/x")
    assert "--partitions is for tables" in refused(
        capsys, 2, "put", "small.npy", f"{lab.path}/x", "--partitions", "2"
    )
    Path("bad.parquet").write_bytes(b"not parquet")
    assert "not a .parquet file" in refused(capsys, 2, "put", "bad.parquet", f"{lab.path}/x")
    assert "No node at" in refused(capsys, 1, "put", "small.npy", f"{lab.path}/nowhere/x")
    assert "not a container" in refused(capsys, 1, "put", "small.npy", f"{frames}/x")
    taken = refused(capsys, 1, "put", "small.npy", frames)
    assert "run the command again" not in taken
    assert np.array_equal(lab.client.catalog.get(frames).read(), FRAMES)  # type: ignore[attr-defined]

    # Without pyarrow (the dataframe extra): the message says which extra to install.
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    missing = refused(capsys, 2, "put", "bad.parquet", f"{lab.path}/x")
    assert "pip install 'aiosdk[dataframe]'" in missing
    missing = refused(capsys, 2, "get", f"{lab.path}/events", "e.parquet")
    assert "pip install 'aiosdk[dataframe]'" in missing
    assert not Path("e.parquet").exists()
    assert not list(lab.here.glob(".*.part"))  # the failed write left no partial file

    monkeypatch.delenv("AIOSDK_URL")
    for args in (["get", frames], ["put", "small.npy", frames], ["export", frames, "--list"]):
        assert "no server URL" in refused(capsys, 2, *args)


# --- copy --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_server() -> Iterator[ServerThread]:
    """A second server, for copies between two."""
    with ServerThread(ServerConfig()) as thread:
        yield thread


def test_copy_between_two_servers_and_again(
    lab: Lab, capsys: pytest.CaptureFixture[str], other_server: ServerThread
) -> None:
    with aiosdk.Client(other_server.http_url, token=other_server.admin_token) as admin:
        user = f"{lab.ns}-there"
        admin.admin.create_user(user)
        admin.catalog.create_container(f"{user}/inbox")
        config = Path(os.environ["AIOSDK_CONFIG_DIR"])
        config.mkdir(parents=True, exist_ok=True)
        (config / "profiles.toml").write_text(
            f'[profiles.there]\nurl = "{other_server.http_url}"\n'
            f'token = "{other_server.admin_token}"\n'
        )
        ok(capsys, "meta", "set", lab.path, "pi=alice")

        out = ok(capsys, "copy", lab.path, f"{user}/inbox", "--to-profile", "there", "-j", "3")
        assert out == f"{lab.path} -> {user}/inbox/lab on {other_server.http_url}\n"
        copied = admin.catalog.get(f"{user}/inbox/lab")
        assert dict(copied.metadata) == {"pi": "alice"}
        assert np.array_equal(copied["frames"].read(), FRAMES)  # type: ignore[index]
        there = f"{user}/inbox/lab"
        ok(capsys, "get", f"{there}/events", "events.arrow", "--profile", "there")
        assert pa.ipc.open_file("events.arrow").read_all().equals(EVENTS)
        ok(capsys, "get", f"{there}/sp", "sp.npz", "--profile", "there")
        with np.load("sp.npz") as saved:
            assert np.array_equal(saved["coords"], COORDS)
            assert np.array_equal(saved["data"], VALUES)
        assert copied["frames"].metadata["unit"] == "V"  # type: ignore[index]

        def revisions() -> dict[str, int]:
            node = admin.catalog.get(f"{user}/inbox/lab")
            found = {key: child.revision for key, child in node.items()}  # type: ignore[attr-defined]
            return {"": node.revision, **found}

        before = revisions()
        ok(capsys, "copy", lab.path, f"{user}/inbox", "--to-profile", "there")  # resumes: no-op
        assert revisions() == before

        # The same server (no --to-*), under another key; a conflict is the copy's own message.
        ok(capsys, "copy", f"{lab.path}/frames", f"{lab.path}/box", "--key", "frames2")
        assert np.array_equal(lab.client.catalog.get(f"{lab.path}/box/frames2").read(), FRAMES)  # type: ignore[attr-defined]
        clash = refused(
            capsys, 1, "copy", f"{lab.path}/events", f"{lab.path}/box", "--key", "frames2"
        )
        assert "not overwritten" in clash
        assert "run the command again" not in clash
        assert "not a container" in refused(
            capsys, 1, "copy", f"{lab.path}/events", f"{lab.path}/frames"
        )
        assert "token" in refused(
            capsys, 1, "copy", lab.path, f"{user}/inbox", "--to-url", other_server.http_url
        )  # $AIOSDK_TOKEN is the first server's
        assert "catalog root" in refused(capsys, 2, "copy", "/", f"{user}/inbox")
        assert "copy itself" in refused(capsys, 2, "copy", lab.path, f"{lab.path}/box")
