"""``python -m reactive.server``'s options: refused values and what ``--help`` says.

* ``--max-frame-bytes`` is a limit like the others: zero, negative or non-numeric values
  are a usage error (exit status 2) naming the option, before anything opens.
* The help of ``--jwt-key``, ``--jwt-issuer`` and ``--jwt-audience`` names both kinds of
  key (a shared secret for HS256 tokens, a PEM public key for RS256 and ES256 tokens):
  issuer and audience apply to every token the key verifies (tested in
  ``test_auth_hardening.py::test_asymmetric_tokens_verify_with_a_pem_public_key``).

Source: python/reactive/server/__main__.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactive.server", *args],
        capture_output=True,
        text=True,
        timeout=60,  # a server that did start would not exit: the test fails here
        cwd=str(ROOT),
    )


@pytest.mark.parametrize("value", ["0", "-1", "-16777216"])
def test_max_frame_bytes_must_be_positive(tmp_path: Path, value: str) -> None:
    db = tmp_path / "never.db"
    done = _server("--db", f"sqlite:///{db}", "--port", "0", "--max-frame-bytes", value)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert f"--max-frame-bytes must be positive and finite, not {value}" in done.stderr
    assert "serving" not in done.stdout
    assert not db.exists()


def test_max_frame_bytes_must_be_an_integer(tmp_path: Path) -> None:
    done = _server("--db", f"sqlite:///{tmp_path / 'never.db'}", "--max-frame-bytes", "1.5")
    assert done.returncode == 2 and "--max-frame-bytes" in done.stderr, done.stderr


def test_jwt_options_help_names_both_kinds_of_key() -> None:
    done = _server("--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout.split("options:", 1)[1]

    def help_of(flag: str) -> str:
        # The option's line and its indented continuation lines, up to the next option.
        match = re.search(rf"^  {flag} [A-Z_]+(.*?)(?=^  -)", text, re.M | re.S)
        assert match is not None, flag
        return re.sub(r"\s+", " ", match[1])

    key = help_of("--jwt-key")
    assert "shared secret" in key and "HS256" in key, key
    assert "PEM public key" in key and "RS256" in key and "ES256" in key, key
    for flag, claim in (("--jwt-issuer", "iss"), ("--jwt-audience", "aud")):
        described = help_of(flag)
        assert claim in described and "--jwt-key" in described, described
        assert "HS256" not in described, described  # not only HS256 tokens
