"""`directions` on the demo model's four conv layers with 2,000 concept-world images (issue 12's figure),
or (``--alexnet``) on a random-init torchvision AlexNet, issue 12's control.

Goal: the whole computation (PCA of pre- and post-ReLU sites with up to 100,000 sampled positions
per layer, exemplars, completeness-2 ablation curves on 128 images) in < 2 minutes on 2 cores.
The model is loaded (the demo model is trained first on a cache miss, not timed) and the images are
exported before timing starts. Prints per-phase seconds, wall and CPU time, the machine's load
average before and after (the wall figure is only meaningful on an idle machine) and the 80%/99%
counts.

    .venv/bin/python bench/directions.py                 # the figure (demo model)
    .venv/bin/python bench/directions.py --images 200    # a smoke test
    .venv/bin/python bench/directions.py --alexnet --out out/alexnet   # the random-init AlexNet control

``--alexnet``: torchvision AlexNet with the registry's seeded random init (no weights), the images
resized to ``--input-size`` (default 224, the size AlexNet was built for; at 64 px its conv5 pools to
1x1 and fc1 would see 256 values copied 36 times), Dey et al.'s layers conv1 = ``features.0``,
conv2 = ``features.3``, conv5 = ``features.10``, fc1 = ``classifier.1``. Completeness 2 is agreement
with the random network's own predictions (the concept world's labels are not ImageNet classes).
With ``--out`` the result is written as ``directions.json`` (+ ``components.npz``, figures), the
same files as ``neurflow-graph directions``.
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
ALEXNET_LAYERS = ["features.0", "features.3", "features.10", "classifier.1"]   # conv1, conv2, conv5, fc1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alexnet", action="store_true", help="random-init torchvision AlexNet instead of the demo model")
    ap.add_argument("--input-size", type=int, default=224, help="--alexnet: square side images are resized to")
    ap.add_argument("--images", type=int, default=2000, help="images (spread over the 8 classes)")
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--eval-images", type=int, default=128)
    ap.add_argument("--exemplars", type=int, default=8, help="exemplar patches per direction (0 skips that pass)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", type=Path, default=None, help="write directions.json, components.npz and figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.alexnet:
        model = load_model(name="alexnet", weights=None, input_size=args.input_size)   # seeded random init
        layers = ALEXNET_LAYERS
    else:
        model = load_model(name="demo")                           # trains on a cache miss (not timed)
        layers = LAYERS
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.images // len(CLASS_NAMES))
        root = export_world(out_dir=Path(tmp) / "world", seed=0, n_per_class=per_class, split="test", size=64)
        images = list_images(root)[0][: args.images]
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        r = compute_directions(model=model, images=images, layers=layers, samples=args.samples,
                               eval_images=args.eval_images, n_exemplars=args.exemplars, batch_size=args.batch_size)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        load1 = os.getloadavg()[0]
        if args.out is not None:
            from neurflow_graph.directions.plots import plot_result
            from neurflow_graph.directions.result import write_result

            path = write_result(r, args.out)
            plot_result(r, args.out)
            print(f"wrote {path}")
    print(f"machine: {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}, "
          f"load average {load0:.1f} before / {load1:.1f} after")
    print(f"{model.spec.name} ({model.weights_source}), input {model.spec.input_size or 'own size'} px, "
          f"{len(images)} images, layers {','.join(layers)}, samples {args.samples}, eval images {args.eval_images}, "
          f"exemplars {args.exemplars}")
    print("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items()))
    goal = "" if args.alexnet else f"  (goal < 120 s wall: {'met' if total < 120 else 'NOT met'})"
    print(f"total {total:.1f} s wall, {cpu:.1f} s CPU (all threads){goal}")
    for s in r.sites:
        print(f"  {s.layer} {s.site:<4} dim {s.dim:>4}  samples {s.n_samples:>6}  80%: PCA {s.counts['pca']['80']} "
              f"neurons {s.counts['neurons']['80']}  99%: PCA {s.counts['pca']['99']} neurons {s.counts['neurons']['99']}")


if __name__ == "__main__":
    main()
