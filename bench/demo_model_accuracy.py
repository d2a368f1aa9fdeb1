"""Train the full demo model from scratch into a temporary cache; print accuracy and wall time.

    .venv/bin/python bench/demo_model_accuracy.py [--seed 0] [--per-class 200] [--epochs 6]

Also times the second (cached) call, so the line ends with the train / cache-hit ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from neurflow_graph.models.demo import TrainConfig, get_demo_model, load_demo_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=TrainConfig.n_train_per_class,
                        help="training images per class (smaller runs show how hard the task is)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = parser.parse_args()
    config = TrainConfig(seed=args.seed, n_train_per_class=args.per_class, epochs=args.epochs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average at start {load:.2f}")
    print(f"config: {config}")
    with tempfile.TemporaryDirectory(prefix="neurflow-bench-") as cache:
        start = time.perf_counter()
        _, path = get_demo_model(cache_dir=cache, config=config, progress=print)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        get_demo_model(cache_dir=cache, config=config, train_if_missing=False)
        hit_s = time.perf_counter() - start
        metrics = load_demo_metrics(path)
    assert metrics is not None
    print(f"held-out accuracy {metrics.test_accuracy:.2%} ({metrics.n_test} images), "
          f"debiased {metrics.debiased_accuracy:.2%}, train accuracy {metrics.train_accuracy:.2%}")
    print("per class: " + ", ".join(f"{k} {v:.0%}" for k, v in metrics.per_class_accuracy.items()))
    print(f"wall: train from scratch {train_s:.1f} s (images {metrics.data_seconds:.1f} s) | "
          f"cache hit {hit_s:.3f} s | ratio {train_s / hit_s:.0f}x")


if __name__ == "__main__":
    main()
