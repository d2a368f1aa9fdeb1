"""Debugging and evaluation figures of issue 10, measured on a finished demo (`neurflow-graph demo`).

    .venv/bin/python bench/applications.py [--data-dir neurflow-data] [--timing-class bee] [--skip-classes] [--threads N]
        [--bias-flowers 1,2,3] [--fidelity-per-class 50]

1. `debug` of every biased class on the bias split (as the demo ran it: RUN_DIR/debug/LAYER/debug.json):
   the share of false positives whose highest-M group is a spurious-context group, and the share
   returned to their true class by masking those groups together vs random sets of the same size.
2. `evaluate` (optimality + fidelity) on every class's run: the share of targets whose core set
   beats the random sets, and whether masking the core neurons costs more accuracy than random sets
   at every layer.
3. The wall time of a full `evaluate` (all four experiments) on one run, with the load average.
4. What drives the false positives (``--bias-flowers``): the bias split drawn with 1, 2, 3 flowers per
   other-class image (demo seed, demo images per class); per strength the false positives by class,
   the highest-M group's concept for the look-alike class (lemon) and the others, and every ground-truth
   concept's groups masked together on the false positives vs random sets of that size (returned to the
   true class, change of the bee logit and of the true class's logit).
5. Fidelity on a larger held-out set (``--fidelity-per-class N``, the paper's 50 per class): the world's
   test split, demo seed, N images per class (its first 12 are the demo's), sizes, widths and intervals.
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
    ap.add_argument("--bias-flowers", default="1,2,3", help="bias split strengths for part 4 ('' to skip)")
    ap.add_argument("--fidelity-per-class", type=int, default=50, help="part 5's images per class (0 to skip)")
    ap.add_argument("--demo-seed", type=int, default=1)
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
    for nf in [int(v) for v in args.bias_flowers.split(",") if v.strip()]:
        what_drives(root, nf, args.demo_seed, per_class=12)
    if args.fidelity_per_class:
        fidelity_detail(root, runs, args.demo_seed, args.fidelity_per_class)
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


def what_drives(root: Path, flowers: int, seed: int, per_class: int, n_random: int = 100) -> None:
    """Part 4: debug bee on a bias split with ``flowers`` flowers per other-class image."""
    import tempfile

    import numpy as np
    import torch

    from neurflow_graph.datasets.concept_world import export_world, load_world_ground_truth
    from neurflow_graph.datasets.images import ImageRecord
    from neurflow_graph.debugging.debug import _random_sets, _records_source, _scan, debug_class
    from neurflow_graph.debugging.runs import group_concepts, load_run_model, locate_run
    from neurflow_graph.extraction.patches import PatchPlan, image_size
    from neurflow_graph.interventions import knockout_phi, layer_function

    located = locate_run(run=str(root / "runs" / "bee"), store=None, runs_dirs=[])
    model = load_run_model(circuit=located.circuit)
    with tempfile.TemporaryDirectory() as tmp:
        truth = load_world_ground_truth(export_world(out_dir=Path(tmp) / "bias", seed=seed, n_per_class=per_class,
                                                     split="bias", bias_flowers=flowers))
        recs = [ImageRecord(path=(truth.root / i.path).resolve(), sha256=i.sha256, label=i.class_name)
                for i in sorted(truth.images, key=lambda i: i.path)]
        t = time.perf_counter()
        res = debug_class(model=model, circuit=located.circuit, run_uid=located.uid, images=recs, n_random=n_random,
                          truth=truth, concepts=group_concepts(located=located))
        labels = res.false_positive_labels
        counts = {c: labels.count(c) for c in sorted(set(labels))}
        spur = set(next(c for c in truth.classes if c["name"] == "bee").get("spurious", {}))
        M = np.asarray([g.metric for g in res.groups])
        top = [res.groups[i].concept for i in M.argmax(0)] if len(labels) else []
        look = [t_ in spur for t_, l in zip(top, labels) if l == "lemon"]
        rest = [t_ in spur for t_, l in zip(top, labels) if l != "lemon"]
        c = res.combined
        print(f"== bias split, {flowers} flower(s) per other-class image ({per_class} per class, seed {seed}) ==")
        print(f"false positives {len(labels)} {counts}; highest-M group is flower/grass on {res.top_group_spurious_share} "
              f"(lemon {sum(look)}/{len(look)}, other classes {sum(rest)}/{len(rest)}); highest-M concepts "
              f"{ {k: top.count(k) for k in sorted(set(map(str, top)))} }")
        if c is not None:
            r = c.random_returned_rate
            print(f"masking the {c.concepts} groups ({c.size} neurons) returns {c.returned_rate:.3f}; "
                  f"random {r.mean:.3f} [99% {r.low:.3f}, {r.high:.3f}]")
        # every ground-truth concept's groups masked together: what each does to the false positives
        layers = list(located.circuit.model.layers)
        paths = [Path(r.path) for r in recs]
        fps = set(res.false_positives)
        fp = np.asarray([i for i, p in enumerate(paths) if str(p) in fps], dtype=np.int64)
        if not len(fp):
            return
        whole = PatchPlan(image=np.arange(len(paths), dtype=np.int64),
                          boxes=np.asarray([[0, 0, *image_size(p)] for p in paths], dtype=np.int64))
        phi, maps = _scan(model, _records_source(paths, whole, model), [layers[0], res.layer], keep=[res.layer])
        names = [model.class_name(i).lower() for i in range(model.num_classes)]
        true = np.asarray([names.index(r.label.lower()) for r in recs])[fp]
        logits = torch.as_tensor(phi[layers[0]])[fp]
        by: dict[str, set[int]] = {}
        for g in res.groups:
            by.setdefault(str(g.concept), set()).update(g.neurons)
        rng = np.random.default_rng(0)
        fn = layer_function(module=model.module, lower=res.layer, upper=layers[0])
        cls = res.class_index
        rows = np.arange(len(fp))
        for concept, neurons in sorted(by.items()):
            sets = [sorted(neurons)] + _random_sets(rng, int(maps[res.layer].shape[1]), len(neurons), n_random)
            with torch.no_grad():
                out = knockout_phi(slice_module=fn, maps=maps[res.layer][torch.as_tensor(fp)], sets=sets).cpu()
            hit = out.argmax(2).numpy() == true
            back = hit.mean(1)
            lemon = np.asarray([l == "lemon" for l in labels])
            d_bee = (out[:, :, cls] - logits[:, cls]).mean(1).numpy()
            d_true = (out[:, rows, true] - logits[rows, true]).mean(1).numpy()
            print(f"  mask {concept} groups ({len(neurons)} neurons): returned {back[0]:.2f} (lemon {hit[0, lemon].sum()}/"
                  f"{lemon.sum()}, others {hit[0, ~lemon].sum()}/{(~lemon).sum()}), d bee logit {d_bee[0]:+.2f}, "
                  f"d true-class logit {d_true[0]:+.2f} | random: returned {back[1:].mean():.2f} "
                  f"[99% {np.percentile(back[1:], 99.5):.2f}], d bee {d_bee[1:].mean():+.2f}, d true {d_true[1:].mean():+.2f}")
        print(f"  ({time.perf_counter() - t:.1f} s, load average {os.getloadavg()[0]:.1f})")


def fidelity_detail(root: Path, runs: list[Path], seed: int, per_class: int) -> None:
    """Part 5: fidelity (masking and retaining, one layer) on ``per_class`` held-out images per class."""
    import tempfile

    from neurflow_graph.datasets.concept_world import export_world
    from neurflow_graph.datasets.images import list_images, load_rgb
    from neurflow_graph.debugging.runs import load_run_model, locate_run
    from neurflow_graph.evaluation import evaluate_run
    from neurflow_graph.evaluation.fidelity import _widths

    with tempfile.TemporaryDirectory() as tmp:
        world = list_images(export_world(out_dir=Path(tmp) / "w", seed=seed, n_per_class=per_class, split="test"))[0]
        print(f"== fidelity on {per_class} held-out images per class (test split, seed {seed}), 20 random sets ==")
        everywhere = 0
        for run_dir in runs:
            located = locate_run(run=str(run_dir), store=None, runs_dirs=[])
            model = load_run_model(circuit=located.circuit)
            ev = evaluate_run(model=model, circuit=located.circuit, run_uid=located.uid, images=world,
                              experiments=["fidelity"])
            fid = ev.results["fidelity"]
            everywhere += bool(fid.mask_below_random_everywhere)
            x = model.preprocess(load_rgb(world[0].path))[None].to(model.device)
            widths = _widths(model, x, [p.layer for p in fid.points])
            parts = []
            for p in fid.points:
                if p.scope != "layer":
                    continue
                parts.append(f"{p.operation} {p.layer} {p.n_neurons[p.layer]}/{widths[p.layer]}: {p.core:.2f} vs "
                             f"{p.random_mean:.2f} [{p.random_low:.2f}, {p.random_high:.2f}]")
            print(f"{located.circuit.class_.name} (base accuracy {fid.base_accuracy:.2f} on {fid.n_images}): "
                  f"masking core < random at every layer: {fid.mask_below_random_everywhere}; " + "; ".join(parts))
        print(f"runs where masking core costs more than random at every layer: {everywhere}/{len(runs)}")


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
