"""What labelling a real run costs in requests and bytes, and what --concurrency buys.

Usage (after `neurflow-graph demo`, which leaves its runs in neurflow-data/runs/):

    .venv/bin/python bench/labels.py [--run-dir neurflow-data/runs/bee] [--latency 0.2]

The run directory is copied (circuit, annotations, mosaics) into a temporary folder and ingested into a
temporary embedded store there, so the bench writes nothing into the user's run or store.

1. A dry run of `label` on the run (the latest one of the store when --run is not given): the number of
   caption and formation requests, images, and request body sizes (the exact JSON that would be posted).
2. The same requests answered by a loopback chat-completions server that waits ``--latency`` seconds
   per request (tests/mllm_server.py), with --concurrency 1 and 4 side by side, fresh caches: wall time
   and the ratio. A third pass over the warm cache shows what a re-run costs.
Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mllm_server import MLLMServer, default_answer  # noqa: E402

from neurflow_graph.labels.client import EndpointConfig  # noqa: E402
from neurflow_graph.labels.service import label_run  # noqa: E402
from neurflow_graph.store.url import open_store  # noqa: E402

KEY = "bench-key"
MODEL = "bench-model"


def main() -> None:
    import hashlib
    import shutil

    from neurflow_graph.store.ingest import ingest_run_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("neurflow-data/runs/bee"))
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfl") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        shutil.copytree(args.run_dir, run_dir, ignore=shutil.ignore_patterns("labels", "checkpoints"))
        store = open_store(f"embedded:{tmp / 'store'}")
        try:
            run = ingest_run_dir(store=store, run_dir=run_dir).uid
            cfg = EndpointConfig(base_url="http://127.0.0.1:9/v1", api_key=None, model=MODEL)
            dry = label_run(store=store, run=run, config=cfg, dry_run_dir=tmp / "dry", cache_dir=tmp / "c0")
            index = json.loads((tmp / "dry" / "index.json").read_text())
            print(f"run {run} (copy of {args.run_dir}): {len(index)} requests")
            for kind in ("caption", "formation"):
                sizes = [i["bytes"] for i in index if i["kind"] == kind]
                images = sum(len(i["images"]) for i in index if i["kind"] == kind)
                if sizes:
                    print(f"{kind}: {len(sizes)} requests, {images} images, body median "
                          f"{statistics.median(sizes) / 1e3:.0f} KB, max {max(sizes) / 1e3:.0f} KB, "
                          f"total {sum(sizes) / 1e6:.1f} MB")
            mosaics = {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes()
                       for p in (run_dir / "exemplars").glob("*.png")}
            with MLLMServer(key=KEY, model=MODEL, images=mosaics,
                            script=lambda s: ("slow", args.latency, default_answer(s))) as srv:
                cfg = EndpointConfig(base_url=srv.url, api_key=KEY, model=MODEL, timeout=30, max_retries=0)
                times = {}
                for c in (1, 4):
                    t = time.perf_counter()
                    s = label_run(store=store, run=run, config=cfg, cache_dir=tmp / f"c{c}", concurrency=c)
                    times[c] = time.perf_counter() - t
                    print(f"--concurrency {c}: {len(s.outcomes)} requests answered and stored in {times[c]:.2f} s "
                          f"({args.latency:g} s server latency each)")
                t = time.perf_counter()
                s = label_run(store=store, run=run, config=cfg, cache_dir=tmp / "c4", concurrency=4)
                warm = time.perf_counter() - t
                print(f"re-run on the warm cache: {s.totals.line()}; {warm:.2f} s")
                print(f"concurrency 4 vs 1: {times[1] / times[4]:.2f}x faster; requests the server rejected: "
                      f"{len(srv.violations)}")
        finally:
            store.close()
            from neurflow_graph.store.falkor import stop_server

            stop_server(tmp / "store")


if __name__ == "__main__":
    main()
