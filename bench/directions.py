"""`directions` on the demo model's four conv layers with 2,000 concept-world images (issue 12's figure).

Goal: the whole computation (PCA of pre- and post-ReLU sites with up to 100,000 sampled positions
per layer, exemplars, completeness-2 ablation curves on 128 images) in < 2 minutes on 2 cores.
The demo model is loaded (trained first on a cache miss, not timed) and the images are exported
before timing starts. Prints per-phase seconds, the machine's load average before and after
(the figure is only meaningful on an idle machine) and the 80%/99% counts.

    .venv/bin/python bench/directions.py                 # the figure
    .venv/bin/python bench/directions.py --images 200    # a smoke test
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from neurflow_graph.datasets.concept_world import CLASS_NAMES, export_world
from neurflow_graph.datasets.images import list_images
from neurflow_graph.directions.compute import compute_directions
from neurflow_graph.models.registry import load_model

LAYERS = ["conv1", "conv2", "conv3", "conv4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="images (spread over the 8 classes)")
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--eval-images", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(name="demo")                               # trains on a cache miss (not timed)
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.images // len(CLASS_NAMES))
        root = export_world(out_dir=Path(tmp) / "world", seed=0, n_per_class=per_class, split="test", size=64)
        images = list_images(root)[0][: args.images]
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        r = compute_directions(model=model, images=images, layers=LAYERS, samples=args.samples,
                               eval_images=args.eval_images)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        load1 = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}, "
          f"load average {load0:.1f} before / {load1:.1f} after")
    print(f"demo model, {len(images)} images, layers {','.join(LAYERS)}, samples {args.samples}, "
          f"eval images {args.eval_images}")
    print("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items()))
    print(f"total {total:.1f} s wall, {cpu:.1f} s CPU (all threads)  "
          f"(goal < 120 s wall: {'met' if total < 120 else 'NOT met'})")
    for s in r.sites:
        print(f"  {s.layer} {s.site:<4} dim {s.dim:>3}  samples {s.n_samples:>6}  80%: PCA {s.counts['pca']['80']} "
              f"neurons {s.counts['neurons']['80']}  99%: PCA {s.counts['pca']['99']} neurons {s.counts['neurons']['99']}")


if __name__ == "__main__":
    main()
