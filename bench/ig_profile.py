"""One IG block of a paper-scale slice, timed per CPU-second, optionally A/B against another engine file.

Builds the slice ``--upper <- --lower`` of a registry model (random init, 224 px), maps of
``--patches`` random inputs, ``--targets`` distinct random target channels per patch, and runs
``SliceAttributor.attribute`` the way ``circuit_builder`` does (slot count from ``choose_slots``,
memory budget from the device, ``max_rows`` = ``--max-batch``). Prints per rep: wall, CPU seconds
(user + system of this process), conv/matmul GFLOP (counted in a separate untimed pass), GFLOP per
CPU-second and its share of a float32 matmul's (n=1024/2048, measured in the same run).

``--against FILE``: a second copy of ``integrated_gradients.py`` (e.g. the previous commit's, from
``git show HEAD~1:neurflow_graph/extraction/integrated_gradients.py > /tmp/old_ig.py``) run on the
same inputs, reps alternating; prints both and the largest attribution difference.
``--profile``: a ``torch.profiler`` table (self CPU time per op) of one rep of each engine.

    nice -n 10 .venv/bin/python bench/ig_profile.py --model googlenet --upper inception5a --lower inception4e
    nice -n 10 .venv/bin/python bench/ig_profile.py --against /tmp/old_ig.py --profile
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import FlopCount  # noqa: E402
from paper_scale import cpu_times, load, matmul_cpu_peak  # noqa: E402

from neurflow_graph.extraction import circuit_builder  # noqa: E402
from neurflow_graph.extraction import integrated_gradients as current  # noqa: E402
from neurflow_graph.extraction.budget import device_budget, grad_budget  # noqa: E402
from neurflow_graph.extraction.heap import retained_heap  # noqa: E402
from neurflow_graph.extraction.ig_graph import choose_slots  # noqa: E402
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers  # noqa: E402
from neurflow_graph.models.registry import load_model  # noqa: E402


def engine_from(path: str):
    spec = importlib.util.spec_from_file_location("ig_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="googlenet")
    ap.add_argument("--upper", default="inception5a")
    ap.add_argument("--lower", default="inception4e")
    ap.add_argument("--patches", type=int, default=8)
    ap.add_argument("--targets", type=int, default=16, help="distinct random targets per patch")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--slots", type=int, default=None, help="default: choose_slots, as circuit_builder")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--against", default=None, help="another integrated_gradients.py to compare with")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a loaded machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with retained_heap():  # as extract_circuit runs: freed blocks stay in the heap
        run(args)


def run(args: argparse.Namespace) -> None:

    torch.manual_seed(args.seed)
    peak = max(matmul_cpu_peak(n=n) for n in (1024, 2048))
    lm = load_model(name=args.model, device="cpu", layers=None)
    for p in lm.module.parameters():
        p.requires_grad_(False)
    layers = list(lm.spec.layers)
    with circuit_builder.frozen(lm.module), torch.no_grad():
        traced = trace_layers(module=lm.module, layers=layers)
        slice_gm = layer_slice(traced=traced, lower=args.lower, upper=args.upper)
        maps = prefix(traced=traced, layer=args.lower)(torch.randn(args.patches, 3, 224, 224))
        width = int(slice_gm(maps[:1]).shape[1])
    rng = np.random.default_rng(args.seed)
    per_patch = [sorted(rng.choice(width, size=min(args.targets, width), replace=False).tolist())
                 for _ in range(args.patches)]
    engines = {"current": current}
    if args.against:
        engines["against"] = engine_from(args.against)
    budget = grad_budget(device_budget(torch.device("cpu")))
    built = {}
    for name, mod in engines.items():
        att = mod.SliceAttributor(slice_gm, grad_budget=budget)
        att.prepare(maps[:1])
        steps = att.steps_needed(args.steps)
        slots = args.slots or choose_slots(targets_per_patch=[len(t) for t in per_patch], costs=att.costs,
                                           steps=steps, cap=att.slots_fit)
        copies, rows = [], []
        for p, ts in enumerate(per_patch):
            for i in range(0, len(ts), slots):
                chunk = ts[i:i + slots]
                copies.append(p)
                rows.append(chunk + [-1] * (slots - len(chunk)))
        kw = dict(maps=maps, copy_patch=torch.tensor(copies), slot_targets=torch.tensor(rows),
                  alphas=current.quadrature("gausslegendre", args.steps)[0],
                  weights=current.quadrature("gausslegendre", args.steps)[1], max_rows=args.max_batch)
        built[name] = (att, kw, slots)
    print(f"{args.model} {args.upper} <- {args.lower}: maps {tuple(maps.shape)}, {args.patches} patches x "
          f"{args.targets} targets, {args.steps} steps, max_batch {args.max_batch}; {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads; matmul {peak:.1f} GFLOP per CPU-s; load {load()}", flush=True)
    outs, flops = {}, {}
    for name, (att, kw, slots) in built.items():
        with FlopCount() as fc:
            outs[name] = att.attribute(**kw)
        flops[name] = float(fc.total)
        print(f"   {name:8s} slots {slots}, rows per chunk {att.rows_per_chunk(slots, args.max_batch)}, "
              f"{flops[name] / 1e9:.2f} GFLOP per block", flush=True)
    if "against" in outs:
        a, b = outs["current"], outs["against"]
        print(f"   max |current - against| {float((a - b).abs().max()):.3e} (max |against| "
              f"{float(b.abs().max()):.3e})", flush=True)
    totals = {name: [0.0, 0.0] for name in built}
    for rep in range(args.reps):
        for name, (att, kw, _) in built.items():
            t, c = time.perf_counter(), sum(cpu_times())
            att.attribute(**kw)
            wall, cpu = time.perf_counter() - t, sum(cpu_times()) - c
            totals[name][0] += wall
            totals[name][1] += cpu
            rate = flops[name] / cpu / 1e9
            print(f"   rep {rep} {name:8s} wall {wall:6.2f} s  CPU {cpu:6.2f} s  {rate:6.1f} GFLOP per CPU-s "
                  f"({100 * rate / peak:4.1f}% of matmul's); load {load()}", flush=True)
    for name, (wall, cpu) in totals.items() if args.reps else ():
        print(f"   mean {name:8s} wall {wall / args.reps:6.2f} s  CPU {cpu / args.reps:6.2f} s  "
              f"{flops[name] / (cpu / args.reps) / 1e9:6.1f} GFLOP per CPU-s "
              f"({100 * flops[name] / (cpu / args.reps) / 1e9 / peak:4.1f}%)")
    if "against" in totals:
        print(f"   CPU-time ratio against / current: {totals['against'][1] / totals['current'][1]:.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, (att, kw, _) in built.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                att.attribute(**kw)
            print(f"\n== profile: {name}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))


if __name__ == "__main__":
    sys.exit(main())
