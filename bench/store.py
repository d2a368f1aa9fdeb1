"""Store benchmark: ingest throughput (batched vs naive per-row MERGE) and library query latency.

    .venv/bin/python bench/store.py                 # embedded FalkorDB; Neo4j too when NEO4J_URI is set
    .venv/bin/python bench/store.py --classes 20    # a quicker look
    .venv/bin/python bench/store.py --resnet50      # ResNet50-shaped circuits, 1 and 10 classes (bench/store_resnet50.py)

Both commands measure the embedded store and then Neo4j: the server at NEO4J_URI, or (unset) a
local Neo4j Community started from tools/neo4j-local on a temporary directory (--no-neo4j: skip).

Builds ``--classes`` synthetic class circuits of model ``synthnet`` (sized for ~10k relationships
each, ~1M in all at 100 classes) plus the first class again in model ``othernet`` (for
compare_models), ingests them through the real path (``store.ingest.ingest``, one checkpoint at
the end, as ``neurflow-graph ingest`` does) and reports relationships/s. The naive baseline
writes the same rows of ``--naive-circuits`` circuits one MERGE query per row into a separate
graph; its rate is extrapolated to the whole set. Query latency (p50/p95 over ``--repeats``
runs after warm-up) is measured for every library query at ``--small`` classes and again at
``--classes``. Neo4j runs only on an empty database (or with ``--neo4j-wipe``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurflow_graph.queries.library import execute, list_queries  # noqa: E402
from neurflow_graph.store.ingest import circuit_rows, ingest_runs  # noqa: E402
from neurflow_graph.store.url import open_store  # noqa: E402
from neurflow_graph.synthetic import synthetic_circuit  # noqa: E402

# ~10k relationships per circuit: 4 layers, tau 8, k 34 exemplar patches per neuron
CIRCUIT_KW = dict(layers=("fc", "block3", "block2", "block1"), widths=(1000, 512, 512, 256), tau=8, k=34,
                  n_images=24, max_semantic_groups=3, max_neuron_groups=8)
GOAL_RELS_PER_S = 50_000        # embedded
GOAL_RELS_PER_S_NEO4J = 30_000  # Neo4j server on the same machine (issue 7)
GOAL_P95_MS = 200.0


def circuits(n_classes: int, *, shared_pool: bool = False) -> list:
    """Class c draws its patches from image pool c (NeurFlow crops D_c, the images of class c), so
    only runs of the same class share Patch nodes; ``shared_pool``: every class uses one pool."""
    def pool(c: int) -> int:
        return 0 if shared_pool else c

    out = [synthetic_circuit(class_index=c, class_name=f"class_{c:03d}", model_name="synthnet", seed=0,
                             pool_seed=pool(c), **CIRCUIT_KW) for c in range(n_classes)]
    out.append(synthetic_circuit(class_index=0, class_name="class_000", model_name="othernet", seed=0,
                                 pool_seed=pool(0), **CIRCUIT_KW))
    return out


def query_params(n_classes: int) -> dict[str, dict]:
    low = CIRCUIT_KW["layers"][-1]
    mid = CIRCUIT_KW["layers"][2]
    b = f"class_{min(1, n_classes - 1):03d}"
    return {
        "class_circuit": {"model": "synthnet", "class": "class_000"},
        "shared_neurons_by_layer": {"model": "synthnet", "class_a": "class_000", "class_b": b},
        "shared_groups": {"model": "synthnet", "class_a": "class_000", "class_b": b},
        "concept_paths_to_logit": {"model": "synthnet", "class": "class_000", "layer": low},
        "top_groups_per_layer": {"model": "synthnet", "class": "class_000"},
        "hub_neurons": {"model": "synthnet"},
        "classes_sharing_group": {"model": "synthnet", "class": "class_000", "layer": mid, "group": 0},
        "compare_models": {"model_a": "synthnet", "model_b": "othernet", "class": "class_000"},
        "polysemantic_neurons": {"model": "synthnet"},
        "dashboard_summary": {"model": "synthnet"},
        "groups_by_label": {"text": "stripes", "model": "synthnet"},
        "group_directions": {"model": "synthnet", "class": "class_000"},
        "layer_completeness": {"model": "synthnet"},
    }


def run_params(store) -> dict[str, dict]:
    """The queries that name a run: the latest run of synthnet's class_000."""
    run0 = store.read("MATCH (r:Run {class_name: 'class_000', latest: true})-[:OF_MODEL]->(:Model {name: 'synthnet'}) "
                      "RETURN r.uid AS u")[0]["u"]
    return {"circuit_groups": {"run": run0},
            "group_members": {"run": run0, "layer": CIRCUIT_KW["layers"][2], "group": 0}}


def count_rels(store) -> int:
    return int(store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"])


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc), 0.0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


class CpuMeter:
    """Client (this process) and server CPU seconds spent inside ``with`` blocks, summed."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid, self.client, self.server = server_pid, 0.0, 0.0

    def __enter__(self) -> "CpuMeter":
        self._c0, self._s0 = time.process_time(), process_cpu(self.server_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client += time.process_time() - self._c0
        self.server += process_cpu(self.server_pid) - self._s0


def ingest_all(store, batch: list, per_run: list | None = None) -> tuple[int, float]:
    """Real path (ingest_runs: every run, one checkpoint); return (relationship rows written, seconds).
    ``per_run`` collects each run's (relationships, seconds)."""
    t0 = time.perf_counter()
    results = ingest_runs(store=store, runs=[(None, c) for c in batch])
    if per_run is not None:
        per_run.extend((r.relationships, r.seconds) for r in results)
    return sum(r.relationships for r in results), time.perf_counter() - t0


def naive_ingest(store, batch: list) -> tuple[int, float]:
    """The same rows, one MERGE query per node / relationship row; return (relationship rows, seconds)."""
    from neurflow_graph.store.ingest import REL_SPEC

    store.setup()
    t0 = time.perf_counter()
    n_rels = 0
    for c in batch:
        rows = circuit_rows(c)
        store.write("MERGE (r:Run {uid: $uid}) SET r += $props",
                    {"uid": rows.uid, "props": {k: v for k, v in rows.run.items() if k != "uid"}})
        for label, node_rows in rows.nodes.items():
            for r in node_rows:
                props = {k: v for k, v in r.items() if k != "uid" and v is not None}
                store.write(f"MERGE (n:{label} {{uid: $uid}}) SET n += $props", {"uid": r["uid"], "props": props})
        for rel_type, rel_rows in rows.rels.items():
            start, end, _ = REL_SPEC[rel_type]
            q = (f"MATCH (a:{start} {{uid: $a}}) MATCH (b:{end} {{uid: $b}}) "
                 f"MERGE (a)-[r:{rel_type}]->(b) SET r += $props")
            for r in rel_rows:
                store.write(q, {"a": r["a"], "b": r["b"], "props": {k: v for k, v in r.items() if k not in ("a", "b")}})
                n_rels += 1
    store.checkpoint()
    return n_rels, time.perf_counter() - t0


def latencies(store, n_classes: int, repeats: int, params: dict | None = None) -> dict[str, tuple[float, float, int]]:
    out = {}
    params = params or {**query_params(n_classes), **run_params(store)}
    for q in list_queries():
        p = params.get(q.name)
        if p is None:
            print(f"  (no benchmark parameters for {q.name}; skipped)")
            continue
        bound = q.bind(p)  # parse and bind once: time the query, its parameters and row conversion
        for _ in range(3):
            rows = execute(store=store, query=q, params=bound)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            execute(store=store, query=q, params=bound)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        out[q.name] = (statistics.median(times), p95, len(rows))
    return out


def bench_backend(name: str, open_fn, args, server_pid=None) -> None:
    """``server_pid``: a callable giving the server's pid once the store is open (its CPU is measured)."""
    print(f"\n== {name} ==")
    suite = circuits(args.classes, shared_pool=args.shared_pool)
    small = suite[: args.small] + [suite[-1]]
    rest = suite[args.small: args.classes]
    store = open_fn("neurflow_bench")
    per_run: list[tuple[int, float]] = []
    try:
        store.setup()
        cpu = CpuMeter(server_pid() if server_pid else None)
        with cpu:
            w1, t1 = ingest_all(store, small, per_run)
        lat_small = latencies(store, args.small, args.repeats)
        with cpu:
            w2, t2 = ingest_all(store, rest, per_run)
        total_rels = count_rels(store)
        n_nodes = int(store.read("MATCH (n) RETURN count(n) AS c")[0]["c"])
        lat_big = latencies(store, args.classes, args.repeats)
    finally:
        store.close()
    rate = (w1 + w2) / (t1 + t2)
    print(f"image pools: {'one shared by all classes' if args.shared_pool else 'one per class'}")
    print(f"store: {len(suite)} circuits ({args.classes} classes of synthnet + 1 of othernet), "
          f"{n_nodes:,} nodes, {total_rels:,} relationships in the store "
          f"({w1 + w2:,} relationship rows written)")
    print(f"ingest (batched UNWIND, real path): {t1 + t2:.1f} s, {rate:,.0f} relationship rows/s, "
          f"{total_rels / (t1 + t2):,.0f} stored relationships/s  "
          f"(goal >= {GOAL_RELS_PER_S_NEO4J if name == 'Neo4j' else GOAL_RELS_PER_S:,})")
    if len(per_run) > 1:  # a fresh server plans every query shape (and compiles its code) during the first run
        rel_rest, sec_rest = sum(r for r, _ in per_run[1:]), sum(t for _, t in per_run[1:])
        print(f"  first run {per_run[0][1]:.1f} s ({per_run[0][0]:,} rel); the other {len(per_run) - 1} runs "
              f"{rel_rest / sec_rest:,.0f} rel rows/s (each run's own time, without the final checkpoint)")
    if cpu.server_pid:
        print(f"  CPU: client {cpu.client:.1f} s, server {cpu.server:.1f} s -> {(w1 + w2) / (cpu.client + cpu.server):,.0f} "
              f"rel rows per CPU-second (client + server; roughly the wall rate of an idle machine)")

    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures scale with it)")
    print(f"\nquery latency, ms ({args.repeats} runs after 3 warm-up; goal p95 < {GOAL_P95_MS:.0f} ms at "
          f"{args.classes} classes)")
    print(f"| query | p50 @{args.small} | p95 @{args.small} | p50 @{args.classes} | p95 @{args.classes} | rows @{args.classes} | goal |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for q, (p50b, p95b, nb_rows) in lat_big.items():
        p50s, p95s, _ = lat_small.get(q, (float("nan"), float("nan"), 0))
        ok = "ok" if p95b < GOAL_P95_MS else "MISSED"
        print(f"| {q} | {p50s:.1f} | {p95s:.1f} | {p50b:.1f} | {p95b:.1f} | {nb_rows} | {ok} |")

    print()
    naive_store = open_fn("neurflow_bench_naive")
    try:
        nb = suite[: args.naive_circuits]
        n_rel_rows, tn = naive_ingest(naive_store, nb)
    finally:
        naive_store.close()
    naive_rate = n_rel_rows / tn
    print(f"naive per-row MERGE on {len(nb)} circuit(s) ({n_rel_rows:,} relationship rows): {tn:.1f} s, "
          f"{naive_rate:,.0f} rows/s -> extrapolated {((w1 + w2) / naive_rate):,.0f} s for all {len(suite)} circuits "
          f"(batched is {rate / naive_rate:.1f}x faster)")


class _Skip(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--small", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--naive-circuits", type=int, default=2)
    ap.add_argument("--shared-pool", action="store_true",
                    help="all classes crop one image pool (worst case for compare_models' patch join)")
    ap.add_argument("--data-dir", default=None, help="embedded data directory (default: a temporary one)")
    ap.add_argument("--neo4j-wipe", action="store_true", help="clear the Neo4j database first if it is not empty")
    ap.add_argument("--neo4j-heap", default="1g", help="heap of the local Neo4j started when NEO4J_URI is unset")
    ap.add_argument("--neo4j-pagecache", default="512m", help="page cache of that local Neo4j")
    ap.add_argument("--skip-embedded", action="store_true", help="measure Neo4j only")
    # ResNet50-shaped case (bench/store_resnet50.py)
    ap.add_argument("--resnet50", action="store_true", help="run the ResNet50-shaped case instead")
    ap.add_argument("--r50-classes", type=int, default=10, help="ResNet50-shaped classes (with --resnet50)")
    ap.add_argument("--cache-dir", default=None, help="where the ResNet50-shaped run directories are kept")
    ap.add_argument("--r50-neo4j", action="store_true",
                    help="(kept for old command lines: --resnet50 now measures a local Neo4j by default)")
    ap.add_argument("--no-neo4j", action="store_true",
                    help="embedded store only (no NEO4J_URI: no local Neo4j is started)")
    args = ap.parse_args()
    args.neo4j_pid = None  # set when this script starts its own Neo4j (a NEO4J_URI server's CPU is not seen)
    if args.resnet50:
        return main_resnet50(args)
    if not 1 <= args.small <= args.classes:
        ap.error("need 1 <= --small <= --classes")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="nfb-")
        data_dir = tmp
    try:
        def open_embedded(graph: str):
            s = open_store(f"embedded:{data_dir}", database=graph)
            if s.read("MATCH (n) RETURN count(n) AS c")[0]["c"]:
                s.delete_graph()
            return s

        if not args.skip_embedded:
            from neurflow_graph.store.falkor import server_status

            bench_backend("embedded FalkorDB", open_embedded, args, server_pid=lambda: server_status(data_dir).pid)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    local = None
    uri = os.environ.get("NEO4J_URI")
    if not uri and args.no_neo4j:
        return
    if not uri:
        local, uri = start_local_neo4j(args)
        if local is None:
            return
    try:
        bench_neo4j(uri, args)
    finally:
        if local is not None:
            local.stop()
            shutil.rmtree(local.data_dir.parent, ignore_errors=True)


def start_local_neo4j(args):
    """No NEO4J_URI: a local Neo4j Community server (tools/neo4j-local) on a temporary directory, or (None, None)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "neo4j-local"))
    import secrets

    import neo4j_local

    why = neo4j_local.missing_tools()
    if why:
        print(f"\n== Neo4j: skipped (NEO4J_URI is not set and {why}) ==")
        return None, None
    os.environ["NEO4J_PASSWORD"] = secrets.token_urlsafe(18)  # this process and the server only; never printed
    os.environ.pop("NEO4J_USERNAME", None)
    os.environ.pop("NEO4J_DATABASE", None)
    local = neo4j_local.LocalNeo4j(Path(tempfile.mkdtemp(prefix="nfb-neo4j-")) / "db",
                                   password=os.environ["NEO4J_PASSWORD"], heap=args.neo4j_heap,
                                   pagecache=args.neo4j_pagecache)
    t0 = time.perf_counter()
    uri = local.start()
    args.neo4j_pid = local.proc.pid if local.proc is not None else None  # its CPU time is measured
    print(f"\nlocal Neo4j {local.version} (tools/neo4j-local): heap {args.neo4j_heap}, page cache "
          f"{args.neo4j_pagecache}, started in {time.perf_counter() - t0:.1f} s at {uri}")
    return local, uri


def _wipe_neo4j(s) -> None:
    """Empty the Neo4j database: relationships first, in bounded transactions (DETACH DELETE of hub
    nodes would hold all their relationships in one transaction, past Neo4j's memory limit)."""
    while s.write("MATCH ()-[e]->() WITH e LIMIT 50000 DELETE e RETURN count(*) AS c")[0]["c"]:
        pass
    while s.write("MATCH (n) WITH n LIMIT 20000 DELETE n RETURN count(*) AS c")[0]["c"]:
        pass


def bench_neo4j(uri: str, args) -> None:
    """The same measurements on the Neo4j database at ``uri`` (emptied first; see --neo4j-wipe)."""
    opened = []

    def open_neo4j(graph: str):
        # one database: the naive graph replaces the benchmark's own data, never a user's
        s = open_store(uri, database=os.environ.get("NEO4J_DATABASE"))
        n = int(s.read("MATCH (n) RETURN count(n) AS c")[0]["c"])
        if n and not opened and not args.neo4j_wipe:
            s.close()
            print(f"\n== Neo4j: skipped ({s.display_url} holds {n} nodes; pass --neo4j-wipe to clear it) ==")
            raise _Skip()
        _wipe_neo4j(s)
        opened.append(graph)
        return s

    try:
        bench_backend("Neo4j", open_neo4j, args, server_pid=lambda: args.neo4j_pid)
    except _Skip:
        pass


def main_resnet50(args) -> None:
    """The ResNet50-shaped case on the embedded store, and on Neo4j when NEO4J_URI is set."""
    from store_resnet50 import bench_resnet50

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="nfb-r50-")

    def open_embedded(graph):
        s = open_store(f"embedded:{data_dir}", database="neurflow_bench_r50")
        if graph is not None and s.read("MATCH (n) RETURN count(n) AS c")[0]["c"]:
            s.delete_graph()
            s.close()
            s = open_store(f"embedded:{data_dir}", database="neurflow_bench_r50")
        return s

    from neurflow_graph.store.falkor import start_server

    server = start_server(data_dir, keep=True)  # one server for the whole case: its CPU time is measured
    backends = [("embedded FalkorDB", ["--store", f"embedded:{data_dir}", "--database", "neurflow_bench_r50"],
                 open_embedded, server.pid)] if not args.skip_embedded else []
    uri, local = os.environ.get("NEO4J_URI"), None
    if not uri and not args.no_neo4j:
        local, uri = start_local_neo4j(args)
    if uri:
        def open_neo4j(graph):
            s = open_store(uri, database=os.environ.get("NEO4J_DATABASE"))
            if graph is not None:
                if int(s.read("MATCH (n) RETURN count(n) AS c")[0]["c"]) and not args.neo4j_wipe:
                    s.close()
                    raise SystemExit("Neo4j holds data; pass --neo4j-wipe to clear it")
                _wipe_neo4j(s)
            return s
        db = ["--database", os.environ["NEO4J_DATABASE"]] if os.environ.get("NEO4J_DATABASE") else []
        backends.append(("Neo4j", ["--store", uri, *db], open_neo4j, None))
    else:
        print("(Neo4j: skipped: --no-neo4j, or no JDK/Maven for tools/neo4j-local; or set NEO4J_URI, NEO4J_PASSWORD)")
    try:
        bench_resnet50(args, backends=backends, latencies=lambda st, p, r: latencies(st, 0, r, params=p))
    finally:
        if local is not None:
            local.stop()
            shutil.rmtree(local.data_dir.parent, ignore_errors=True)
        if args.data_dir is None:
            from neurflow_graph.store.falkor import stop_server

            stop_server(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
