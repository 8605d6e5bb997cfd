"""README's snippets run as written, and again (a second run must not fail): the official
Python client's against the served chat example, the offline CLI lines from the repository
root.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def official_client_snippet() -> str:
    [block] = [
        b
        for b in re.findall(r"```python\n(.*?)```", README, re.S)
        if b.startswith("# the official Convex Python client")
    ]
    # The last lines follow the subscription forever: stop after its first result.
    return block.replace(
        '    print([m["body"] for m in messages])', "    print(messages)\n    break"
    )


def test_the_official_client_snippet_runs_twice(chat_server: ServerProcess) -> None:
    source = official_client_snippet().replace("http://127.0.0.1:3210", chat_server.url)
    assert "break" in source
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert "channel exists" not in outputs[0] and "channel exists" in outputs[1]
    assert outputs[1].count("'hi'") >= 2  # both runs' messages


def test_the_offline_cli_lines_run_from_the_repository_root(tmp_path: Path) -> None:
    block = re.search(r"CLI \(.*?```sh\n(.*?)```", README, re.S)
    assert block is not None
    lines = [x for x in block.group(1).splitlines() if x.startswith("python -m reactive run ")]
    assert lines, "README lost its `python -m reactive run` line"
    db = f"sqlite:///{tmp_path / 'app.db'}"
    for _ in range(2):
        for line in lines:
            argv = shlex.split(line.split("#")[0])
            argv = [sys.executable if a == "python" else a for a in argv]
            argv = [db if a == "sqlite:///app.db" else a for a in argv]
            proc = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ)
            )
            assert proc.returncode == 0, (line, proc.stderr)
