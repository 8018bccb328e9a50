"""``aiosdk ls``, ``tree``, ``meta`` and ``search`` against the session's server: the JSON for
scripts parsed and checked, the plain tables, the terminal's rich output, and the errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _cli import ON_A_TERMINAL, cli, isolate, ok, refused, token, unstyled
from _structures import structure

import aiosdk
from aiosdk._sync.testing import Accounts
from aiosdk.cli import main
from aiosdk.testing.accounts import TestUser

RUNS: dict[str, dict[str, Any]] = {  # key: metadata of the runs below NS/experiments
    "run1": {"color": "red", "temperature": 21.5, "tags": ["raw"], "sample": {"id": 7}},
    "run2": {"color": "blue", "temperature": 19, "tags": ["raw", "good"], "sample": {"id": 8}},
    "run3": {"color": "red", "temperature": 25, "note": "warm afternoon", "sample": {"id": 9}},
    "run4": {"color": "green", "temperature": "n/a"},
}


@dataclass
class Tree:
    """A user's namespace holding ``experiments`` (RUNS; in run1 the container ``raw`` and the
    array ``image``) and ``empty``."""

    ns: str
    token: str
    client: aiosdk.Client


@pytest.fixture
def tree(aiosdk_accounts_sync: Accounts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Tree:
    isolate(monkeypatch, tmp_path / "config")
    user: TestUser = aiosdk_accounts_sync.user("alice")
    client = aiosdk_accounts_sync.client(user)
    ns = user.username
    experiments = client.catalog.create_container(
        f"{ns}/experiments", metadata={"pi": ns}, specs=["run"]
    )
    for key, metadata in RUNS.items():
        experiments.create_container(key, metadata=metadata)
    run1 = experiments["run1"]
    assert isinstance(run1, aiosdk.Container)
    run1.create_container("raw")
    run1.new("array", "image", tags=["raw"], file_type="zarr", structure=structure())
    client.catalog.create_container(f"{ns}/empty")
    secret = token(client)
    monkeypatch.setenv("AIOSDK_URL", str(client.url))
    monkeypatch.setenv("AIOSDK_TOKEN", secret)
    return Tree(ns, secret, client)


# --- ls ----------------------------------------------------------------------------------


def test_ls_json_is_an_array_of_nodes(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = json.loads(ok(capsys, "ls", f"{tree.ns}/experiments", "--json"))
    assert [node["key"] for node in nodes] == list(RUNS)
    run1 = nodes[0]
    assert run1["path"] == f"{tree.ns}/experiments/run1"
    assert run1["namespace"] == tree.ns
    assert run1["structure_family"] == "container"
    assert run1["metadata"] == RUNS["run1"]
    assert run1["revision"] == 1  # a child made in it changes the container, not the node
    assert isinstance(run1["updated_at"], str)

    assert json.loads(ok(capsys, "ls", f"{tree.ns}/empty", "--json")) == []
    status, out, err = cli(capsys, "ls", f"/{tree.ns}/experiments/", "--json", "--limit", "2")
    assert status == 0
    assert [node["key"] for node in json.loads(out)] == ["run1", "run2"]
    assert err == "(more entries not shown: --limit 2)\n"  # on stderr: stdout stays JSON
    image = json.loads(ok(capsys, "ls", f"{tree.ns}/experiments/run1", "--json"))[0]
    assert (image["key"], image["structure_family"]) == ("image", "array")
    assert (image["tags"], image["file_type"]) == (["raw"], "zarr")


def test_ls_prints_an_aligned_table(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ok(capsys, "ls", f"{tree.ns}/experiments").splitlines()
    assert lines[0].split() == ["KEY", "FAMILY", "REVISION", "UPDATED"]
    assert [line.split()[:3] for line in lines[1:]] == [[key, "container", "1"] for key in RUNS]
    starts = {line.index("container") for line in lines[1:]}
    assert starts == {lines[0].index("FAMILY")}  # one column, aligned

    status, out, err = cli(capsys, "ls", f"{tree.ns}/experiments", "-n", "3")
    assert status == 0
    assert len(out.splitlines()) == 1 + 3
    assert "more entries not shown: --limit 3" in err

    long = ok(capsys, "ls", f"{tree.ns}/experiments", "--long").splitlines()
    assert long[0].split() == [
        "KEY", "FAMILY", "REVISION", "UPDATED", "SPECS", "TAGS", "PUBLIC", "CREATED", "METADATA"
    ]  # fmt: skip
    assert '{"color":"red","temperature":21.5' in long[1]


def test_ls_of_the_root_lists_namespaces(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    namespaces = json.loads(ok(capsys, "ls", "--json"))
    assert tree.ns in [node["key"] for node in namespaces]
    assert {node["structure_family"] for node in namespaces} == {"container"}
    assert tree.ns in ok(capsys, "ls").split()
    mine = json.loads(ok(capsys, "ls", tree.ns, "--json"))
    assert [node["key"] for node in mine] == ["empty", "experiments"]


# --- tree --------------------------------------------------------------------------------


def test_tree_plain_and_json(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "tree", tree.ns) == "\n".join(
        [
            f"{tree.ns}/",
            "├── empty/",
            "└── experiments/",
            "    ├── run1/",
            "    │   ├── image  (array)",
            "    │   └── raw/",
            "    ├── run2/",
            "    ├── run3/",
            "    └── run4/",
            "",
        ]
    )
    shallow = ok(capsys, "tree", tree.ns, "--depth", "1").splitlines()
    assert shallow == [f"{tree.ns}/", "├── empty/", "└── experiments/"]

    document = json.loads(ok(capsys, "tree", f"{tree.ns}/experiments", "--json", "-d", "3"))
    assert document["path"] == f"{tree.ns}/experiments"
    assert document["metadata"] == {"pi": tree.ns}
    assert [child["key"] for child in document["children"]] == list(RUNS)
    run1 = document["children"][0]
    assert [child["key"] for child in run1["children"]] == ["image", "raw"]
    assert "children" not in run1["children"][0]  # an array has none
    assert run1["children"][1]["children"] == []  # looked at: empty
    limited = json.loads(ok(capsys, "tree", tree.ns, "--json", "--depth", "1"))
    assert "children" not in limited["children"][1]  # not looked at

    top = json.loads(ok(capsys, "tree", "--json", "--depth", "1"))
    assert top["path"] == ""
    assert tree.ns in [child["key"] for child in top["children"]]


# --- meta --------------------------------------------------------------------------------


def test_meta_show(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{tree.ns}/experiments/run1"
    node = json.loads(ok(capsys, "meta", "show", path, "--json"))
    assert node["metadata"] == RUNS["run1"]
    assert node["path"] == path
    text = ok(capsys, "meta", "show", path)
    lines = text.splitlines()
    assert lines[0].split() == ["path", path]
    assert ["family", "container"] in [line.split() for line in lines]
    metadata = text[text.index("metadata\n") + len("metadata\n") :]
    assert json.loads(metadata) == RUNS["run1"]


def test_meta_show_escapes_what_would_drive_the_terminal(
    tree: Tree, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"{tree.ns}/experiments/run3"
    ok(capsys, "meta", "set", path, 'note="\u009b31m\u202eevil"')
    text = ok(capsys, "meta", "show", path)
    assert "\u009b" not in text
    assert "\u202e" not in text
    assert "\\x9b31m\\u202eevil" in text
    node = json.loads(ok(capsys, "meta", "show", path, "--json"))
    assert node["metadata"]["note"] == "\u009b31m\u202eevil"  # --json keeps the data


def test_meta_set_reads_values_as_json(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{tree.ns}/experiments/run2"
    before = json.loads(ok(capsys, "meta", "show", path, "--json"))["revision"]
    out = ok(
        capsys,
        "meta",
        "set",
        path,
        "color=purple",
        "temperature=20.25",
        "count=3",
        "ok=true",
        'label="42"',
        "sample.batch=b7",
        "list=[1, 2]",
    )
    assert out == f"Updated {path}: revision {before + 1}.\n"
    node = json.loads(ok(capsys, "meta", "show", path, "--json"))
    assert node["revision"] == before + 1
    assert node["metadata"] == {
        **RUNS["run2"],
        "color": "purple",
        "temperature": 20.25,
        "count": 3,
        "ok": True,
        "label": "42",
        "sample": {"id": 8, "batch": "b7"},
        "list": [1, 2],
    }
    replaced = json.loads(ok(capsys, "meta", "set", path, "only=1", "--replace", "--json"))
    assert replaced["metadata"] == {"only": 1}
    assert replaced["revision"] == before + 2
    assert json.loads(ok(capsys, "meta", "set", path, "--replace", "--json"))["metadata"] == {}

    assert "nothing to set" in refused(capsys, 2, "meta", "set", path)
    assert "set the same key" in refused(capsys, 2, "meta", "set", path, "a=1", "a.b=2")
    status, _, err = cli(capsys, "meta", "set", path, "novalue")
    assert status == 2
    assert "expected KEY=VALUE" in err


def test_meta_patch_from_a_file_and_stdin(
    tree: Tree,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = f"{tree.ns}/experiments/run3"
    ops = tmp_path / "ops.json"
    ops.write_text(
        json.dumps(
            [
                {"op": "replace", "path": "/color", "value": "orange"},
                {"op": "remove", "path": "/note"},
                {"op": "add", "path": "/sample/size", "value": 2},
            ]
        )
    )
    node = json.loads(ok(capsys, "meta", "patch", path, "--json-patch", str(ops), "--json"))
    assert node["metadata"] == {
        "color": "orange",
        "temperature": 25,
        "sample": {"id": 9, "size": 2},
    }

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"temperature": null, "new": {"a": 1}}'))
    out = ok(capsys, "meta", "patch", path, "--merge", "-")
    assert out.startswith(f"Updated {path}: revision ")
    node = json.loads(ok(capsys, "meta", "show", path, "--json"))
    assert node["metadata"] == {"color": "orange", "sample": {"id": 9, "size": 2}, "new": {"a": 1}}

    failing = tmp_path / "failing.json"
    failing.write_text(json.dumps([{"op": "remove", "path": "/absent"}]))
    assert "does not apply" in refused(
        capsys, 1, "meta", "patch", path, "--json-patch", str(failing)
    )
    assert json.loads(ok(capsys, "meta", "show", path, "--json"))["metadata"]["color"] == "orange"
    not_json = tmp_path / "bad.json"
    not_json.write_text("{nope")
    assert "is not JSON" in refused(capsys, 2, "meta", "patch", path, "--merge", str(not_json))
    merge = tmp_path / "merge.json"
    merge.write_text('{"a": 1}')
    assert "no array" in refused(capsys, 2, "meta", "patch", path, "--json-patch", str(merge))
    assert "no object" in refused(capsys, 2, "meta", "patch", path, "--merge", str(ops))
    assert "cannot read" in refused(
        capsys, 2, "meta", "patch", path, "--merge", str(tmp_path / "missing.json")
    )
    status, _, err = cli(capsys, "meta", "patch", path)
    assert status == 2
    assert "one of the arguments --json-patch --merge is required" in err


# --- search ------------------------------------------------------------------------------


def _keys(capsys: pytest.CaptureFixture[str], tree: Tree, *args: str) -> list[str]:
    nodes = json.loads(ok(capsys, "search", f"{tree.ns}/experiments", "--json", *args))
    return [node["key"] for node in nodes]


def test_search_conditions_and_sort(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    assert _keys(capsys, tree, "--eq", "color=red") == ["run1", "run3"]
    assert _keys(capsys, tree, "--ne", "color=red") == ["run2", "run4"]
    assert _keys(capsys, tree, "--gt", "temperature=20") == ["run1", "run3"]
    assert _keys(capsys, tree, "--le", "temperature=21.5", "--ge", "temperature=19") == [
        "run1",
        "run2",
    ]
    assert _keys(capsys, tree, "--lt", "temperature=z") == ["run4"]  # strings with strings
    assert _keys(capsys, tree, "--eq", "sample.id=8") == ["run2"]
    assert _keys(capsys, tree, "--eq", 'sample.id="8"') == []  # type-aware
    assert _keys(capsys, tree, "--contains", "tags=good") == ["run2"]
    assert _keys(capsys, tree, "--regex", "color=^(gr|bl)") == ["run2", "run4"]
    assert _keys(capsys, tree, "--text", "warm") == ["run3"]
    assert _keys(capsys, tree, "--eq", "color=red", "--text", "cold") == []
    assert _keys(capsys, tree, "--sort=-temperature", "--gt", "temperature=0") == [
        "run3",
        "run1",
        "run2",
    ]
    assert _keys(capsys, tree, "--sort", "color", "--sort=-_key") == [
        "run2",
        "run4",
        "run3",
        "run1",
    ]
    status, out, err = cli(
        capsys, "search", f"{tree.ns}/experiments", "--sort=-_key", "-n1", "--json"
    )
    assert status == 0
    assert [node["key"] for node in json.loads(out)] == ["run4"]
    assert err == "(more entries not shown: --limit 1)\n"


def test_search_table_shows_the_keys_asked_about(
    tree: Tree, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "search", f"{tree.ns}/experiments", "--eq", "color=red", "--sort=-temperature")
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "FAMILY", "REVISION", "UPDATED", "color", "temperature"]
    assert [lines[1].split()[0], *lines[1].split()[-2:]] == ["run3", "red", "25"]
    assert [lines[2].split()[0], *lines[2].split()[-2:]] == ["run1", "red", "21.5"]
    assert len(lines) == 3


def test_a_bad_query_is_one_line(tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    where = f"{tree.ns}/experiments"
    refused(capsys, 1, "search", where, "--regex", "color=(unclosed")
    assert "empty segment" in refused(capsys, 2, "search", where, "--sort=no..such")
    assert "at most 1000" in refused(capsys, 2, "search", where, "--eq", "x=" + "y" * 2000)
    assert "JSON scalar" in refused(capsys, 2, "search", where, "--eq", "x=[1]")
    status, _, _ = cli(capsys, "search", where, "--sort", "-temperature")
    assert status == 2  # argparse: "-temperature" reads as an option; the help says --sort=-F


# --- errors ------------------------------------------------------------------------------


def test_errors_are_one_line(
    tree: Tree,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    aiosdk_accounts_sync: Accounts,
) -> None:
    missing = f"{tree.ns}/experiments/absent"
    for args in (
        ["ls", missing],
        ["tree", missing],
        ["meta", "show", missing],
        ["search", missing],
    ):
        assert refused(capsys, 1, *args).endswith(f": No node at '{missing}'")
    assert "No node at" in refused(capsys, 1, "meta", "set", missing, "a=1")
    image = f"{tree.ns}/experiments/run1/image"
    assert refused(capsys, 1, "ls", image).endswith("is not a container (it is array)")
    assert "the catalog root has no metadata" in refused(capsys, 2, "meta", "set", "/", "a=1")

    # Another user: alice's private nodes are not found (not "forbidden"); one shared with
    # read is readable but not writable.
    bob = aiosdk_accounts_sync.user("bob")
    bob_client = aiosdk_accounts_sync.client(bob)
    tree.client.catalog.get(f"{tree.ns}/experiments/run4").share(bob.username, actions=["read"])
    monkeypatch.setenv("AIOSDK_TOKEN", token(bob_client))
    assert refused(capsys, 1, "ls", f"{tree.ns}/experiments").endswith(
        f": No node at '{tree.ns}/experiments'"
    )
    assert tree.ns not in [n["key"] for n in json.loads(ok(capsys, "ls", "--json"))]
    shared = f"{tree.ns}/experiments/run4"
    assert json.loads(ok(capsys, "meta", "show", shared, "--json"))["key"] == "run4"
    assert "'write' permission" in refused(capsys, 1, "meta", "set", shared, "color=black")

    # A read-only token of alice's own.
    monkeypatch.setenv("AIOSDK_TOKEN", token(tree.client, scope="read"))
    assert json.loads(ok(capsys, "meta", "show", shared, "--json"))["metadata"] == RUNS["run4"]
    assert "read-only" in refused(capsys, 1, "meta", "set", shared, "color=black")

    monkeypatch.setenv("AIOSDK_TOKEN", "aio_" + "x" * 40)
    bad_token = refused(capsys, 1, "ls", tree.ns)
    assert "token" in bad_token
    assert "aiosdk login" in bad_token
    monkeypatch.delenv("AIOSDK_URL")
    assert "no server URL" in refused(capsys, 2, "ls")
    assert "http(s)://" in refused(capsys, 2, "ls", "--url", "ftp://example.org")
    monkeypatch.setenv("AIOSDK_URL", "http://127.0.0.1:9")  # nobody there
    assert "ConnectError" in refused(capsys, 1, "ls")


def test_a_profile_names_the_server_and_its_token(
    tree: Tree, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Path(os.environ["AIOSDK_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "profiles.toml").write_text(
        f'[profiles.lab]\nurl = "{tree.client.url}"\ntoken = "{tree.token}"\n'
    )
    monkeypatch.delenv("AIOSDK_URL")
    monkeypatch.delenv("AIOSDK_TOKEN")
    listed = json.loads(ok(capsys, "ls", tree.ns, "--json", "--profile", "lab"))
    assert [node["key"] for node in listed] == ["empty", "experiments"]
    monkeypatch.setenv("AIOSDK_PROFILE", "lab")
    assert "experiments" in ok(capsys, "ls", tree.ns)
    assert "no profile 'nope'" in refused(capsys, 2, "ls", "--profile", "nope")


# --- as a user runs them -----------------------------------------------------------------


def test_the_command_itself(tree: Tree) -> None:
    """``python -m aiosdk.cli``: JSON on stdout, and an error with its status."""
    run = [sys.executable, "-m", "aiosdk.cli"]
    listed = subprocess.run(
        [*run, "ls", f"{tree.ns}/experiments", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert listed.returncode == 0, listed.stderr
    assert [node["key"] for node in json.loads(listed.stdout)] == list(RUNS)
    missing = subprocess.run(
        [*run, "meta", "show", f"{tree.ns}/nothing"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("aiosdk meta show: ")
    assert len(missing.stderr.splitlines()) == 1


class _Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_without_rich_gets_plain_text(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    def shown() -> str:
        screen, kept = _Terminal(), sys.stdout
        sys.stdout = screen
        try:
            assert main(["ls", f"{tree.ns}/experiments"]) == 0
        finally:
            sys.stdout = kept
        return screen.getvalue()

    monkeypatch.setenv("COLUMNS", "120")
    styled = shown()
    assert "\x1b[1mKEY" in styled  # rich: a bold header
    assert unstyled(styled).split()[:4] == ["KEY", "FAMILY", "REVISION", "UPDATED"]
    monkeypatch.setitem(sys.modules, "rich.console", None)  # as if rich were not installed
    plain = shown()
    assert "\x1b[" not in plain
    assert plain.splitlines()[0] == "KEY   FAMILY     REVISION  UPDATED"
    assert [line.split()[0] for line in plain.splitlines()[1:]] == list(RUNS)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_on_a_terminal_the_output_is_rich(tree: Tree) -> None:
    def shown(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", ON_A_TERMINAL, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    table = shown("ls", f"{tree.ns}/experiments")
    assert "\x1b[" in table  # styled: rich wrote it
    plain = unstyled(table)
    for shown_text in ("KEY", "run1", "run4"):
        assert shown_text in plain
    branches = unstyled(shown("tree", tree.ns))
    for shown_text in ("experiments/", "raw/", "└──"):
        assert shown_text in branches
    node = unstyled(shown("meta", "show", f"{tree.ns}/experiments/run1"))
    assert '"temperature": 21.5' in node
    # --json stays JSON on a terminal too.
    assert (
        json.loads(unstyled(shown("meta", "show", f"{tree.ns}/empty", "--json")))["key"] == "empty"
    )
