"""The embedded FalkorDB server: Unix socket only, reuse, persistence, stale state, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import graph_dump, redis_pids_for
from neurflow_graph.cli import cli
from neurflow_graph.errors import StoreConnectionError
from neurflow_graph.store import falkor
from neurflow_graph.store.falkor import FalkorStore, server_status, start_server, stop_server
from neurflow_graph.store.ingest import ingest_circuit
from neurflow_graph.synthetic import synthetic_circuit


def small(index: int, name: str, **kw):
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def test_listens_on_a_unix_socket_inside_its_directory_only(embedded_store, embedded_dir):
    r = falkor._client(embedded_dir, timeout=5)
    try:
        assert r.config_get("port") == {"port": "0"}
        assert r.config_get("unixsocket")["unixsocket"] == str(embedded_dir / "falkordb.sock")
        assert r.config_get("appendonly") == {"appendonly": "no"}
        assert r.config_get("dir")["dir"] == str(embedded_dir)
    finally:
        r.close()
    assert (embedded_dir / "falkordb.sock").is_socket()
    assert redis_pids_for(embedded_dir) == [server_status(embedded_dir).pid]


def test_second_store_reuses_the_server_and_the_last_one_stops_it(embedded_dir):
    a = FalkorStore(embedded_dir)
    pid = server_status(embedded_dir).pid
    b = FalkorStore(embedded_dir)
    assert server_status(embedded_dir).pid == pid
    a.close()
    assert server_status(embedded_dir).running and b.read("RETURN 1 AS x") == [{"x": 1}]
    b.close()
    assert redis_pids_for(embedded_dir) == []
    assert not (embedded_dir / "falkordb.sock").exists() and not (embedded_dir / "falkordb.pid").exists()


def test_store_start_keeps_it_up_until_store_stop(embedded_dir):
    url = f"embedded:{embedded_dir}"
    runner = CliRunner()
    res = runner.invoke(cli, ["store", "start", "--store", url])
    assert res.exit_code == 0, res.output
    pid = server_status(embedded_dir).pid
    assert pid is not None and "running" in runner.invoke(cli, ["store", "status", "--store", url]).output
    assert runner.invoke(cli, ["runs", "--store", url]).exit_code == 0
    assert server_status(embedded_dir).pid == pid  # a command reused it and left it up
    res = runner.invoke(cli, ["store", "stop", "--store", url])
    assert res.exit_code == 0 and "stopped" in res.output
    assert redis_pids_for(embedded_dir) == []
    assert "stopped" in runner.invoke(cli, ["store", "status", "--store", url]).output


def test_data_survives_a_restart(embedded_dir):
    with FalkorStore(embedded_dir) as s:
        ingest_circuit(store=s, circuit=small(0, "cat"))
        before = graph_dump(s)
    assert redis_pids_for(embedded_dir) == [] and (embedded_dir / "dump.rdb").stat().st_size > 0
    with FalkorStore(embedded_dir) as s:
        assert graph_dump(s) == before


def test_checkpointed_data_survives_sigkill(embedded_dir):
    with FalkorStore(embedded_dir) as s:
        ingest_circuit(store=s, circuit=small(0, "cat"))  # ends with a checkpoint
        before = graph_dump(s)
        os.kill(server_status(embedded_dir).pid, signal.SIGKILL)
        time.sleep(0.1)
    with FalkorStore(embedded_dir) as s:
        assert graph_dump(s) == before


def test_stale_pidfile_and_socket_are_cleaned(embedded_dir):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (embedded_dir / "falkordb.pid").write_text(f"{dead.pid}\n")
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(embedded_dir / "falkordb.sock"))
    leftover.close()  # the socket file stays behind, like after a crash
    with FalkorStore(embedded_dir) as s:
        assert s.read("RETURN 1 AS x") == [{"x": 1}]
        assert server_status(embedded_dir).pid != dead.pid


def test_pidfile_naming_another_process_is_not_trusted(embedded_dir):
    (embedded_dir / "falkordb.pid").write_text(f"{os.getpid()}\n")
    with FalkorStore(embedded_dir) as s:
        assert s.read("RETURN 1 AS x") == [{"x": 1}]
        assert server_status(embedded_dir).pid not in (None, os.getpid())
    assert stop_server(embedded_dir) is False  # already stopped by the close above; we are still alive


def test_unwritable_directory_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreConnectionError, match="cannot use embedded:"):
        FalkorStore(blocker / "db")
    # a read never creates a store, so it stops before trying to make the folder
    res = CliRunner().invoke(cli, ["runs", "--store", f"embedded:{blocker / 'db'}"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("Error: no store at embedded:") and str(blocker) in res.output


def test_too_long_path_for_a_socket(tmp_path):
    with pytest.raises(StoreConnectionError, match="too long"):
        FalkorStore(tmp_path / ("x" * 120))


def test_start_server_then_stop_leaves_no_process(embedded_dir):
    st = start_server(embedded_dir)
    assert st.running and st.keep and redis_pids_for(embedded_dir) == [st.pid]
    assert stop_server(embedded_dir) is True
    assert redis_pids_for(embedded_dir) == [] and not server_status(embedded_dir).running


_OPENER = """
import pathlib, sys, time
from neurflow_graph.store.falkor import FalkorStore, server_status

data_dir, barrier, me = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
store = FalkorStore(data_dir)
pid = server_status(data_dir).pid
(barrier / me).touch()
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 3 and time.time() < deadline:  # all three hold the store at once
    time.sleep(0.05)
print(pid, flush=True)
store.close()
"""


def test_concurrent_openers_start_one_server(embedded_dir, tmp_path):
    script, barrier = tmp_path / "opener.py", tmp_path / "barrier"
    script.write_text(_OPENER)
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, str(script), str(embedded_dir), str(barrier), f"p{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({out.strip() for out, _ in outs}) == 1, outs  # one server for all three
    assert redis_pids_for(embedded_dir) == []  # and the last one out stopped it
