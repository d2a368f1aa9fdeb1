"""Paper scale: ResNet50 and GoogLeNet class circuits at the paper's parameters (issue 13).

Setup: the registry's models with their full layer lists, random init (the cost does not depend on the
weights' values), preprocessing as the DEFAULT weights expect (resize 232/256, centre crop 224),
``--images`` synthetic 224-px images (50: 2,950 patches), tau=16, k=50, ig_steps=50 by default. D_c is
every image (a random-init model's class is the one it predicts most often for them).

Prints the activation scan's own line (time, user/system CPU seconds, peak RSS, GFLOP/s), then per
layer: targets, wall time, peak memory (RSS; on CUDA also peak allocated), conv/matmul GFLOP executed
and achieved GFLOP/s against a float32 matmul peak measured in the same run (best of n=1024 and 2048 on
CPU, 2048 and 4096 on CUDA; on CPU also per CPU-second, which load slows far less), and the same for the IG
calls alone (the rest of the layer: maps, top-k, semantic groups, bookkeeping); the load average with
every line; then the whole circuit's time. ``--time-box S`` counts from the start, scan included: the
run stops after the IG block or layer that ends past S seconds and prints a PROJECTION for the
remaining layers (see ``project``), labelled as such.

    .venv/bin/python bench/paper_scale.py --model resnet50 --time-box 240      # 2 CPU cores: top layers + projection
    .venv/bin/python bench/paper_scale.py --model googlenet --time-box 240
    .venv/bin/python bench/paper_scale.py --model resnet50 --device cuda       # GPU: the whole circuit
    .venv/bin/python bench/paper_scale.py --side-by-side --images 1 --size 64 --k 8 --tau 2 --ig-steps 8 --rungs 3,5,8
    .venv/bin/python bench/paper_scale.py --quick                              # smoke test (seconds)

``--side-by-side`` repeats bench/extract.py's comparison (reference-style baseline: per-layer prefix
scans, captum IG one target at a time) with ResNet50's own layer list, at the size given, once per
``--rungs`` depth (the top N layers of that list), printing the ratio per rung and, measured in the
same run, both sides' phases (wall and CPU seconds; the baseline's scans of D, its per-target
prefix on the top-k patches, captum IG and the steps it shares with the engine), the ratio per kind
of work, a reference-equivalent ratio (the baseline less its per-target prefix, which the published
reference does not run) and upper bounds on the ratio from the measured shared steps and scan.
The engine runs with the fast scan layout (``scan_layout="fast"``: conv+BatchNorm folded, channels_last;
``extraction/scan_layout.py``), the baseline unchanged (eager NCHW, as the published code); each rung
then runs the engine once more with ``scan_layout="eager"`` and prints both scans' CPU-s and whether
the two circuits are the same (``--no-eager-engine`` skips that run).
``--predict-images N,M`` adds a labelled prediction of each rung at N, M images (scan-heavy rungs);
``--scan-layouts`` first times one forward of a batch of D in four layouts (eager NCHW as both scans
run, channels_last, conv+BN folded, both), ``--rungs 0`` that alone:

    .venv/bin/python bench/paper_scale.py --side-by-side --images 6 --size 96 --k 5 --tau 2 --ig-steps 8 --rungs 11 --predict-images 40,50
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import (BASELINE_PHASES, FlopCount, PhaseClock, _timed, baseline_circuit, matmul_peak_gflops,  # noqa: E402
                     max_weight_diff, overlap)

from neurflow_graph.datasets.images import list_images, predict_classes  # noqa: E402
from neurflow_graph.extraction import ExtractParams, circuit_builder, extract_circuit  # noqa: E402
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers  # noqa: E402
from neurflow_graph.models.registry import load_model  # noqa: E402


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def peak_rss_mib() -> float:
    """The process's resident-set high-water mark (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# Square float32 matmul sizes whose best rate is "the matmul peak": on 2 CPU cores n=1024 reaches only
# ~55% of n=2048's rate per CPU-second (74 vs 134 GFLOP per CPU-s measured), which overstated shares.
PEAK_SIZES_CPU = (1024, 2048)
PEAK_SIZES_CUDA = (2048, 4096)


def matmul_cpu_peak(n: int = 1024, reps: int = 20) -> float:
    """float32 matmul GFLOP per second of this process's CPU time (user + system): the arithmetic rate
    per core-second, which a loaded machine slows far less than the wall-clock rate."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = sum(cpu_times())
        for _ in range(reps):
            a @ b
        best = min(best, sum(cpu_times()) - t)
    return 2 * n**3 * reps / best / 1e9


def per_cpu(flops: float, cpu_s: float, cpu_peak: float | None) -> str:
    """``flops`` per CPU-second, and as a share of the matmul's (CPU runs only)."""
    if not cpu_peak:
        return ""
    rate = flops / max(cpu_s, 1e-9) / 1e9
    return f" [{rate:.1f} GFLOP per CPU-s = {100 * rate / cpu_peak:.0f}% of matmul's]"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


class TimeBox(Exception):
    """Raised from the per-layer callback once the time box is spent."""


def synthetic_images(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` smooth random RGB images (``side`` px) with a few coloured discs, as PNG in one class folder."""
    rng = np.random.default_rng(seed)
    folder = root / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        base = rng.uniform(0, 255, size=3)
        img = np.empty((side, side, 3))
        for c in range(3):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
            img[..., c] = base[c] * 0.5 + 60 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        for _ in range(3):
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 8, size=img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img_{i:03d}.png")
    return root


def slice_flops(model, layers: list[str], side: int) -> dict[str, float]:
    """Forward conv/matmul FLOPs of each slice ``layers[i+1] -> layers[i]`` for one patch."""
    out: dict[str, float] = {}
    x = torch.zeros(1, 3, side, side, device=model.device)
    with circuit_builder.frozen(model.module), torch.no_grad():
        traced = trace_layers(module=model.module, layers=layers)
        for upper, lower in zip(layers, layers[1:]):
            maps = prefix(traced=traced, layer=lower)(x)
            with FlopCount() as fc:
                layer_slice(traced=traced, lower=lower, upper=upper)(maps)
            out[upper] = float(fc.total)
    return out


def channels(model, layers: list[str], side: int) -> dict[str, int]:
    named = dict(model.module.named_modules())
    got: dict[str, int] = {}
    hooks = [named[n].register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, int(o.shape[1])))
             for n in layers]
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 3, side, side, device=model.device))
    finally:
        for h in hooks:
            h.remove()
    return got


def project(rows: list[dict], partial: dict | None, model, params: ExtractParams, side: int) -> list[dict]:
    """Remaining layers' time. The layer cut by the time box: its measured time x (pairs / pairs done).
    Later layers: ``rate x targets x k x F`` (F: the slice's forward FLOPs per patch), ``rate`` (s per
    FLOP of F) calibrated on the measured IG work; targets: exact for the layer right after the last
    finished one, then the upper bound min(channels, tau x targets above)."""
    layers = list(model.spec.layers)
    flops = slice_flops(model, layers, side)
    width = channels(model, layers, side)
    done = [r for r in rows if r["layer"] in flops and r["targets"] > 0]
    if len(done) > 1 or partial is not None:  # the logit slice collapses to one IG point: a poor calibration
        done = [r for r in done if r["index"] > 0]
    work = sum(r["targets"] * params.k * flops[r["layer"]] for r in done)
    seconds = sum(r["seconds"] for r in done)
    out = []
    targets = rows[-1]["next_targets"] if rows else 1
    start = len(rows)
    if partial is not None and partial["pairs_done"] > 0:
        if start > 0 or not done:
            work += partial["pairs_done"] * flops.get(partial["layer"], 0.0)
            seconds += partial["seconds"]
        total = partial["seconds"] * partial["pairs_total"] / partial["pairs_done"]
        out.append({"layer": partial["layer"], "targets": targets, "seconds": total,
                    "note": f"measured {partial['seconds']:.0f} s for {partial['pairs_done']} of "
                            f"{partial['pairs_total']} pairs, scaled"})
        targets = min(width[layers[start + 1]], params.tau_for(layers[start + 1]) * targets) \
            if start + 1 < len(layers) else 0
        start += 1
    rate = seconds / work if work else float("nan")
    for layer in layers[start:]:
        if layer not in flops:  # the leaf layer: concepts and semantic groups only, no IG
            out.append({"layer": layer, "targets": targets, "seconds": 0.0, "note": "leaf: no IG, not modelled"})
            continue
        seconds = rate * targets * params.k * flops[layer]
        out.append({"layer": layer, "targets": targets, "seconds": seconds, "note": "modelled"})
        nxt = layers.index(layer) + 1
        targets = min(width[layers[nxt]], params.tau_for(layers[nxt]) * targets) if nxt < len(layers) else 0
    return out


def run_circuit(args, peak: float) -> None:
    for name in (["resnet50", "googlenet"] if args.model == "both" else [args.model]):
        with tempfile.TemporaryDirectory() as tmp:
            root = synthetic_images(Path(tmp), args.images, 224)
            model = load_model(name=name, device=args.device, layers=None)
            if args.top:
                model.spec.layers = model.spec.layers[:args.top]
            records, _ = list_images(root)
            preds = predict_classes(model=model, images=records)
            cls = Counter(preds).most_common(1)[0][0]
            params = ExtractParams(k=args.k, tau=args.tau, ig_steps=args.ig_steps, max_batch=args.max_batch)
            n_patches = len(circuit_builder.patch_source(model=model, images=records, params=params).plan)
            print(f"\n== {name}: random init, preprocessing {model.spec.preprocess} ({model.spec.transforms_of}), "
                  f"{len(records)} images, {n_patches} patches, class {cls}, k={params.k} tau={params.tau} "
                  f"ig_steps={params.ig_steps}, max_batch={params.max_batch}, device {model.device}, layers "
                  f"{len(model.spec.layers)}: {','.join(model.spec.layers)}")
            rows: list[dict] = []
            marks = {"flops": 0.0, "t": time.perf_counter(), "ig_s": 0.0, "ig_flops": 0.0, "ig_cpu": 0.0,
                     "cpu": sum(cpu_times())}
            real_scan = circuit_builder.scan_activations
            fc = FlopCount()
            start = time.perf_counter()

            def timed_scan(**kw):
                t, f, c = time.perf_counter(), fc.total, cpu_times()
                out = real_scan(**kw)
                now = time.perf_counter()
                marks.update(scan_s=now - t, scan_flops=fc.total - f, flops=fc.total, t=now, cpu=sum(cpu_times()))
                user, sys_ = (b - a for a, b in zip(c, cpu_times()))
                gfs = marks["scan_flops"] / marks["scan_s"] / 1e9
                print(f"   scan         {n_patches} patches  {marks['scan_s']:8.1f} s  (user {user:.0f} s, sys {sys_:.0f} s)"
                      f"  peak RSS {peak_rss_mib():7.0f} MiB  {marks['scan_flops'] / 1e9:9.1f} GFLOP  {gfs:7.1f} GFLOP/s "
                      f"({100 * gfs / peak:4.1f}% of matmul peak){per_cpu(marks['scan_flops'], user + sys_, args.cpu_peak)}; "
                      f"full maps kept for {list(out[1])}; "
                      f"{now - start:.0f} s of the box spent; load {load()}", flush=True)
                return out

            def on_layer(info: dict) -> None:
                now = time.perf_counter()
                info["flops"] = fc.total - marks["flops"]
                cpu_now = sum(cpu_times())
                info.update(ig_s=marks["ig_s"], ig_flops=marks["ig_flops"], ig_cpu=marks["ig_cpu"],
                            cpu=cpu_now - marks["cpu"])
                marks.update(flops=fc.total, t=now, ig_s=0.0, ig_flops=0.0, ig_cpu=0.0, cpu=cpu_now)
                rows.append(info)
                gfs = info["flops"] / max(info["seconds"], 1e-9) / 1e9
                ig_gfs = info["ig_flops"] / max(info["ig_s"], 1e-9) / 1e9
                cuda = f", peak CUDA {info['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in info else ""
                print(f"   {info['layer']:12s} targets {info['targets']:5d}  {info['seconds']:8.1f} s  peak RSS "
                      f"{info['peak_rss_mib']:7.0f} MiB{cuda}  {info['flops'] / 1e9:9.1f} GFLOP  {gfs:7.1f} GFLOP/s "
                      f"({100 * gfs / peak:4.1f}% of matmul peak){per_cpu(info['flops'], info['cpu'], args.cpu_peak)}; "
                      f"IG calls {info['ig_s']:.1f} s at {ig_gfs:.1f} GFLOP/s ({100 * ig_gfs / peak:4.1f}%)"
                      f"{per_cpu(info['ig_flops'], info['ig_cpu'], args.cpu_peak)}, rest "
                      f"{info['seconds'] - info['ig_s']:.1f} s; load {load()}",
                      flush=True)
                if args.time_box and now - start > args.time_box and info["index"] + 1 < len(model.spec.layers):
                    raise TimeBox

            real_attribute = circuit_builder.SliceAttributor.attribute
            partial = {"pairs_done": 0, "seconds": 0.0}

            def attribute(self, **kw):  # counts (target, patch) pairs; stops mid-layer once the box is spent
                t, f, c0 = time.perf_counter(), fc.total, sum(cpu_times())
                out = real_attribute(self, **kw)
                marks["ig_s"] += time.perf_counter() - t
                marks["ig_cpu"] += sum(cpu_times()) - c0
                marks["ig_flops"] += fc.total - f
                partial["pairs_done"] += int((kw["slot_targets"] >= 0).sum())
                if args.time_box and time.perf_counter() - start > args.time_box:
                    raise TimeBox
                return out

            def on_layer_reset(info: dict) -> None:
                partial["pairs_done"] = 0
                on_layer(info)

            circuit_builder.scan_activations = timed_scan
            circuit_builder.SliceAttributor.attribute = attribute
            finished = True
            try:
                with fc:
                    c = extract_circuit(model=model, images=records, class_index=cls, params=params, progress=False,
                                        on_layer=on_layer_reset, memory_budget=args.memory_budget,
                                        scan_layout=args.scan_layout)
            except TimeBox:
                finished = False
            finally:
                circuit_builder.scan_activations = real_scan
                circuit_builder.SliceAttributor.attribute = real_attribute
            wall = time.perf_counter() - start
            if "scan_s" not in marks:
                print("   the scan did not finish")
            elif finished:
                ig = c.timing.get("ig", 0.0)
                print(f"   whole circuit: {wall:.1f} s measured ({len(c.neurons)} neurons, {len(c.edges)} edges); "
                      f"phases: " + ", ".join(f"{k} {v:.1f}" for k, v in c.timing.items()))
                print(f"   IG phase {ig:.1f} s")
            else:
                cut = None
                if len(rows) < len(model.spec.layers) and partial["pairs_done"]:
                    cut = {"layer": model.spec.layers[len(rows)], "pairs_done": partial["pairs_done"],
                           "pairs_total": (rows[-1]["next_targets"] if rows else 1) * params.k,
                           "seconds": time.perf_counter() - marks["t"], "ig_s": marks["ig_s"],
                           "ig_flops": marks["ig_flops"], "ig_cpu": marks["ig_cpu"]}
                    ig_gfs = cut["ig_flops"] / max(cut["ig_s"], 1e-9) / 1e9
                    print(f"   {cut['layer']:12s} cut by the box after {cut['pairs_done']} of {cut['pairs_total']} "
                          f"pairs, {cut['seconds']:.1f} s (IG calls {cut['ig_s']:.1f} s at {ig_gfs:.1f} GFLOP/s, "
                          f"{100 * ig_gfs / peak:4.1f}% of matmul peak{per_cpu(cut['ig_flops'], cut['ig_cpu'], args.cpu_peak)}); "
                          f"peak RSS {peak_rss_mib():.0f} MiB; load {load()}")
                proj = project(rows, cut, model, params, 224)
                print(f"   time box {args.time_box:.0f} s (scan included) spent after {len(rows)} of "
                      f"{len(model.spec.layers)} layers ({wall:.1f} s measured). PROJECTION for the rest (not measured; "
                      "cost ~ targets x k x slice FLOPs, calibrated on the layers above; targets beyond the next layer "
                      "are upper bounds):")
                for r in proj:
                    print(f"   PROJECTION {r['layer']:12s} targets <= {r['targets']:5d}  ~{r['seconds']:9.0f} s  "
                          f"({r['note']})")
                total = wall + sum(r["seconds"] for r in proj if np.isfinite(r["seconds"]))
                print(f"   PROJECTION whole circuit ~{total:.0f} s ({total / 60:.0f} min) on this machine")


@contextmanager
def engine_phase_cpu(cpu: dict[str, float]) -> Iterator[None]:
    """For the duration, the engine's phase timer also adds each phase's process-CPU seconds to
    ``cpu`` (its wall seconds stay in ``circuit.timing``); restored afterwards."""
    real = circuit_builder._Timer.phase

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        c = time.process_time()
        try:
            with real(self, name):
                yield
        finally:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - c

    circuit_builder._Timer.phase = phase
    try:
        yield
    finally:
        circuit_builder._Timer.phase = real


# The engine's phases (``circuit.timing``) in the order printed; "rest" is the total less these
# (layer_entry, checkpoint bookkeeping, assembly outside neuron groups).
ENGINE_PHASES = ("patches", "trace", "scan", "maps", "ig", "semantic_groups", "neuron_groups")
# The steps both sides run as the same code: they bound the ratio whatever the engine does.
SHARED = ("concepts", "layer_entry", "assemble")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "n/a"


def baseline_phases(*, clock: PhaseClock, t_base: float, c_base: float, cpu_peak: float | None,
                    n_patches: int) -> None:
    """Print the baseline's phases (wall s / CPU-s; FLOPs and rates where counted), as soon as it ends."""
    w, c, fl, n = clock.wall, clock.cpu, clock.flops, clock.count
    rest_b = t_base - sum(w.values())
    parts = []
    for name in BASELINE_PHASES:
        if name not in w:
            continue
        extra = ""
        if fl.get(name):
            extra = f", {fl[name] / 1e9:.0f} GFLOP at {fl[name] / max(w[name], 1e-9) / 1e9:.0f} GFLOP/s" \
                    f"{per_cpu(fl[name], c[name], cpu_peak)}"
        if name == "scan":
            extra = f" ({n[name] // max(n_patches, 1)} layer scans x {n_patches} patches{extra})"
        elif name in ("topk_prefix", "ig"):
            extra = f" ({n[name]} target-patch pairs{extra})"
        elif name == "concepts":
            extra = f" ({n[name]} targets)"
        parts.append(f"{name} {w[name]:.1f}/{c[name]:.1f}{extra}")
    print(f"      baseline {t_base:.1f} s, {c_base:.1f} CPU-s; phases (wall s / CPU-s): {'; '.join(parts)}; "
          f"rest {rest_b:.1f}; load {load()}", flush=True)


def breakdown(*, clock: PhaseClock, t_base: float, c_base: float, eng, t_eng: float, c_eng: float,
              eng_cpu: dict[str, float], peak: float) -> dict[str, float]:
    """Print the engine's phases (wall s / CPU-s), the ratio per kind of work and the measured bounds;
    return the figures a prediction scales."""
    w, c, fl, n = clock.wall, clock.cpu, clock.flops, clock.count
    tm = {k: float(v) for k, v in eng.timing.items() if isinstance(v, (int, float))}
    rest_e = t_eng - sum(tm.get(k, 0.0) for k in ENGINE_PHASES)
    print("      engine phases (wall s / CPU-s): " + "; ".join(
        f"{k} {tm[k]:.1f}/{eng_cpu.get(k, 0.0):.1f}" for k in ENGINE_PHASES if k in tm) + f"; rest {rest_e:.1f} "
        f"(layer_entry, bookkeeping, assembly outside neuron groups)", flush=True)
    shared_w = sum(w.get(k, 0.0) for k in SHARED)
    shared_c = sum(c.get(k, 0.0) for k in SHARED)
    scan_e, ig_e = tm.get("scan", 0.0), tm.get("maps", 0.0) + tm.get("ig", 0.0)
    scan_ec, ig_ec = eng_cpu.get("scan", 0.0), eng_cpu.get("maps", 0.0) + eng_cpu.get("ig", 0.0)
    ig_b, ig_bc = w.get("topk_prefix", 0.0) + w.get("ig", 0.0), c.get("topk_prefix", 0.0) + c.get("ig", 0.0)
    flop_scan = fl.get("scan", 0.0) / fl["scan_full"] if fl.get("scan_full") else float("nan")
    print(f"      ratio by kind of work (wall / per CPU-s): scan (prefix re-runs vs one scan) "
          f"{_ratio(w.get('scan', 0.0), scan_e)} / {_ratio(c.get('scan', 0.0), scan_ec)} [conv/matmul FLOPs of the "
          f"baseline's scans = {flop_scan:.2f} forwards of D]; IG incl. maps of l-1 (topk_prefix + ig vs maps + ig) "
          f"{_ratio(ig_b, ig_e)} / {_ratio(ig_bc, ig_ec)}, captum IG alone vs the engine's {_ratio(w.get('ig', 0.0), ig_e)}"
          f"; shared steps baseline {shared_w:.1f} s (concepts {w.get('concepts', 0.0):.1f} vs the engine's "
          f"semantic_groups {tm.get('semantic_groups', 0.0):.1f}; assemble {w.get('assemble', 0.0):.1f} vs neuron_groups "
          f"{tm.get('neuron_groups', 0.0):.1f})", flush=True)
    ref_w, ref_c = t_base - w.get("topk_prefix", 0.0), c_base - c.get("topk_prefix", 0.0)
    layers = list(eng.model.layers)
    union = sum(len({p for nrn in eng.neurons if nrn.layer == layer for g in nrn.semantic_groups for p in g.patches})
                for layer in layers[:-1])
    pairs = n.get("ig", 0)
    print(f"      sharing: {pairs} IG (target, patch) pairs over {union} distinct (layer, patch) maps "
          f"({pairs / max(union, 1):.1f} targets per patch; the engine runs the slice forward once per patch and "
          f"step, captum once per pair)", flush=True)
    print(f"      reference-equivalent (the baseline less topk_prefix: the published reference indexes the l-1 maps "
          f"its per-layer scan stored instead of recomputing them per target): {ref_w:.1f} s -> "
          f"{_ratio(ref_w, t_eng)} wall, {_ratio(ref_c, c_eng)} per CPU-s; as run (topk_prefix "
          f"{100 * w.get('topk_prefix', 0.0) / t_base:.0f}% of the baseline): {_ratio(t_base, t_eng)} wall, "
          f"{_ratio(c_base, c_eng)} per CPU-s", flush=True)
    full_s = fl.get("scan_full", 0.0) / (peak * 1e9)
    print(f"      BOUNDS (measured, wall; as run / reference-equivalent): an engine that still runs the shared steps "
          f"(same code, {shared_w:.1f} s) and nothing else: <= {_ratio(t_base, shared_w)} / {_ratio(ref_w, shared_w)}; "
          f"plus the one forward of D that phi of the top layer needs, at 100% of the matmul peak "
          f"({fl.get('scan_full', 0.0) / 1e9:.0f} GFLOP, {full_s:.1f} s): <= {_ratio(t_base, shared_w + full_s)} / "
          f"{_ratio(ref_w, shared_w + full_s)}; plus the engine's measured scan instead ({scan_e:.1f} s): "
          f"<= {_ratio(t_base, shared_w + scan_e)} / {_ratio(ref_w, shared_w + scan_e)}; per CPU-s with the "
          f"engine's scan: <= {_ratio(c_base, shared_c + scan_ec)} / {_ratio(ref_c, shared_c + scan_ec)}", flush=True)
    return {"scan_b": w.get("scan", 0.0) + w.get("patches", 0.0), "rest_b": t_base - w.get("scan", 0.0) - w.get("patches", 0.0),
            "scan_bc": c.get("scan", 0.0) + c.get("patches", 0.0),
            "rest_bc": c_base - c.get("scan", 0.0) - c.get("patches", 0.0),
            "topk_b": w.get("topk_prefix", 0.0), "topk_bc": c.get("topk_prefix", 0.0),
            "scan_e": scan_e + tm.get("patches", 0.0), "rest_e": t_eng - scan_e - tm.get("patches", 0.0),
            "scan_ec": scan_ec + eng_cpu.get("patches", 0.0),
            "rest_ec": c_eng - scan_ec - eng_cpu.get("patches", 0.0),
            "ig_e": ig_e, "ig_ec": ig_ec, "sharing": pairs / max(union, 1)}


def predict(fig: dict[str, float], *, images: int, to_images: int, threads: int) -> None:
    """PREDICTION (not measured) of the same rung at ``to_images`` images: the scan and patch phases
    scaled by the patch count, the rest held (targets, k and steps do not grow with D), except that the
    engine's IG shares each patch's forward among fewer targets as D grows: its IG + maps is given as a
    range, held .. times the measured targets per patch (no sharing at all; an over-estimate, as the
    per-target backward does not change). Idle wall estimated as CPU-s / ``threads``."""
    f = to_images / images
    out = []
    for label, key, div in (("wall as measured", "", 1.0), (f"idle estimate (CPU-s / {threads} threads)", "c", threads)):
        base = (fig[f"scan_b{key}"] * f + fig[f"rest_b{key}"]) / div
        ref = base - fig[f"topk_b{key}"] / div
        eng = (fig[f"scan_e{key}"] * f + fig[f"rest_e{key}"]) / div
        # no sharing left (every pair on its own patch): the engine's IG + maps x targets per patch, at most
        worst = eng + fig[f"ig_e{key}"] * (max(fig["sharing"], 1.0) - 1.0) / div
        out.append(f"{label}: baseline ~{base:.0f} s, engine ~{eng:.0f}-{worst:.0f} s (IG held .. IG with no patch "
                   f"sharing), ratio ~{base / worst:.1f}-{base / eng:.1f}x (reference-equivalent "
                   f"~{ref / worst:.1f}-{ref / eng:.1f}x)")
        if key == "c":
            per_image = fig["scan_bc"] / images / div
            room = (510.0 - fig["rest_bc"] / div) / per_image if per_image > 0 else float("nan")
            out.append(f"images for an idle baseline of ~510 s (8.5 min): ~{room:.0f}")
    print(f"      PREDICTION at --images {to_images} (scan scaled x{f:.2f}, the rest held; not measured): "
          + "; ".join(out), flush=True)


def scan_layouts(model, source, n: int, reps: int = 3) -> None:
    """CPU-s of one forward of ``n`` patches of D through the whole model in four forms: eager NCHW
    (what both sides' scans run), channels_last, conv+BatchNorm folded (``torch.fx`` fuse), both;
    best of ``reps``. What a faster engine scan could do to the scan ratio (the baseline kept as is)."""
    import copy

    from torch.fx.experimental.optimization import fuse

    x = source.batch(np.arange(min(n, len(source.plan)))).to(model.device)
    cl = torch.channels_last
    forms = {"eager NCHW": (model.module, x), "channels_last": (copy.deepcopy(model.module).to(memory_format=cl),
                                                                x.to(memory_format=cl)),
             "conv+BN folded": (fuse(copy.deepcopy(model.module)), x)}
    forms["folded + channels_last"] = (fuse(copy.deepcopy(model.module)).to(memory_format=cl), x.to(memory_format=cl))
    out: dict[str, float] = {}
    with circuit_builder.frozen(model.module), torch.no_grad():
        ref = model.module(x)
        for name, (mod, inp) in forms.items():
            mod.eval()
            diff = float((mod(inp) - ref).abs().max() / ref.abs().max())
            best = float("inf")
            for _ in range(reps):
                c = time.process_time()
                mod(inp)
                best = min(best, time.process_time() - c)
            out[name] = best
            print(f"   scan layout {name:24s} {best:6.2f} CPU-s per forward of {len(x)} patches "
                  f"({out['eager NCHW'] / best:4.2f}x eager NCHW; max |logit diff| / max |logit| {diff:.1e}); "
                  f"load {load()}", flush=True)


def eager_scan_check(model, records, cls, params: ExtractParams, *, eng, t_eng: float, c_eng: float,
                     eng_cpu: dict[str, float]) -> None:
    """The engine once more with ``scan_layout="eager"`` (the model as it is, as before the fast layout),
    right after the fast-layout run: both scans' wall / CPU-s, both totals, and whether the circuits are
    the same (core-set overlap, max |weight diff|)."""
    from neurflow_graph.extraction.heap import retained_heap

    cpu: dict[str, float] = {}
    with retained_heap(), engine_phase_cpu(cpu):
        other, t_other, c_other, _ = _timed(lambda: extract_circuit(
            model=model, images=records, class_index=cls, params=params, progress=False, scan_layout="eager"))
    ov, n_par, same = overlap(eng, other)
    dw, n_edges = max_weight_diff(eng, other)
    fast_scan = (eng.timing.get("scan", 0.0), eng_cpu.get("scan", 0.0))
    eager_scan = (other.timing.get("scan", 0.0), cpu.get("scan", 0.0))
    print(f"      engine scan layouts (same process, fast then eager): fast scan "
          f"({int(eng.timing.get('scan_folded_pairs', 0))} conv+BN pairs folded, channels_last "
          f"{int(eng.timing.get('scan_channels_last', 0))}) {fast_scan[0]:.1f} s / {fast_scan[1]:.1f} CPU-s, eager "
          f"scan {eager_scan[0]:.1f} s / {eager_scan[1]:.1f} CPU-s -> {_ratio(eager_scan[1], fast_scan[1])} per CPU-s; "
          f"maps fast {eng.timing.get('maps', 0.0):.1f} s vs eager {other.timing.get('maps', 0.0):.1f} s; engine "
          f"total fast {t_eng:.1f} s / {c_eng:.0f} CPU-s vs eager {t_other:.1f} s / {c_other:.0f} CPU-s; circuits: "
          f"core-set overlap {ov:.3f} ({same}/{n_par} identical), max |weight diff| {dw:.2e} over {n_edges} edges "
          f"({len(eng.edges)} fast / {len(other.edges)} eager); load {load()}", flush=True)


def side_by_side(args, peak: float) -> None:
    """Engine vs bench/extract.py's reference-style baseline, one rung per ``--rungs`` depth (the top N
    layers of ResNet50's own list), both in this process on the same inputs, baseline then engine back
    to back. Both run with the heap retained (``extraction.heap``), so the ratio is the algorithms',
    not the allocator setting's. Per rung: both sides' phases (wall and CPU seconds), the ratio per kind
    of work, the measured bounds (:func:`breakdown`) and, with ``--predict-images``, a labelled
    prediction at that many images (:func:`predict`)."""
    from neurflow_graph.extraction.heap import retained_heap

    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_images(Path(tmp), args.images, max(args.size, 32))
        model = load_model(name="resnet50", device=args.device, input_size=args.size)
        full = list(model.spec.layers)
        records, _ = list_images(root)
        preds = predict_classes(model=model, images=records)
        cls = Counter(preds).most_common(1)[0][0]
        params = ExtractParams(k=args.k, tau=args.tau, ig_steps=args.ig_steps, max_batch=args.max_batch)
        n_patches = len(circuit_builder.patch_source(model=model, images=records, params=params).plan)
        print(f"\n== side by side, resnet50 random init, {args.size} px (squash), {len(records)} images, {n_patches} "
              f"patches, class {cls}, k={params.k} tau={params.tau} ig_steps={params.ig_steps}, ResNet50's layer list "
              f"{','.join(full)}")
        if args.scan_layouts:
            scan_layouts(model, circuit_builder.patch_source(model=model, images=records, params=params),
                         params.max_batch)
        rungs = [int(v) for v in args.rungs.split(",")] if args.rungs else [len(full)]
        if args.rungs == "0":
            rungs = []
        for top in rungs:
            model.spec.layers = full[:top]
            clock, eng_cpu = PhaseClock(), {}
            with retained_heap():
                (base, f_base), t_base, c_base, m_base = _timed(
                    lambda: baseline_circuit(model, records, cls, params, clock=clock))
                baseline_phases(clock=clock, t_base=t_base, c_base=c_base, cpu_peak=args.cpu_peak,
                                n_patches=n_patches)
                with engine_phase_cpu(eng_cpu):
                    eng, t_eng, c_eng, m_eng = _timed(lambda: extract_circuit(
                        model=model, images=records, class_index=cls, params=params, progress=False,
                        scan_layout="fast"))
            ov, n_par, same = overlap(eng, base)
            dw, n_edges = max_weight_diff(eng, base)
            per_layer = Counter(n.layer for n in eng.neurons)
            print(f"   rung top {top:2d} layers ({full[top - 1]} at the bottom; targets per layer "
                  f"{[per_layer.get(layer, 0) for layer in full[:top]]}): baseline {t_base:7.1f} s "
                  f"(+{m_base:.0f} MiB, {f_base / t_base / 1e9:.1f} GFLOP/s, {100 * f_base / t_base / 1e9 / peak:.0f}% "
                  f"of peak), engine {t_eng:6.1f} s (+{m_eng:.0f} MiB)  SPEED-UP {t_base / t_eng:5.1f}x "
                  f"({c_base:.0f} vs {c_eng:.0f} CPU-s: {c_base / max(c_eng, 1e-9):.1f}x per CPU-s)  core-set "
                  f"overlap {ov:.3f} ({same}/{n_par} identical), max |weight diff| {dw:.2e} over {n_edges} edges "
                  f"({len(eng.edges)} engine / {len(base.edges)} baseline); load {load()}", flush=True)
            fig = breakdown(clock=clock, t_base=t_base, c_base=c_base, eng=eng, t_eng=t_eng, c_eng=c_eng,
                            eng_cpu=eng_cpu, peak=peak)
            if not args.no_eager_engine:
                eager_scan_check(model, records, cls, params, eng=eng, t_eng=t_eng, c_eng=c_eng, eng_cpu=eng_cpu)
            if args.predict_images:
                for to in args.predict_images:
                    predict(fig, images=args.images, to_images=to, threads=torch.get_num_threads())
        model.spec.layers = full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["resnet50", "googlenet", "both"], default="both")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--tau", type=int, default=16)
    ap.add_argument("--ig-steps", type=int, default=50)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--time-box", type=float, default=None, help="stop after the IG block that ends past S seconds from the start (scan included)")
    ap.add_argument("--top", type=int, default=None, help="analyse only the first N listed layers")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--memory-budget", default=None, help="e.g. 4GiB (default: sized from the device)")
    ap.add_argument("--scan-layout", choices=("eager", "fast"), default="eager",
                    help="the per-layer run's scan layout (the tool's default: eager); --side-by-side always "
                         "runs the engine fast, then eager")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--side-by-side", action="store_true", help="engine vs reference-style baseline, ResNet50 layers")
    ap.add_argument("--size", type=int, default=64, help="input size of the side-by-side case (squash)")
    ap.add_argument("--rungs", default=None, help="side by side: comma-separated depths (top N layers), e.g. 3,5,8,11")
    ap.add_argument("--scan-layouts", action="store_true",
                    help="side by side: first time one forward of a batch of D in four layouts (eager NCHW, "
                         "channels_last, conv+BN folded, both); --rungs 0 runs only that")
    ap.add_argument("--no-eager-engine", action="store_true",
                    help="side by side: skip the engine's second run with the eager scan layout (the engine runs "
                         "with the fast scan against the unchanged eager baseline either way)")
    ap.add_argument("--predict-images", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="side by side: also print a labelled prediction of each rung at these image counts, e.g. 30,50")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 images, top 3 layers, k=8, tau=2, 8 steps")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.k, args.tau, args.ig_steps, args.top = 2, 8, 2, 8, args.top or 3
    torch.manual_seed(0)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.device = str(device)
    sizes = PEAK_SIZES_CUDA if device.type == "cuda" else PEAK_SIZES_CPU
    peak = max(matmul_peak_gflops(device, n=n) for n in sizes)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    args.cpu_peak = max(matmul_cpu_peak(n=n) for n in sizes) if device.type == "cpu" else None
    per = f", {args.cpu_peak:.1f} GFLOP per CPU-second" if args.cpu_peak else ""
    print(f"machine: {os.cpu_count()} CPU cores, load average {load()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device} ({gpu}); float32 matmul peak {peak:.1f} GFLOP/s{per}")
    start = time.perf_counter()
    if args.side_by_side:
        side_by_side(args, peak)
    else:
        run_circuit(args, peak)
    after = max(matmul_peak_gflops(device, n=n) for n in sizes)
    print(f"\nmatmul peak at the end {after:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
