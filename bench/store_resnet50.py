"""ResNet50-shaped store case (issue 8 item 7), run by ``bench/store.py --resnet50``.

Synthetic circuits with the registry's ResNet50 layer list and widths (fc 1000, layer4.* 2048,
layer3.* 1024, layer2.3 512), tau 16, k 50, up to 5 semantic groups per neuron and 8 neuron groups
per layer, 50 images of 224 px cropped like the extraction (fractions 1, 1/2, 1/4, stride 1/2:
2,950 patches), one image pool per class. Each class is ~8,000 neurons and ~820k relationships.
They are written once as version-2 run directories under ``--cache-dir`` (reused when present).

Ingest runs the real command, ``neurflow-graph ingest RUN_DIR...``, in a child process (streaming:
one run loaded, validated and written at a time), first 1 class plus class 0 of a second model
(for compare_models), then the other classes. Reported: relationships per second of the whole
child process (load + validation + uid + rows + writes + best paths + checkpoint, wall clock) and
its peak RSS (``ru_maxrss`` from ``wait4``; the embedded database server is a separate process and
not counted). Query latency (p50/p95 of every library query) at 1 and at ``--r50-classes`` classes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from neurflow_graph.models.registry import get_spec
from neurflow_graph.synthetic import synthetic_circuit

R50_WIDTHS = (1000, 2048, 2048, 2048, 1024, 1024, 1024, 1024, 1024, 1024, 512)
GOAL_RELS_PER_S = 50_000
GOAL_RSS_MB = 2048
GOAL_P95_MS = 500.0


def r50_kw() -> dict:
    layers = tuple(get_spec("resnet50").layers)
    assert len(layers) == len(R50_WIDTHS), layers
    return dict(layers=layers, widths=R50_WIDTHS, tau=16, k=50, n_images=50, image_size=224,
                crop_fractions=(1.0, 0.5, 0.25), max_semantic_groups=5, max_neuron_groups=8)


def run_dirs(cache: Path, n_classes: int) -> tuple[list[Path], Path]:
    """(class run dirs of model resnet50, class 0 of model resnet50b), generated when missing."""
    def make(model: str, c: int) -> Path:
        d = cache / f"{model}-{c:03d}"
        if not (d / "circuit.json").is_file():
            t = time.perf_counter()
            circuit = synthetic_circuit(class_index=c, class_name=f"class_{c:03d}", model_name=model,
                                        weights_sha256=f"{model}-weights".encode().hex().ljust(64, "0")[:64],
                                        seed=0, pool_seed=c, **r50_kw())
            circuit.save(d)
            print(f"  generated {d.name}: {len(circuit.neurons)} neurons, {len(circuit.edges)} edges, "
                  f"{len(circuit.patches)} patches ({time.perf_counter() - t:.0f} s)", flush=True)
        return d
    return [make("resnet50", c) for c in range(n_classes)], make("resnet50b", 0)


def _sizes(d: Path) -> None:
    """Version 2 (header + .npz) against the same circuit as one version-1 JSON document; load times."""
    import json

    from neurflow_graph.circuit import CIRCUIT_FILE, load_circuit

    t = time.perf_counter()
    c = load_circuit(d)
    t2 = time.perf_counter() - t
    v2 = sum(p.stat().st_size for p in d.iterdir() if p.name == CIRCUIT_FILE or p.suffix == ".npz")
    v1_dir = d.parent / f"{d.name}-v1"
    if not (v1_dir / CIRCUIT_FILE).is_file():
        v1_dir.mkdir(exist_ok=True)
        (v1_dir / CIRCUIT_FILE).write_text(json.dumps(c.to_dict(), indent=1))
    t = time.perf_counter()
    load_circuit(v1_dir)
    t1 = time.perf_counter() - t
    v1 = (v1_dir / CIRCUIT_FILE).stat().st_size
    print(f"one class on disk: version 2 {v2 / 1e6:.1f} MB (load {t2:.1f} s), version 1 {v1 / 1e6:.1f} MB "
          f"(load {t1:.1f} s): {v1 / v2:.1f}x smaller, {t1 / t2:.1f}x faster to load", flush=True)


def server_cpu(server_pid: int | None) -> float:
    """CPU seconds (user + system) the embedded database server has used so far (0 without one)."""
    if server_pid is None:
        return 0.0
    f = Path(f"/proc/{server_pid}/stat").read_text().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def ingest_child(dirs: list[Path], store_args: list[str]) -> tuple[int, float, float, str, float]:
    """Run `neurflow-graph ingest` on ``dirs`` in a child; (relationships, wall s, peak RSS MB, output,
    the child's CPU seconds)."""
    code = "import sys; from neurflow_graph.cli import main; main(sys.argv[1:])"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, "ingest", *map(str, dirs), *store_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{out}")
    rels = sum(int(m) for m in re.findall(r"nodes, (\d+) relationships in", out))
    return rels, wall, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def query_params(n_classes: int, run0: str) -> dict[str, dict]:
    layers = r50_kw()["layers"]
    b = f"class_{min(1, n_classes - 1):03d}"
    m = "resnet50"
    return {
        "class_circuit": {"model": m, "class": "class_000"},
        "circuit_groups": {"run": run0},
        "group_members": {"run": run0, "layer": layers[5], "group": 0},
        "shared_neurons_by_layer": {"model": m, "class_a": "class_000", "class_b": b},
        "shared_groups": {"model": m, "class_a": "class_000", "class_b": b},
        "concept_paths_to_logit": {"model": m, "class": "class_000", "layer": layers[-1]},
        "top_groups_per_layer": {"model": m, "class": "class_000"},
        "hub_neurons": {"model": m},
        "classes_sharing_group": {"model": m, "class": "class_000", "layer": layers[5], "group": 0},
        "compare_models": {"model_a": m, "model_b": "resnet50b", "class": "class_000"},
        "polysemantic_neurons": {"model": m},
        "dashboard_summary": {"model": m},
        "groups_by_label": {"text": "stripes", "model": m},
        "group_directions": {"model": m, "class": "class_000"},
        "layer_completeness": {"model": m},
    }


def bench_resnet50(args, *, backends: list[tuple[str, list[str], object, object]], latencies) -> None:
    """``backends``: (name, CLI store args, open_fn(graph) -> a cleared store, server pid or None)."""
    cache = Path(args.cache_dir or "/tmp/nf-bench-r50")
    n = args.r50_classes
    print(f"\n== ResNet50-shaped circuits: {n} classes (+1 of resnet50b), cache {cache} ==", flush=True)
    classes, other = run_dirs(cache, n)
    _sizes(classes[0])
    for name, store_args, open_fn, server_pid in backends:
        print(f"\n-- {name} --", flush=True)
        store = open_fn("neurflow_bench_r50")
        store.close()
        s0 = server_cpu(server_pid)
        r1, w1, rss1, out1, c1 = ingest_child([classes[0], other], store_args)
        s1 = server_cpu(server_pid)
        print(out1.strip())
        store = open_fn(None)
        try:
            run0 = store.read("MATCH (r:Run {class_name: 'class_000', model: $m}) RETURN r.uid AS u",
                              {"m": store.read("MATCH (m:Model {name: 'resnet50'}) RETURN m.uid AS u")[0]["u"]})[0]["u"]
            lat1 = latencies(store, query_params(1, run0), args.repeats)
        finally:
            store.close()
        s2 = server_cpu(server_pid)
        r2, w2, rss2, out2, c2 = ingest_child(classes[1:], store_args) if n > 1 else (0, 0.0, 0.0, "", 0.0)
        s3 = server_cpu(server_pid)
        print(out2.strip())
        store = open_fn(None)
        try:
            total = int(store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"])
            nodes = int(store.read("MATCH (n) RETURN count(n) AS c")[0]["c"])
            latn = latencies(store, query_params(n, run0), args.repeats)
        finally:
            store.close()
        rate = (r1 + r2) / (w1 + w2)
        rss = max(rss1, rss2)
        print(f"store: {n + 1} runs, {nodes:,} nodes, {total:,} relationships")
        print(f"ingest, whole `neurflow-graph ingest` process: {r1 + r2:,} relationships in {w1 + w2:.1f} s = "
              f"{rate:,.0f} rel/s (goal >= {GOAL_RELS_PER_S:,}: {'ok' if rate >= GOAL_RELS_PER_S else 'MISSED'}); "
              f"peak RSS {rss:,.0f} MB (goal < {GOAL_RSS_MB:,}: {'ok' if rss < GOAL_RSS_MB else 'MISSED'})")
        if server_pid is not None:
            cpu = c1 + c2 + (s1 - s0) + (s3 - s2)
            print(f"CPU time: client {c1 + c2:.1f} s + server {(s1 - s0) + (s3 - s2):.1f} s = {cpu:.1f} s "
                  f"-> {(r1 + r2) / cpu:,.0f} rel per CPU second (client and server take turns: the wall-clock "
                  f"rate of an idle machine; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"\nquery latency, ms ({args.repeats} runs after 3 warm-up; goal p95 < {GOAL_P95_MS:.0f} ms at {n} classes)")
        print(f"| query | p50 @1 | p95 @1 | p50 @{n} | p95 @{n} | rows @{n} | goal |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for q, (p50, p95, rows) in latn.items():
            a, b, _ = lat1.get(q, (float("nan"), float("nan"), 0))
            print(f"| {q} | {a:.1f} | {b:.1f} | {p50:.1f} | {p95:.1f} | {rows} | "
                  f"{'ok' if p95 < GOAL_P95_MS else 'MISSED'} |", flush=True)
