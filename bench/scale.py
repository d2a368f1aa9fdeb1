"""Many classes: `extract --executor sequential` vs `--executor ray` (local Ray) side by side.

    .venv/bin/python bench/scale.py                 # 3 classes, 24 images, ~3-5 min on 2 idle cores
    .venv/bin/python bench/scale.py --classes 4 --images 32 --address auto   # onto a running cluster

Both runs are the real CLI in a subprocess (model load, D_c selection, one run directory per
class; for Ray also its start-up), on a seeded demo CNN whose logits are standardised over the
images so that several classes get images. Prints wall times, their ratio, the machine's load
average, and checks that both runs give the same run uids (identity.run_uid) for every class.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _world(root: Path, n_images: int, n_classes: int) -> tuple[Path, list[str]]:
    import torch
    from PIL import Image

    from neurflow_graph.datasets.images import list_images, predict_classes
    from neurflow_graph.models.registry import load_model
    from test_extraction_support import demo_model, write_images

    model = demo_model(seed=1)
    records = write_images(root / "images", n_images, seed=3)
    with torch.no_grad():
        logits = model.module(torch.stack([model.preprocess(Image.open(r.path)) for r in records]))
        mean, std = logits.mean(0), logits.std(0)
        model.module.fc.weight.div_(std[:, None])
        model.module.fc.bias.sub_(mean).div_(std)
    weights = root / "demo.pt"
    torch.save(model.module.state_dict(), weights)
    loaded = load_model(name="demo", weights=str(weights), device="cpu")
    recs, _ = list_images(root / "images")
    preds = predict_classes(model=loaded, images=recs)
    by_count = sorted(set(preds), key=lambda c: (-preds.count(c), c))[:n_classes]
    names = [loaded.class_name(c) for c in by_count]
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    print("classes:", ", ".join(f"{loaded.class_name(c)} ({preds.count(c)} images)" for c in by_count))
    return weights, names


def _summary(circuit) -> tuple[str, list, list[float]]:
    """(run uid, the structure: neurons and edges, the edge weights). Ray tasks run torch with one
    thread (Ray sets OMP_NUM_THREADS=1), the sequential run with all cores, so sums may differ in
    the last bits; the structure must not."""
    from neurflow_graph.identity import run_uid

    structure = [sorted((n.layer, n.index) for n in circuit.neurons),
                 sorted((e.parent_layer, e.parent_index, e.parent_group, e.child_layer, e.child_index) for e in circuit.edges)]
    return run_uid(circuit), structure, [e.weight for e in sorted(circuit.edges, key=lambda e: (
        e.parent_layer, e.parent_index, e.parent_group, e.child_layer, e.child_index))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray per run)")
    ap.add_argument("--ig-steps", type=int, default=16)
    args = ap.parse_args()

    from neurflow_graph.circuit import load_circuit
    from neurflow_graph.cli.extract import _slug

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights, names = _world(root, args.images, args.classes)
        cli = [str(Path(sys.executable).parent / "neurflow-graph"), "extract", "--model", "demo", "--weights",
               str(weights), "--images", str(root / "images"), "--classes-file", str(root / "classes.txt"),
               "--device", "cpu", "--k", "20", "--tau", "4", "--ig-steps", str(args.ig_steps), "--no-progress"]
        times, uids = {}, {}
        for executor in ("sequential", "ray"):
            out = root / executor
            extra = ["--executor", executor] + (["--address", args.address] if executor == "ray" and args.address else [])
            t0 = time.perf_counter()
            subprocess.run([*cli, "--out", str(out), *extra], check=True, stdout=subprocess.DEVNULL)
            times[executor] = time.perf_counter() - t0
            uids[executor] = {n: _summary(load_circuit(out / _slug(n))) for n in names}
            print(f"{executor:>10}: {times[executor]:6.1f} s wall for {len(names)} classes")
    exact = all(uids["sequential"][n][0] == uids["ray"][n][0] for n in names)
    same = all(uids["sequential"][n][1] == uids["ray"][n][1] for n in names)
    gap = max(max((abs(a - b) for a, b in zip(uids["sequential"][n][2], uids["ray"][n][2])), default=0.0)
              for n in names)
    print(f"ray / sequential wall time: {times['ray'] / times['sequential']:.2f}  (same neurons and edges: {same}; "
          f"largest edge-weight difference {gap:.1e}; identical run uids: {exact})")
    print(f"cpus: {os.cpu_count()}  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not same or gap > 1e-4:
        raise SystemExit("the two executors gave different circuits")


if __name__ == "__main__":
    main()
