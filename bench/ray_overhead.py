"""Where `extract --executor ray`'s extra wall time goes on a small machine (docs/scale.md, "Measured").

The same classes as bench/scale.py (seeded demo CNN, --images synthetic 64-px images, k=20, tau=4,
16 IG steps), extracted twice by the real CLI in a subprocess: sequential and --executor ray (a local
Ray started by the command). Each stderr line is timestamped as it arrives, and every class's own
compute time is read from its circuit.json (``timing.total``: the extraction inside the process or
Ray task). Prints, per executor: the time to the first class start (model load, D_c selection; for
Ray also ray.init and the model put into the object store), each class's compute and when it ended,
and the tail after the last class (for Ray: shutdown), so the ratio is split into measured parts.

    .venv/bin/python bench/ray_overhead.py          # about 3-5 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from scale import _world  # noqa: E402


def _run(cli: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """(wall seconds, [(seconds since start, stderr line)]) of one CLI run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.perf_counter() - t0, line.rstrip()))
    if proc.wait() != 0:
        raise SystemExit(f"{cli[1]} failed: " + "\n".join(text for _, text in lines[-5:]))
    return time.perf_counter() - t0, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    from neurflow_graph.cli.extract import _slug

    print(f"cpus {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights, names = _world(root, args.images, args.classes)
        cli = [str(Path(sys.executable).parent / "neurflow-graph"), "extract", "--model", "demo", "--weights",
               str(weights), "--images", str(root / "images"), "--classes-file", str(root / "classes.txt"),
               "--device", "cpu", "--k", "20", "--tau", "4", "--ig-steps", "16", "--no-progress"]
        walls = {}
        for executor in ("sequential", "ray"):
            out = root / executor
            wall, lines = _run([*cli, "--out", str(out), "--executor", executor])
            walls[executor] = wall
            starts = [t for t, text in lines if " started class " in text or " submitted class " in text]
            ends = [(t, text) for t, text in lines if " done class " in text]
            compute = {n: json.loads((out / _slug(n) / "circuit.json").read_text())["timing"]["total"] for n in names}
            print(f"\n{executor}: wall {wall:.1f} s; first class started at {starts[0]:.1f} s; "
                  f"last class done at {ends[-1][0]:.1f} s; after it {wall - ends[-1][0]:.1f} s (exit"
                  f"{', ray.shutdown' if executor == 'ray' else ''})")
            for t, text in ends:
                print(f"   {t:6.1f} s  {text[:90]}")
            print("   compute per class (circuit.json timing.total): "
                  + ", ".join(f"{n} {compute[n]:.1f} s" for n in names)
                  + f"; sum {sum(compute.values()):.1f} s")
            print(f"   wall - first start - tail = {ends[-1][0] - starts[0]:.1f} s of class work on the clock")
        print(f"\nray / sequential wall {walls['ray'] / walls['sequential']:.2f}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
