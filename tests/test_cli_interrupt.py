"""Ctrl-C (issue 14, item 1): a real SIGINT to a real `extract` / `ingest` process.

Each interrupted command prints one line saying how to continue and exits 130; the rerun it
names ends where an uninterrupted run ends (the same circuit; the same graph), and meanwhile no
half-done work is visible (no circuit.json; the run is not ``complete`` in the store).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurflow_graph.circuit import load_circuit
from neurflow_graph.cli import cli
from test_extraction_support import write_images

# A small CNN as a *file path* model: every image is classified as "thing" (fc bias), so D_c is all images.
MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    INPUT_SIZE = 32
    MEAN = (0.5, 0.5, 0.5)
    STD = (0.25, 0.25, 0.25)
    CLASS_NAMES = ["thing", "other"]


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1, stride=2), nn.ReLU())
            self.conv3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.conv3(self.conv2(self.conv1(x)))), 1))


    def build():
        torch.manual_seed(3)
        net = Net()
        with torch.no_grad():
            net.fc.bias.copy_(torch.tensor([50.0, -50.0]))
        return net
''')
LAYERS = "fc,conv3,conv2,conv1"
FAST = ["--k", "8", "--tau", "3", "--ig-steps", "8", "--crop-fractions", "1,0.5", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-c", "from neurflow_graph.cli import main; main()"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sigint")
    (root / "proj").mkdir()
    (root / "proj" / "nf_sig_model.py").write_text(MODEL_FILE)
    write_images(root / "imgs", 4, size=(32, 32), seed=1)
    return root


def _extract_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["extract", "--model", str(world / "proj" / "nf_sig_model.py") + ":build", "--layers", LAYERS,
            "--images", str(world / "imgs"), "--class", "thing", "--out", str(out), *FAST, *extra]


def _science(run_dir: Path) -> dict:
    d = load_circuit(run_dir).to_dict()  # the results too (version 2 keeps them beside circuit.json)
    for key in ("timing", "created_at"):
        d.pop(key)
    return d


def _interrupt_when(proc: subprocess.Popen, ready, *, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command finished before it could be interrupted"
        assert time.monotonic() < deadline, "the command never reached the point to interrupt it at"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """The same extraction, never interrupted, in the same environment (one thread: bit-identical sums)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = subprocess.run([*CLI, *_extract_args(world, out)], env=ENV, text=True, capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return out


def test_ctrl_c_during_extract_names_the_layer_and_resume_finishes_the_same_circuit(world, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([*CLI, *_extract_args(world, out)], env=ENV, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _interrupt_when(proc, lambda: (out / "checkpoints" / "layer-00.json").exists())
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    line = _one_line(stderr)
    assert line.startswith("interrupted; rerun the same command with --resume to continue from layer "), line
    layer = line.split("continue from layer ", 1)[1].split(" ")[0]
    assert layer in LAYERS.split(",")[1:]  # the top layer was done: the run resumes below it
    assert not (out / "circuit.json").exists()  # nothing half-done looks finished

    # Without --resume the unfinished run is neither thrown away nor overwritten.
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    again = CliRunner().invoke(cli, _extract_args(world, out))
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"Error: --out {out} holds an unfinished extraction; continue it with --resume, "
        "or throw its checkpoints away with --restart")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before

    resumed = subprocess.run([*CLI, *_extract_args(world, out, "--resume")], env=ENV, cwd=tmp_path, text=True,
                             capture_output=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert _science(out) == _science(reference)


def test_ctrl_c_during_ingest_leaves_no_complete_run_and_rerun_finishes_it(reference, embedded_dir, tmp_path):
    from conftest import graph_dump
    from neurflow_graph.store.falkor import FalkorStore
    from neurflow_graph.store.runs import list_runs

    url = f"embedded:{embedded_dir}"
    watcher = FalkorStore(embedded_dir)  # the test's own connection to the same server
    try:
        proc = subprocess.Popen([*CLI, "ingest", str(reference), "--store", url, "--batch-size", "1"], env=ENV,
                                cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _interrupt_when(proc, lambda: bool(watcher.read("MATCH (r:Run) RETURN r.status AS s")))
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        assert _one_line(stderr).startswith("interrupted; rerun the same ingest to finish")
        runs = list_runs(store=watcher)
        assert [r.status for r in runs] == ["ingesting"] and not runs[0].latest
        assert watcher.read("MATCH (r:Run {status: 'complete'}) RETURN r.uid AS uid") == []

        rerun = CliRunner().invoke(cli, ["ingest", str(reference), "--store", url])
        assert rerun.exit_code == 0, rerun.output
        finished = graph_dump(watcher)
        assert [r.status for r in list_runs(store=watcher)] == ["complete"]
    finally:
        watcher.close()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert CliRunner().invoke(cli, ["ingest", str(reference), "--store", f"embedded:{fresh}"]).exit_code == 0
    clean = FalkorStore(fresh)
    try:
        assert graph_dump(clean) == finished  # interrupted + rerun == one uninterrupted ingest
    finally:
        clean.close()
        from neurflow_graph.store.falkor import stop_server

        stop_server(fresh)
