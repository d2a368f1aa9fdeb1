"""Bad input and faults: malformed runs, a server killed mid-ingest, concurrent ingests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner

from conftest import graph_dump, redis_pids_for
from neurflow_graph.circuit import load_circuit
from neurflow_graph.cli import cli
from neurflow_graph.errors import StoreConnectionError
from neurflow_graph.store.base import GraphStore
from neurflow_graph.store.falkor import FalkorStore, server_status
from neurflow_graph.store.ingest import ingest, ingest_circuit
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit

ROOT = Path(__file__).resolve().parents[1]


def small(index: int, name: str, **kw):
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def _reference_dump(store, circuits, run_dirs=None):
    """The graph of ``circuits`` ingested cleanly into the (empty) ``store`` (from ``run_dirs``,
    recorded as Run.run_dir, when given)."""
    for c, d in zip(circuits, run_dirs or [None] * len(circuits)):
        ingest(store=store, circuit=c, run_dir=d)
    return graph_dump(store)


# ---- malformed run directories ------------------------------------------------------------------

def _good(tmp_path: Path, name: str = "cat", index: int = 0) -> Path:
    d = tmp_path / "runs" / name
    small(index, name).save(d)
    return d


def _truncate(d: Path) -> None:
    text = (d / "circuit.json").read_text()
    (d / "circuit.json").write_text(text[: len(text) // 2])


def _invalid(d: Path) -> None:
    data = load_circuit(d).to_dict()  # rewritten inline (schema_version 1, still read)
    data["edges"][0]["child_index"] = 10_000  # names a neuron that does not exist
    (d / "circuit.json").write_text(json.dumps(data))


def _partial(d: Path) -> None:
    # extraction died inside Circuit.save, before the atomic rename: the temp file it really leaves
    circuit = load_circuit(d)
    with pytest.raises(KeyboardInterrupt), mock.patch("neurflow_graph.fileio.os.replace", side_effect=KeyboardInterrupt):
        with mock.patch("neurflow_graph.fileio.Path.unlink"):  # as if killed: no cleanup either
            circuit.save(d)
    (d / "circuit.json").unlink()
    assert list(d.glob(".circuit.json.*.tmp")) + list(d.glob(".circuit-*.npz.*.tmp"))  # v2 writes the arrays first


def _checkpoints_only(d: Path) -> None:
    (d / "circuit.json").unlink()  # extraction interrupted after some layers
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "manifest.json").write_text("{}")


# An unfinished run beside finished ones under a parent no longer stops the ingest of its siblings:
# tests/test_extract_many_ingest.py covers that (exit 4, the siblings ingested).
@pytest.mark.parametrize("damage, fragment, whole", [
    (_truncate, "not valid JSON", True), (_invalid, "not a neuron", True), (_partial, "no circuit.json", False),
    (_checkpoints_only, "no circuit.json", False)])
def test_malformed_run_is_a_clear_error_and_nothing_is_written(tmp_path, embedded_dir, damage, fragment, whole):
    _good(tmp_path, "dog", 1)
    bad = _good(tmp_path, "cat", 0)
    damage(bad)
    target = tmp_path / "runs" if whole else bad
    res = CliRunner().invoke(cli, ["ingest", str(target), "--store", f"embedded:{embedded_dir}"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("Error: ") and fragment in res.output
    with FalkorStore(embedded_dir) as s:
        assert list_runs(store=s) == [] and s.read("MATCH (n) RETURN count(n) AS c") == [{"c": 0}]


def test_missing_run_directory(tmp_path, embedded_dir):
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "nope"), "--store", f"embedded:{embedded_dir}"])
    assert res.exit_code == 2 and "nope" in res.output and res.output.count("\n") == 1


def test_cli_ingest_prints_one_line_per_run_and_stops_its_server(tmp_path, embedded_dir):
    _good(tmp_path, "cat", 0), _good(tmp_path, "dog", 1)
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "runs"), "--store", f"embedded:{embedded_dir}"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 3 and all("rel/s" in ln for ln in lines)
    assert all(" nodes, " in ln and " relationships in " in ln for ln in lines[:2])
    assert redis_pids_for(embedded_dir) == []  # the command stopped the server it started
    again = CliRunner().invoke(cli, ["ingest", str(tmp_path / "runs" / "cat"), "--store", f"embedded:{embedded_dir}"])
    assert again.exit_code == 0 and "already complete" in again.output


# ---- the server killed mid-ingest -------------------------------------------------------------------

class _KillsServer:
    """Wraps a FalkorStore; SIGKILLs its server before the ``n``-th write."""

    def __init__(self, store, data_dir, n):
        self._store, self._dir, self._left = store, data_dir, n
        self.backend = store.backend

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, query, params=None):
        self._left -= 1
        if self._left == 0:
            os.kill(server_status(self._dir).pid, signal.SIGKILL)
        return self._store.write(query, params)

    def write_rows(self, query, rows, **kw):
        return GraphStore.write_rows(self, query, rows, **kw)


@pytest.mark.parametrize("kill_at", [2, 12])
def test_server_killed_mid_ingest_then_reingest(embedded_dir, falkor_graph, kill_at):
    a, b = small(0, "cat"), small(1, "dog")
    expected = _reference_dump(falkor_graph, [a, b])
    s = FalkorStore(embedded_dir)
    ingest_circuit(store=s, circuit=a)  # complete and checkpointed before the crash
    with pytest.raises(StoreConnectionError, match="run the command again"):
        ingest_circuit(store=_KillsServer(s, embedded_dir, kill_at), circuit=b)
    s.close()
    assert redis_pids_for(embedded_dir) == []
    with FalkorStore(embedded_dir) as s2:  # the next command restarts the server
        assert [r.status for r in list_runs(store=s2) if r.class_name == "cat"] == ["complete"]
        ingest_circuit(store=s2, circuit=b)
        assert graph_dump(s2) == expected


# ---- two processes at once ------------------------------------------------------------------------

def test_two_concurrent_ingests_both_complete(tmp_path, embedded_dir, falkor_graph):
    circuits = [synthetic_circuit(class_index=i, class_name=n, widths=(10, 96, 96, 64), tau=8, k=16)
                for i, n in enumerate(["cat", "dog"])]
    for c in circuits:
        c.save(tmp_path / "runs" / c.class_.name)
    expected = _reference_dump(falkor_graph, circuits, [tmp_path / "runs" / c.class_.name for c in circuits])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from neurflow_graph.cli import main; main(sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, "ingest", str(tmp_path / "runs" / c.class_.name),
                               "--store", f"embedded:{embedded_dir}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in circuits]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert redis_pids_for(embedded_dir) == []  # the last one out stopped the server
    with FalkorStore(embedded_dir) as s:
        assert sorted(r.status for r in list_runs(store=s)) == ["complete", "complete"]
        assert graph_dump(s) == expected


def test_a_run_with_nan_stops_the_ingest_before_any_of_its_writes(tmp_path, embedded_dir):
    # ingest streams runs (issue 8 item 7): each is validated completely before any of its writes;
    # the runs before a bad one stay complete, the bad one leaves nothing
    for i, name in enumerate(["a_good", "b_bad"]):
        synthetic_circuit(class_index=i, class_name=name).save(tmp_path / name)
    data = load_circuit(tmp_path / "b_bad").to_dict()  # rewritten inline (schema_version 1, still read)
    data["edges"][0]["weight"] = float("nan")  # json writes it as NaN, which load accepts
    (tmp_path / "b_bad" / "circuit.json").write_text(json.dumps(data))
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "a_good"), str(tmp_path / "b_bad"),
                                 "--store", f"embedded:{embedded_dir}"])
    assert r.exit_code == 2 and "NaN or infinite" in r.output and "b_bad" in r.output
    assert "1 run(s) before it are ingested" in r.output and "Traceback" not in r.output
    with FalkorStore(embedded_dir) as store:
        assert [(x.class_name, x.status) for x in list_runs(store=store)] == [("a_good", "complete")]
        assert store.read("MATCH (s:SemanticGroup) WHERE s.run <> $u RETURN count(s) AS c",
                          {"u": list_runs(store=store)[0].uid}) == [{"c": 0}]
