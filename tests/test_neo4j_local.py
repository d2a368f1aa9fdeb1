"""The tools/neo4j-local launcher itself: its ready line, and one clear line with a non-zero exit
for a taken port, an unusable data directory or a missing password (the real JVM every time)."""

from __future__ import annotations

import os
import subprocess

import pytest

import neo4j_local
from conftest import LOCAL_NEO4J_CONFIGURED, NEO4J_MARKS, local_neo4j

_MISSING = neo4j_local.missing_tools()
needs_tools = pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "")
needs_session_server = pytest.mark.skipif(
    not LOCAL_NEO4J_CONFIGURED, reason="the tests use the user's NEO4J_URI: no session server of ours to check")
pytestmark = [*NEO4J_MARKS, needs_tools]
PASSWORD = "launcher-test-pw-123"


def _launch(tmp_path, *, port: int = 0, data=None, env_password: str | None = PASSWORD, timeout: float = 600):
    neo4j_local.build()
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_PASSWORD"}
    if env_password is not None:
        env["NEO4J_PASSWORD"] = env_password
    cmd = neo4j_local.java_command(data_dir=data or tmp_path / "db", port=port, cds=False, fast_start=True,
                                   ignore_stdin=True)
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("neo4j-local:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert PASSWORD not in r.stdout + r.stderr and "ready" not in r.stdout
    return lines[0]


@needs_session_server
def test_the_session_server_announced_itself_with_a_bolt_uri():
    local = local_neo4j()
    assert local is not None
    assert local.uri == os.environ["NEO4J_URI"] and local.uri.startswith("bolt://127.0.0.1:")
    assert (local.version or "").startswith("5.26.")
    log = local.log_path.read_text()
    assert os.environ["NEO4J_PASSWORD"] not in log


@needs_session_server
def test_a_taken_port_is_one_line_and_exit_3(tmp_path):
    local = local_neo4j()
    assert local is not None
    line = _one_line(_launch(tmp_path, port=local.port), 3)
    assert f"127.0.0.1:{local.port}" in line and "already in use" in line


def test_an_unusable_data_directory_is_one_line_and_exit_4(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    line = _one_line(_launch(tmp_path, data=tmp_path / "file" / "db"), 4)
    assert "data directory" in line


def test_no_password_is_one_line_and_exit_2(tmp_path):
    line = _one_line(_launch(tmp_path, env_password=None), 2)
    assert "NEO4J_PASSWORD" in line
