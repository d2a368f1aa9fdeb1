"""`latest` is repaired on every ingest path (issue 8 item 6), including the skip of a complete run.

The client is a real process killed with SIGKILL between the two writes (``status = 'complete'``
and the ``latest`` update). Only a hook can time the kill to fall exactly between them, so the
child wraps its store's ``write_rows`` and kills itself right after the "complete" write returns;
the kill itself is real (no exception, no cleanup, no finally blocks run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from neurflow_graph.store.ingest import ingest
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import os, signal, sys
    from neurflow_graph.store import ingest as ing
    from neurflow_graph.store.url import open_store
    from neurflow_graph.synthetic import synthetic_circuit

    url, database = sys.argv[1], sys.argv[2] or None
    store = open_store(url, database=database)
    plain = store.write

    def write(query, params=None):
        out = plain(query, params)
        if query == ing.COMPLETE_QUERY:
            os.kill(os.getpid(), signal.SIGKILL)  # between "complete" and the latest update
        return out

    store.write = write
    new = synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16), seed=7,
                            created_at="2026-06-01T00:00:00+00:00")
    ing.ingest(store=store, circuit=new)
    print("not killed")
""")


def _child_store(store) -> tuple[str, str]:
    if store.backend == "falkordb":
        return f"embedded:{store.data_dir}", store._graph_name
    return os.environ["NEO4J_URI"], os.environ.get("NEO4J_DATABASE", "")


def test_a_client_killed_between_complete_and_latest_is_repaired_by_the_skip(store):
    old = synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16),
                            created_at="2025-01-01T00:00:00+00:00")
    new = synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16), seed=7,
                            created_at="2026-06-01T00:00:00+00:00")
    old_uid = ingest(store=store, circuit=old).uid
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, *_child_store(store)], env=env, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    runs = {r.uid: r for r in list_runs(store=store)}
    new_uid = next(u for u in runs if u != old_uid)
    # the crash left the newer run complete but not latest: the case to repair
    assert (runs[new_uid].status, runs[new_uid].latest, runs[old_uid].latest) == ("complete", False, True)

    again = ingest(store=store, circuit=new)
    assert again.skipped and again.uid == new_uid
    runs = {r.uid: r for r in list_runs(store=store)}
    assert runs[new_uid].latest and not runs[old_uid].latest


def test_every_ingest_leaves_exactly_one_latest_per_model_and_class(store):
    a = synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16), created_at="2026-01-01")
    b = synthetic_circuit(class_index=1, class_name="dog", widths=(10, 24, 24, 16), seed=3, created_at="2026-02-01")
    ingest(store=store, circuit=b)
    ingest(store=store, circuit=a)  # older: b stays latest
    store.write("MATCH (r:Run) SET r.latest = false")  # any stale state at all
    assert ingest(store=store, circuit=a).skipped
    assert [(r.created_at, r.latest) for r in list_runs(store=store)] == [("2026-01-01", False), ("2026-02-01", True)]
