"""Debugging and evaluation figures of issue 10, measured on a finished demo (`neurflow-graph demo`).

    .venv/bin/python bench/applications.py [--data-dir neurflow-data] [--timing-class bee] [--skip-classes] [--threads N]

1. `debug` of every biased class on the bias split (as the demo ran it: RUN_DIR/debug/LAYER/debug.json):
   the share of false positives whose highest-M group is a spurious-context group, and the share
   returned to their true class by masking those groups together vs random sets of the same size.
2. `evaluate` (optimality + fidelity) on every class's run: the share of targets whose core set
   beats the random sets, and whether masking the core neurons costs more accuracy than random sets
   at every layer.
3. The wall time of a full `evaluate` (all four experiments) on one run, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="neurflow-data")
    ap.add_argument("--timing-class", default="bee")
    ap.add_argument("--skip-classes", action="store_true", help="only the timing of one run")
    ap.add_argument("--only-model", action="store_true", help="only the demo model on the world's sets, per class")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own, 2 here)")
    args = ap.parse_args()
    if args.only_model:
        model_per_class()
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from neurflow_graph.datasets.images import list_images
    from neurflow_graph.debugging.runs import locate_run, load_run_model
    from neurflow_graph.evaluation import evaluate_run

    root = Path(args.data_dir)
    runs = sorted(p.parent for p in (root / "runs").glob("*/circuit.json"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average at start {os.getloadavg()[0]:.1f}")

    print("== debug (bias split), from the demo's debug.json ==")
    for run_dir in runs:
        for f in sorted((run_dir / "debug").glob("*/debug.json")):
            d = json.loads(f.read_text())
            c = d.get("combined") or {}
            rnd = c.get("random_returned_rate") or {}
            print(f"{d['class_name']} {d['layer']}: {len(d['false_positives'])} false positives "
                  f"({', '.join(sorted(set(d['false_positive_labels'])))}); top-M group is spurious context on "
                  f"{d['top_group_spurious_share']}; masking {c.get('concepts')} groups ({c.get('size')} neurons) "
                  f"returns {c.get('returned_rate')} vs random {rnd.get('mean')} [99% {rnd.get('low')}, {rnd.get('high')}]")
            for g in d["groups"]:
                print(f"   group {g['gid']} {g['concept']}: top share {g['top_share']:.2f}, M median "
                      f"{sorted(g['metric'])[len(g['metric']) // 2] if g['metric'] else float('nan'):.2f}, "
                      f"spurious {g['spurious']}, net {g['net_effect']:+.2f}")

    world = list_images(root / "world")[0]
    if not args.skip_classes:
        print("== evaluate optimality + fidelity on every run ==")
        wins = total = 0
        for run_dir in runs:
            located = locate_run(run=str(run_dir), store=None, runs_dirs=[])
            model = load_run_model(circuit=located.circuit)
            t = time.perf_counter()
            ev = evaluate_run(model=model, circuit=located.circuit, run_uid=located.uid, images=world,
                              experiments=["optimality", "fidelity"])
            opt, fid = ev.results["optimality"], ev.results["fidelity"]
            wins += round(opt.share_beating_random * opt.n_targets)
            total += opt.n_targets
            masks = [p for p in fid.points if p.operation == "mask" and p.scope == "layer"]
            print(f"{located.circuit.class_.name}: optimality {opt.share_beating_random:.0%} of {opt.n_targets} targets "
                  f"(random better in " + ", ".join(f"{l.layer} {l.random_better:.1%}" for l in opt.layers) + "); "
                  f"masking core < random at every layer: {fid.mask_below_random_everywhere} ("
                  + ", ".join(f"{p.layer} {p.core:.2f} vs {p.random_mean:.2f}" for p in masks)
                  + f"); {time.perf_counter() - t:.1f} s")
        print(f"all runs: core sets beat random for {wins}/{total} targets = {wins / max(total, 1):.1%}")

    print("== evaluate, all four experiments, one run ==")
    located = locate_run(run=str(root / "runs" / args.timing_class), store=None, runs_dirs=[])
    model = load_run_model(circuit=located.circuit)
    load = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    ev = evaluate_run(model=model, circuit=located.circuit, run_uid=located.uid, images=world)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"{args.timing_class}: evaluate wall {wall:.1f} s, CPU time {cpu:.1f} s over {torch.get_num_threads()} threads "
          f"(load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end); per experiment "
          + ", ".join(f"{k} {v:.1f}s" for k, v in ev.seconds.items()) + " (goal: < 120 s on 2 cores)")


def model_per_class(seed: int = 1, n: int = 100) -> None:
    """The cached demo model on the test, debiased and bias sets: accuracy and the share called "bee"."""
    import torch

    from neurflow_graph.datasets.concept_world import CLASS_NAMES, ConceptWorld
    from neurflow_graph.models.demo import _to_tensor, get_demo_model

    model, path = get_demo_model()
    print(f"demo model {path.name}; seed {seed}, {n} images per class")
    for split, rate in (("test", None), ("test", 0.5), ("bias", None)):
        images, labels = ConceptWorld(seed=seed, n_per_class=n, split=split, spurious_rate=rate).arrays()
        with torch.no_grad():
            pred = model(_to_tensor(images)).argmax(1).numpy()
        others = labels != 0
        per = ", ".join(f"{CLASS_NAMES[c]} {(pred[labels == c] == 0).mean():.0%}" for c in range(1, len(CLASS_NAMES)))
        print(f"{split}{' (spurious rate 0.5)' if rate is not None else ''}: accuracy {(pred == labels).mean():.1%}; "
              f"other classes called bee {(pred[others] == 0).mean():.1%} ({per}); bees called bee {(pred[~others] == 0).mean():.0%}")


if __name__ == "__main__":
    main()
