"""Extraction engine vs a reference-style baseline, side by side in one process, same inputs.

Baseline (what the published reference does): the network prefix re-run over all of D for every
analysed layer (activation scan), then captum ``IntegratedGradients`` one target neuron at a
time on the layer-(l-1) maps of its top-k patches (recomputed per target). Everything else is the
engine's own code, called through ``circuit_builder``'s public steps: ``patch_source`` (patches),
``concepts`` (top-k, semantic groups), ``layer_entry`` (ranking, core neurons) and
``assemble_circuit`` (edge weights of eq. 4, neuron groups), so any difference in the circuits comes
from the scan and IG alone. Given a :class:`PhaseClock`, the baseline records the time, CPU and
FLOPs of each of its phases (``bench/paper_scale.py --side-by-side`` prints them); it computes the
same with or without one.

Engine: ``neurflow_graph.extraction.extract_circuit``.

Per case it prints wall time, ratio, peak RSS growth, achieved GFLOP/s (conv/matmul FLOPs, against
a float32 matmul peak measured in the same run), core-neuron overlap and the largest edge-weight
difference; then, for the engine alone, speed and core overlap with ig_steps 8/16/32 vs 50.

    .venv/bin/python bench/extract.py            # demo CNN (trained) + resnet18 (random init)
    .venv/bin/python bench/extract.py --quick    # smaller inputs, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from neurflow_graph.circuit import Circuit
from neurflow_graph.datasets.images import list_images, predict_classes
from neurflow_graph.extraction import ExtractParams, extract_circuit
from neurflow_graph.extraction import circuit_builder as cb
from neurflow_graph.extraction.activations import channel_means, spatial_means
from neurflow_graph.extraction.slicing import layer_slice, prefix, trace_layers
from neurflow_graph.models.registry import load_model


# ---------------------------------------------------------------------------- measurement


class FlopCount(TorchDispatchMode):
    """Conv/matmul FLOPs of every aten op run (forward, backward and vmapped backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


class PeakRSS:
    """Peak growth of the process's resident set while the block runs (sampled every 5 ms), MiB."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def matmul_peak_gflops(device: torch.device, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e9


class PhaseClock:
    """Wall and process-CPU seconds, conv/matmul FLOPs and a count per named phase, accumulated over
    the blocks run under ``clock(name)`` (bench instrumentation: it times, it changes nothing)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.flops: dict[str, float] = {}
        self.count: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str, n: int = 0):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c
            self.count[name] = self.count.get(name, 0) + n

    def add_flops(self, name: str, flops: float) -> None:
        self.flops[name] = self.flops.get(name, 0.0) + flops


# The baseline's phases, in the order printed: the reference-style work (scan: the prefix to layer l
# over all of D, once per layer; topk_prefix: the prefix to l-1 on each target's top-k patches; ig:
# captum per target and the reduction of its attributions) and the engine's own steps it shares
# (concepts: top-k + semantic groups; layer_entry: ranking, core neurons; assemble: edges, neuron groups).
BASELINE_PHASES = ("patches", "trace", "scan", "topk_prefix", "ig", "concepts", "layer_entry", "assemble")


# ---------------------------------------------------------------------------- baseline


def baseline_circuit(model, images, class_index: int, params: ExtractParams,
                     clock: PhaseClock | None = None) -> tuple[Circuit, float]:
    """The reference's way: per-layer prefix scans of D, captum IG one target at a time.

    Returns the circuit and its conv/matmul FLOPs: the first scan batch of each layer and the first
    target of each layer are counted (cheaply, in place) and scaled, as every other batch/target of
    that layer has the same shapes. ``clock`` (optional) gets the time, CPU and FLOPs of each of
    :data:`BASELINE_PHASES` (counts: patches scanned, (target, patch) pairs, targets); the
    computation is the same with or without it. ``clock.flops["scan_full"]``: the scan of the top
    layer alone (a forward of D through the whole network, what the engine's one scan needs)."""
    clock = clock if clock is not None else PhaseClock()
    layers = list(model.spec.layers)
    device = model.device
    with clock("patches"):
        source = cb.patch_source(model=model, images=images, params=params)
    n_patches = len(source.plan)
    flops = 0.0
    with cb.frozen(model.module):
        with clock("trace"):
            traced = trace_layers(module=model.module, layers=layers)
        phi = {}
        for layer in layers:  # the prefix network is re-run over all of D for every layer
            with clock("scan", n_patches):
                pre = prefix(traced=traced, layer=layer)
                parts = []
                with torch.no_grad():
                    for s in range(0, n_patches, params.max_batch):
                        ids = np.arange(s, min(s + params.max_batch, n_patches))
                        with FlopCount() if s == 0 else nullcontext() as fc:
                            parts.append(channel_means(pre(source.batch(ids).to(device))).cpu().numpy())
                        if s == 0:
                            flops += fc.total * n_patches / len(ids)
                            clock.add_flops("scan", fc.total * n_patches / len(ids))
                            if layer == layers[0]:
                                clock.add_flops("scan_full", fc.total * n_patches / len(ids))
                phi[layer] = np.concatenate(parts)
        results, targets = [], [class_index]
        for i, layer in enumerate(layers):
            if not targets:
                break
            lower = layers[i + 1] if i + 1 < len(layers) else None
            with clock("concepts", len(targets)):
                concepts = cb.concepts(phi_layer=phi[layer], r=phi[lower if lower else layer], targets=targets,
                                       params=params)
            neurons = []
            if lower is not None:
                with clock("topk_prefix"):
                    slice_gm = layer_slice(traced=traced, lower=lower, upper=layer)
                    pre_lower = prefix(traced=traced, layer=lower)
                with clock("ig"):
                    ig = IntegratedGradients(lambda x, g=slice_gm: spatial_means(g(x)))
            for a in targets:
                c = concepts[a]
                sums = None
                if lower is not None:
                    first = a == targets[0]
                    with FlopCount() if first else nullcontext() as fc:
                        with clock("topk_prefix", len(c["topk"])), torch.no_grad():
                            maps = pre_lower(source.batch(c["topk"]).to(device))
                        f_prefix = fc.total if first else 0.0
                        with clock("ig", len(c["topk"])):
                            attr = ig.attribute(maps, target=int(a), n_steps=params.ig_steps, method=params.ig_method,
                                                internal_batch_size=params.max_batch)
                    if first:
                        flops += fc.total * len(targets)
                        clock.add_flops("topk_prefix", f_prefix * len(targets))
                        clock.add_flops("ig", (fc.total - f_prefix) * len(targets))
                    with clock("ig"):
                        attr = attr.flatten(2).sum(2) if attr.dim() > 2 else attr
                        values = attr.detach().cpu().double().numpy()  # (k, C): per patch of the concept
                        groups = np.zeros((int(c["labels"].max()) + 1, values.shape[1]))
                        np.add.at(groups, c["labels"], values)
                        sums = {"abs_sum": np.abs(values).sum(0), "signed_sum": values.sum(0), "groups": groups}
                with clock("layer_entry"):
                    neurons.append(cb.layer_entry(neuron=a, concept=c, sums=sums, lower=lower, params=params))
            results.append({"layer": layer, "neurons": neurons})
            targets = sorted({x for n in neurons for x in n["cores"]})
    with clock("assemble"):
        circuit = cb.assemble_circuit(model=model, images=images, class_index=class_index, params=params,
                                      layer_results=results, phi=phi, plan=source.plan)
    return circuit, flops


# ---------------------------------------------------------------------------- comparison


def cores_of(circuit: Circuit) -> dict[tuple[str, int], set[int]]:
    out: dict[tuple[str, int], set[int]] = {}
    for e in circuit.edges:
        out.setdefault((e.parent_layer, e.parent_index), set()).add(e.child_index)
    return out


def overlap(a: Circuit, b: Circuit) -> tuple[float, int, int]:
    """Mean Jaccard of core sets over parents in both circuits; (#parents compared, #identical)."""
    ca, cb_ = cores_of(a), cores_of(b)
    common = sorted(set(ca) & set(cb_))
    if not common:
        return 0.0, 0, 0
    j = [len(ca[k] & cb_[k]) / len(ca[k] | cb_[k]) for k in common]
    return float(np.mean(j)), len(common), sum(ca[k] == cb_[k] for k in common)


def max_weight_diff(a: Circuit, b: Circuit) -> tuple[float, int]:
    wa = {(e.parent_layer, e.parent_index, e.parent_group, e.child_index): e.weight for e in a.edges}
    wb = {(e.parent_layer, e.parent_index, e.parent_group, e.child_index): e.weight for e in b.edges}
    common = set(wa) & set(wb)
    return (max((abs(wa[k] - wb[k]) for k in common), default=float("nan")), len(common))


# ---------------------------------------------------------------------------- cases


def demo_case(tmp: Path, quick: bool):
    from neurflow_graph.datasets.concept_world import export_world

    t = time.perf_counter()
    model = load_model(name="demo", device=None)
    note = f"trained demo weights ({model.weights_source}); load/train {time.perf_counter() - t:.0f} s"
    root = export_world(out_dir=tmp / "world", seed=1, n_per_class=6 if quick else 24, split="test")
    records, _ = list_images(root)
    preds = predict_classes(model=model, images=records)
    class_index = Counter(preds).most_common(1)[0][0]
    n_images = 4 if quick else 12
    images = [r for r, p in zip(records, preds) if p == class_index][:n_images]
    params = ExtractParams(k=20 if quick else 50, tau=8 if quick else 16, ig_steps=50)
    return "demo CNN", model, images, class_index, params, note


def resnet_case(tmp: Path, quick: bool):
    from neurflow_graph.datasets.concept_world import export_world

    side = 64 if quick else 96
    model = load_model(name="resnet18", input_size=side, layers=["fc", "layer4.1", "layer4.0", "layer3.1"])
    root = export_world(out_dir=tmp / "world-r", seed=2, n_per_class=3, split="test")
    records, _ = list_images(root)
    preds = predict_classes(model=model, images=records)
    class_index = Counter(preds).most_common(1)[0][0]
    images = [r for r, p in zip(records, preds) if p == class_index][:2 if quick else 4]
    params = ExtractParams(k=10 if quick else 30, tau=4 if quick else 6, ig_steps=50)
    note = f"random init (seeded), {side}px input, layers {','.join(model.spec.layers)}"
    return "resnet18", model, images, class_index, params, note


def _timed(fn):
    """(result, wall seconds, process CPU seconds, peak RSS growth MiB) of ``fn()``."""
    with PeakRSS() as mem:
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    return out, wall, cpu, mem.mib


def run_case(case, peak: float, repeats: int) -> dict:
    name, model, images, class_index, params, note = case
    n_patches = len(cb.patch_source(model=model, images=images, params=params).plan)
    print(f"\n== {name}: {note}")
    print(f"   class {class_index} ({model.class_name(class_index)}), {len(images)} images, {n_patches} patches, "
          f"k={params.k} tau={params.tau} ig_steps={params.ig_steps} ({params.ig_method}), device {model.device}")

    def engine(p=params):
        return extract_circuit(model=model, images=images, class_index=class_index, params=p, progress=False)

    from neurflow_graph.extraction.heap import retained_heap

    with retained_heap():  # the engine retains freed memory in the heap; the baseline gets the same allocator
        (base, f_base), t_base, c_base, m_base = _timed(lambda: baseline_circuit(model, images, class_index, params))
    runs = [_timed(engine) for _ in range(repeats)]
    eng, t_eng, c_eng, m_eng = min(runs, key=lambda r: r[1])
    with FlopCount() as fc:
        engine()
    f_eng = fc.total
    ov, n_par, same = overlap(eng, base)
    dw, n_edges = max_weight_diff(eng, base)
    for label, t, c, m, f in (("baseline", t_base, c_base, m_base, f_base), ("engine", t_eng, c_eng, m_eng, f_eng)):
        print(f"   {label:8s} {t:8.2f} s wall {c:8.2f} s CPU   peak RSS +{m:7.1f} MiB   {f / t / 1e9:6.1f} GFLOP/s "
              f"({100 * f / t / 1e9 / peak:4.1f}% of matmul peak)   {f / 1e9:8.1f} GFLOP")
    print(f"   speed-up {t_base / t_eng:6.1f}x wall, {c_base / c_eng:6.1f}x CPU (engine: best of {repeats}; "
          f"all runs {', '.join(f'{r[1]:.2f}' for r in runs)} s)")
    print(f"   identical outputs: core-set overlap {ov:.3f} ({same}/{n_par} parents identical), max |weight diff| "
          f"{dw:.2e} over {n_edges} edges ({len(eng.edges)} engine / {len(base.edges)} baseline)")
    print("   engine phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in eng.timing.items()))
    for steps in (8, 16, 32):
        sweep = [_timed(lambda: engine(replace(params, ig_steps=steps))) for _ in range(repeats)]
        c, dt = min(sweep, key=lambda r: r[1])[:2]
        o, n_par, same = overlap(c, eng)
        print(f"   engine ig_steps={steps:2d}: {dt:6.2f} s ({t_eng / dt:4.1f}x faster than 50 steps)   core overlap "
              f"vs 50 steps {o:.3f} ({same}/{n_par} identical)")
    return {"name": name, "t_base": t_base, "t_eng": t_eng}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small inputs (smoke test)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="engine runs per measurement; the best is kept")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak_gflops(device)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}; float32 matmul peak {peak:.1f} GFLOP/s")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for make in (demo_case, resnet_case):
            run_case(make(Path(tmp), args.quick), peak, args.repeats)
    after = matmul_peak_gflops(device)
    state = "steady" if abs(after - peak) < 0.15 * peak else "MACHINE BUSY: timings noisy"
    print(f"\nmatmul peak at the end {after:.1f} GFLOP/s ({state})")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
