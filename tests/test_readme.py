"""The README's snippets run as written: each Python block is a whole script, or a test module
that a user's pytest runs (with aiosdk's plugin)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
TEST_MODULES = [
    source for source in SNIPPETS if "\ndef test_" in source or "\nasync def test_" in source
]
SCRIPTS = [source for source in SNIPPETS if source not in TEST_MODULES]


def test_the_readme_has_snippets() -> None:
    assert len(SCRIPTS) >= 4
    assert TEST_MODULES


@pytest.mark.parametrize("source", SCRIPTS, ids=[f"script{i}" for i in range(len(SCRIPTS))])
def test_a_readme_script_runs(source: str, tmp_path: Path) -> None:
    # In a directory of its own, as a user's would be: a script may write files there.
    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout  # each prints what it did
    assert "aio_" not in result.stdout  # and shows no secret


@pytest.mark.parametrize(
    "source", TEST_MODULES, ids=[f"tests{i}" for i in range(len(TEST_MODULES))]
)
def test_a_readme_test_module_passes(source: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_from_readme=source)
    result = pytester.runpytest_subprocess("-p", "anyio", "-q", "-W", "error")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= source.count("def test_"), result.stdout.str()
    assert set(outcomes) == {"passed"}, result.stdout.str()
