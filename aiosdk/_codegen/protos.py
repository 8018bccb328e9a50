"""Regenerate the betterproto2 code from ``aiosdk/proto/**/*.proto``.

Run ``python -m aiosdk._codegen.protos`` to rewrite ``aiosdk/proto/_generated``, or add ``--check``
to fail (exit 1) when the committed output differs from what the pinned compiler produces.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
OUTPUT = PROTO_ROOT / "_generated"
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"


def generate(into: Path) -> None:
    """Compile every ``.proto`` under ``aiosdk/proto`` into the package directory ``into``."""
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    into.mkdir(parents=True, exist_ok=True)
    # The compiler plugin is a console script installed next to this interpreter.
    scripts = sysconfig.get_path("scripts")
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_betterproto2_out={into}",
            f"--python_betterproto2_opt={PLUGIN_OPTIONS}",
            *sources,
        ],
        cwd=into,  # the plugin skips __init__.py files that exist relative to its cwd
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stderr}")


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in committed: {n}" for n in cmp.left_only]
    found += [f"missing from committed: {n}" for n in cmp.right_only]
    found += [f"stale: {n}" for n in cmp.diff_files]
    for name in cmp.subdirs:
        found += [f"{name}/{d}" for d in _differences(left / name, right / name)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_generated"
        generate(fresh)
        if args.check:
            problems = _differences(OUTPUT, fresh) if OUTPUT.exists() else ["nothing committed"]
            for problem in problems:
                print(f"aiosdk/proto/_generated: {problem}", file=sys.stderr)
            return 1 if problems else 0
        shutil.rmtree(OUTPUT, ignore_errors=True)
        shutil.copytree(fresh, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
