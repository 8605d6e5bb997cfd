"""``make setup`` shows the Rust build's progress and keeps pip quiet.

The first build of the extension takes minutes: ``setup`` runs it through ``maturin
develop --release`` (cargo's "Compiling ..." lines reach the terminal), then installs the
package editable with pip, quietly and without build isolation, so pip's maturin finds
the extension up to date instead of building it again out of sight. Checked on ``make
-n`` (nothing runs); a real ``make setup`` in a fresh clone is how the recipe was tried.

Source: Makefile.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_setup_shows_the_build_and_keeps_pip_quiet() -> None:
    done = subprocess.run(
        ["make", "-n", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    builds = [line for line in lines if "maturin develop" in line]
    assert len(builds) == 1, lines
    assert "--release" in builds[0] and not {"-q", "--quiet"} & set(builds[0].split())
    pips = [line for line in lines if "pip install" in line]
    assert pips and all("--quiet" in line for line in pips), pips
    editable = [line for line in pips if " -e " in line]
    assert len(editable) == 1 and "--no-build-isolation" in editable[0], pips
    assert "[test]" in editable[0]
    # The build comes before the editable install that would otherwise build it quietly.
    assert lines.index(builds[0]) < lines.index(editable[0])
