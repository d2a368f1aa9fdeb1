"""Best paths to the logit: k-best dynamic programming (stored per group at ingest) vs path enumeration.

    .venv/bin/python bench/paths.py                        # embedded FalkorDB; Neo4j too when NEO4J_URI is set
    .venv/bin/python bench/paths.py --groups 8 --repeats 20

1. **ResNet50-shaped circuit** (synthetic, neurflow_graph/synthetic.py): 14 layers (fc, layer4.2..0,
   layer3.5..0, layer2.3..0) with ResNet50's widths (1000, 2048, 1024, 512), τ=16, k=50, up to
   ``--groups`` neuron groups per layer. Reports its groups, group edges and number of paths per leaf
   group (counted by DP, never listed), the time to compute every group's ``--n`` best paths at ingest,
   and the latency (p50/p95 over ``--repeats`` after a warm-up) of ``concept_paths_to_logit`` from every
   group of the leaf layer, from one leaf group and from a middle layer, plus ``class_circuit``.
2. **Enumeration** (the previous query, ``-[:FEEDS*]->`` with a product over every path) on the same
   circuit cut to its top 4..``--enum-max`` layers, side by side with the k-best query on the same cut,
   until enumeration passes ``--enum-timeout`` seconds.
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
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurflow_graph.queries.library import get_query, run_read  # noqa: E402
from neurflow_graph.queries.names import check_params  # noqa: E402
from neurflow_graph.store.ingest import ingest  # noqa: E402
from neurflow_graph.store.paths import best_path_rows  # noqa: E402
from neurflow_graph.store.url import open_store  # noqa: E402
from neurflow_graph.synthetic import synthetic_circuit  # noqa: E402

LAYERS = ("fc", "layer4.2", "layer4.1", "layer4.0", *(f"layer3.{i}" for i in reversed(range(6))),
          *(f"layer2.{i}" for i in reversed(range(4))))
WIDTHS = (1000, 2048, 2048, 2048, *(1024,) * 6, *(512,) * 4)
GOAL_P95_MS = 500.0

# The enumeration this replaces (cypher/concept_paths_to_logit.cypher before issue 8), on raw W.
ENUMERATION = """
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class AND r.latest = true
MATCH (m)-[:HAS_LAYER]->(top:Layer {depth: 0})
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer})
MATCH p = (g)-[:FEEDS*]->(t:NeuronGroup {layer: top.name})
WITH r, g, p, reduce(acc = 1.0, e IN relationships(p) | acc * e.weight) AS strength
RETURN r.uid AS run, g.gid AS start_group, [x IN nodes(p) | x.layer + '/' + toString(x.gid)] AS path,
       strength, abs(strength) AS abs_strength
ORDER BY abs_strength DESC, start_group
LIMIT $limit
"""


def resnet50_shaped(*, n_layers: int = len(LAYERS), groups: int, seed: int = 0, class_name: str = "tabby"):
    return synthetic_circuit(class_index=281, class_name=class_name, model_name="resnet50-shaped", seed=seed,
                             layers=LAYERS[:n_layers], widths=WIDTHS[:n_layers], tau=16, k=50, n_images=50,
                             max_semantic_groups=3, max_neuron_groups=groups)


def path_count(c) -> int:
    """Paths from each leaf group to the logit, summed, by counting DP (never enumerated)."""
    up: dict[tuple, list] = defaultdict(list)
    for e in c.group_edges:
        up[(e.child_layer, e.child_group)].append((e.parent_layer, e.parent_group))
    count: dict[tuple, int] = {}
    for layer in c.model.layers:
        for g in (g for g in c.neuron_groups if g.layer == layer):
            key = (g.layer, g.id)
            count[key] = 1 if layer == c.model.layers[0] else sum(count.get(p, 0) for p in up[key])
    return sum(v for (layer, _), v in count.items() if layer == c.model.layers[-1])


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, round(0.95 * (len(ts) - 1)))]


def library(store, name: str, params: dict):
    """What `neurflow-graph query` does: bind, check names, run (the checks are inside the timing)."""
    q = get_query(name)
    return lambda: run_read(store=store, text=q.text_for(store.backend), params=check_params(store, q.bind(params)))


def bench_backend(label: str, store, args) -> None:
    print(f"\n== {label} ==")
    c = resnet50_shaped(groups=args.groups)
    c2 = resnet50_shaped(groups=args.groups, seed=1, class_name="tiger")
    t = time.perf_counter()
    rows = best_path_rows(circuit=c, run_uid="x", n=args.n)
    t_dp = time.perf_counter() - t
    per_layer = defaultdict(int)
    for g in c.neuron_groups:
        per_layer[g.layer] += 1
    print(f"circuit: {len(c.model.layers)} layers, {len(c.neurons)} neurons, {len(c.neuron_groups)} neuron groups "
          f"(max {max(per_layer.values())} per layer), {len(c.group_edges)} group edges, "
          f"{path_count(c):.3g} paths from the leaf layer to the logit")
    t = time.perf_counter()
    res = ingest(store=store, circuit=c)
    ingest(store=store, circuit=c2)
    t_ingest = time.perf_counter() - t
    print(f"k-best DP for every group (n={args.n}): {t_dp * 1000:.1f} ms in Python; ingest of the run "
          f"{res.seconds:.2f} s ({res.relationships} relationships; two runs {t_ingest:.2f} s)")
    leaf, mid = c.model.layers[-1], c.model.layers[len(c.model.layers) // 2]
    cases = [("concept_paths_to_logit, every leaf group", "concept_paths_to_logit",
              {"model": "resnet50-shaped", "class": "tabby", "layer": leaf, "limit": 25}),
             ("concept_paths_to_logit, one leaf group", "concept_paths_to_logit",
              {"model": "resnet50-shaped", "class": "tabby", "layer": leaf, "group": 0, "limit": 10}),
             (f"concept_paths_to_logit, every group of {mid}", "concept_paths_to_logit",
              {"model": "resnet50-shaped", "class": "tabby", "layer": mid, "limit": 25}),
             ("class_circuit", "class_circuit", {"model": "resnet50-shaped", "class": "tabby"}),
             ("top_groups_per_layer", "top_groups_per_layer", {"model": "resnet50-shaped", "class": "tabby"}),
             ("shared_groups", "shared_groups", {"model": "resnet50-shaped", "class_a": "tabby", "class_b": "tiger"})]
    print(f"{'query':48s} {'p50 ms':>8s} {'p95 ms':>8s}  goal p95 < {GOAL_P95_MS:.0f} ms")
    for title, name, params in cases:
        p50, p95 = timed(library(store, name, params), args.repeats)
        print(f"{title:48s} {p50:8.1f} {p95:8.1f}  {'ok' if p95 < GOAL_P95_MS else 'MISSED'}")

    print(f"\nenumeration (previous query) vs k-best on the circuit cut to its top layers "
          f"(every leaf group, limit 25; timeout {args.enum_timeout:.0f} s)")
    print(f"{'layers':>6s} {'paths':>12s} {'enumeration ms':>15s} {'k-best ms':>10s} {'ratio':>8s}")
    for n_layers in range(4, args.enum_max + 1):
        cut = resnet50_shaped(n_layers=n_layers, groups=args.groups, class_name=f"cut{n_layers}")
        ingest(store=store, circuit=cut)
        params = {"model": "resnet50-shaped", "class": f"cut{n_layers}", "layer": cut.model.layers[-1], "limit": 25}
        t = time.perf_counter()
        store.read(ENUMERATION, params)
        t_enum = (time.perf_counter() - t) * 1000
        _, kbest = timed(library(store, "concept_paths_to_logit", params), 5)
        print(f"{n_layers:6d} {path_count(cut):12.3g} {t_enum:15.1f} {kbest:10.1f} {t_enum / kbest:8.1f}")
        if t_enum > args.enum_timeout * 1000:
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=12, help="max neuron groups per layer")
    ap.add_argument("--n", type=int, default=32, help="best paths stored per group (the ingest default)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--enum-max", type=int, default=8, help="deepest cut to enumerate")
    ap.add_argument("--enum-timeout", type=float, default=20.0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    data = Path(tempfile.mkdtemp(prefix="nfp"))
    try:
        with open_store(f"embedded:{data}") as store:
            bench_backend("embedded FalkorDB", store, args)
    finally:
        from neurflow_graph.store.falkor import stop_server

        stop_server(data)
        shutil.rmtree(data, ignore_errors=True)
    if os.environ.get("NEO4J_URI"):
        with open_store(os.environ["NEO4J_URI"], database=os.environ.get("NEO4J_DATABASE")) as store:
            if store.read("MATCH (n) RETURN count(n) AS n")[0]["n"]:
                print("\nNeo4j: the database is not empty; skipped (point NEO4J_URI at a scratch database)")
            else:
                try:
                    bench_backend("Neo4j", store, args)
                finally:
                    store.write("MATCH (n) DETACH DELETE n")


if __name__ == "__main__":
    main()
