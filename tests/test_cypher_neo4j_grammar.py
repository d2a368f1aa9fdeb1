"""Every library query is valid Neo4j 5 Cypher, by Neo4j's own parser and semantic analysis.

``tools/cypher-lint/lint.mjs`` runs ``@neo4j-cypher/language-support`` (Neo4j's Cypher parser and
its semantic analysis, compiled to JavaScript) over files; ``make test`` installs it with npm. The
queries are not executed: that needs a Neo4j server (tests/test_store_neo4j.py, NEO4J_URI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_DIR = ROOT / "tools" / "cypher-lint"
LINT = LINT_DIR / "lint.mjs"
INSTALLED = LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support" / "package.json"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not INSTALLED.is_file(),
    reason="needs node and tools/cypher-lint/node_modules (make test runs npm ci --prefix tools/cypher-lint)",
)


def _neo4j_files() -> list[Path]:
    """The library files Neo4j runs: portable ones and .neo4j variants, not .falkordb variants."""
    return sorted(p for p in (ROOT / "cypher").glob("*.cypher") if not p.name.endswith(".falkordb.cypher"))


def _lint(paths: list[Path]) -> tuple[int, dict[str, dict]]:
    proc = subprocess.run(["node", str(LINT), *map(str, paths)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode in (0, 1), f"linter failed (rc {proc.returncode}): {proc.stderr.strip()}"
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    by_file = {Path(r["file"]).name: r for r in reports}
    assert sorted(by_file) == sorted(p.name for p in paths), "one report per file expected"
    return proc.returncode, by_file


def test_library_queries_are_valid_neo4j5_cypher():
    files = _neo4j_files()
    assert len(files) >= 10
    rc, reports = _lint(files)
    problems = {name: r["errors"] for name, r in reports.items() if r["errors"]}
    assert not problems, "Neo4j 5 rejects:\n" + json.dumps(problems, indent=1)
    assert rc == 0


VALID = """// name: ok
// param: model string
// param: limit int = 5
MATCH (m:Model) WHERE m.name = $model
MATCH (m)-[:HAS_LAYER]->(l:Layer)
WITH m, l ORDER BY l.depth
RETURN m.name AS model, collect(l.name)[..$limit] AS layers
"""

BROKEN = {
    # file stem: (query, a substring of the error Neo4j reports)
    "syntax": ("MATCH (n RETURN n\n", "Invalid input 'RETURN'"),
    "undefined_variable": ("MATCH (n:Model)\nRETURN m.name AS name\n", "Variable `m` not defined"),
    "exists_unclosed": ("MATCH (n) WHERE EXISTS { MATCH (n)-->() RETURN n\n", "Invalid input"),
    "exists_scope": ("MATCH (n) WHERE EXISTS { MATCH (n)-->(k) }\nRETURN k AS k\n", "Variable `k` not defined"),
    "order_after_aggregation": ("MATCH (n) RETURN count(*) AS c ORDER BY n.x\n",
                                "it is not possible to access variables declared before"),
    "pattern_in_size": ("MATCH (n) RETURN size((n)-->()) AS d\n", "pattern expression"),
    "unknown_function": ("MATCH (n) RETURN apoc.coll.sum([n.x]) AS s\n", "Function apoc.coll.sum is not present"),
    "undeclared_parameter": ("// param: model string\nMATCH (n {name: $model}) RETURN n LIMIT $limit\n",
                             "Parameter $limit is not defined"),
}


def test_broken_queries_are_reported(tmp_path):
    paths = []
    for stem, (text, _) in BROKEN.items():
        paths.append(tmp_path / f"{stem}.cypher")
        paths[-1].write_text(text)
    paths.append(tmp_path / "valid.cypher")
    paths[-1].write_text(VALID)
    rc, reports = _lint(paths)
    assert rc == 1
    assert reports["valid.cypher"]["errors"] == []
    for stem, (_, expected) in BROKEN.items():
        messages = [e["message"] for e in reports[f"{stem}.cypher"]["errors"]]
        assert any(expected in m for m in messages), f"{stem}: expected {expected!r}, got {messages}"
    [err] = reports["undefined_variable.cypher"]["errors"]
    assert (err["line"], err["column"]) == (2, 8)
