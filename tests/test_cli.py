"""`python -m reactive`: run, data, check, tables, and the chat demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "examples" / "chat"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactive", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_run_data_check_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    created = cli("run", "channels:create", '{"name": "general"}', "--app", str(CHAT), "--db", url)
    assert created.returncode == 0, created.stderr
    channel_id = json.loads(created.stdout.strip().splitlines()[-1])
    assert isinstance(channel_id, str) and len(channel_id) >= 31

    sent = cli(
        "--db",
        url,
        "run",
        "messages:send",
        json.dumps({"channel": "general", "author": "ada", "body": "hello"}),
        "--app",
        str(CHAT),
    )
    assert sent.returncode == 0, sent.stderr

    listed = cli("run", "messages:list", '{"channel": "general"}', "--app", str(CHAT), "--db", url)
    assert listed.returncode == 0, listed.stderr
    messages = json.loads(listed.stdout.strip().splitlines()[-1])
    assert [m["body"] for m in messages] == ["hello"]

    data = cli("data", "messages", "--db", url)
    assert data.returncode == 0, data.stderr
    rows = [json.loads(line) for line in data.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["author"] == "ada" and "_creationTime" in rows[0]

    check = cli("check", "--db", url)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 problem" in check.stdout or ": ok" in check.stdout

    tables = cli("tables", "--db", url)
    assert tables.returncode == 0
    assert "messages (1 documents)" in tables.stdout and "by_channel" in tables.stdout


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    taken = cli("run", "channels:create", '{"name": "x"}', "--app", str(CHAT), "--db", url)
    assert taken.returncode == 0
    again = cli("run", "channels:create", '{"name": "x"}', "--app", str(CHAT), "--db", url)
    assert again.returncode == 1
    assert "ConvexError" in again.stderr and "TAKEN" in again.stderr
    bad_json = cli("run", "channels:create", "{not json", "--app", str(CHAT), "--db", url)
    assert bad_json.returncode != 0 and "not valid JSON" in bad_json.stderr
    missing = cli("run", "nope:nothing", "{}", "--app", str(CHAT), "--db", url)
    assert missing.returncode == 1 and "FunctionNotFoundError" in missing.stderr
    wrong_type = cli("run", "channels:create", '{"name": 5}', "--app", str(CHAT), "--db", url)
    assert wrong_type.returncode == 1 and "ArgumentValidationError" in wrong_type.stderr


def test_chat_demo_runs_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    for _ in range(2):  # a second run reuses the database
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "chat_demo.py"), "--db", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "subscription update: latest in #general" in out
        assert "no update for the #random commit" in out
        assert "0 problems" in out
