"""`extract --executor ray` on a local Ray cluster (ray.init(num_cpus=2)): the same circuits as the
sequential path, and a worker killed mid-class ends retried or reported, never half-written.

The kills use the documented test-only fault injection ``NEURFLOW_FAULT_KILL`` (neurflow_graph/
executors/jobs.py, docs/scale.md): the worker SIGKILLs itself once its class's activation-scan
checkpoint exists, which is a real worker death that Ray has to handle."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray  # in the dev extra (pyproject.toml), so make test has it
import torch
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.circuit import load_circuit
from neurflow_graph.cli import cli
from neurflow_graph.errors import EXIT_PARTIAL
from neurflow_graph.executors.jobs import FAULT_ENV
from neurflow_graph.identity import run_uid
from test_extraction_support import demo_model, write_images


PARAMS = ["--crop-fractions", "1,0.5", "--k", "6", "--tau", "2", "--ig-steps", "4", "--max-batch", "64",
          "--no-progress"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Weights of a seeded demo CNN, 8 images, and the first three classes it predicts."""
    from neurflow_graph.datasets.images import list_images, predict_classes
    from neurflow_graph.models.registry import load_model

    root = tmp_path_factory.mktemp("ray-world")
    weights = root / "demo.pt"
    model = demo_model(seed=1)
    records = write_images(root / "images", 8, seed=3)
    with torch.no_grad():  # standardise the random logits over these images, so several classes win some
        logits = model.module(torch.stack([model.preprocess(Image.open(r.path)) for r in records]))
        mean, std = logits.mean(0), logits.std(0)
        model.module.fc.weight.div_(std[:, None])
        model.module.fc.bias.sub_(mean).div_(std)
    torch.save(model.module.state_dict(), weights)
    loaded = load_model(name="demo", weights=str(weights), device="cpu")
    records, _ = list_images(root / "images")
    predicted = list(dict.fromkeys(predict_classes(model=loaded, images=records)))
    assert len(predicted) >= 3, predicted  # the world must give three classes with images
    names = [loaded.class_name(i) for i in predicted[:3]]
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return {"root": root, "weights": weights, "names": names}


def _extract(world, out: Path, *extra: str, env: dict | None = None):
    args = ["extract", "--model", "demo", "--weights", str(world["weights"]), "--images", str(world["root"] / "images"),
            "--classes-file", str(world["root"] / "classes.txt"), "--out", str(out), "--device", "cpu", *PARAMS, *extra]
    return CliRunner().invoke(cli, args, env=env)


def _uids(out: Path, names) -> dict[str, str]:
    from neurflow_graph.cli.extract import _slug

    return {n: run_uid(load_circuit(out / _slug(n))) for n in names}


@pytest.fixture(scope="module")
def sequential(world, tmp_path_factory):
    """Run uids of the sequential path. Torch on one thread, as in a Ray task (Ray sets
    OMP_NUM_THREADS=1 for a one-CPU task): the same arithmetic, so the uids can be compared exactly."""
    out = tmp_path_factory.mktemp("seq") / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = _extract(world, out)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return _uids(out, world["names"])


def test_three_classes_on_ray_give_the_sequential_circuits(world, sequential, ray_cluster, tmp_path):
    r = _extract(world, tmp_path / "runs", "--executor", "ray")
    assert r.exit_code == 0, r.output
    assert _uids(tmp_path / "runs", world["names"]) == sequential
    assert len(set(sequential.values())) == 3
    assert r.stderr.count("] done class ") == 3 and "3 classes: 3 done" in r.stderr
    again = _extract(world, tmp_path / "runs", "--executor", "ray")  # everything finished: nothing runs
    assert again.exit_code == 0 and "3 already finished (skipped)" in again.stderr and "submitted" not in again.stderr


def test_a_worker_killed_once_mid_class_is_retried_to_the_same_circuit(world, sequential, ray_cluster, tmp_path):
    victim = world["names"][1]
    marks = tmp_path / "marks"
    r = _extract(world, tmp_path / "runs", "--executor", "ray", env={FAULT_ENV: f"{victim}:1:{marks}"})
    assert r.exit_code == 0, r.output
    assert len(list(marks.glob(f"{victim}.attempt-*"))) == 2  # killed once, then Ray ran it again
    assert _uids(tmp_path / "runs", world["names"]) == sequential


def test_a_worker_that_keeps_dying_is_reported_never_half_written(world, sequential, ray_cluster, tmp_path,
                                                                 embedded_dir):
    from neurflow_graph.cli.extract import _slug
    from neurflow_graph.store.falkor import FalkorStore
    from neurflow_graph.store.runs import list_runs

    victim = world["names"][0]
    marks, out = tmp_path / "marks", tmp_path / "runs"
    r = _extract(world, out, "--executor", "ray", "--max-retries", "1", env={FAULT_ENV: f"{victim}:99:{marks}"})
    assert r.exit_code == EXIT_PARTIAL, r.output
    assert len(list(marks.glob(f"{victim}.attempt-*"))) == 2  # the first try and one retry
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and f"1 of 3 classes failed ({victim})" in errors[0] and "worker died" in errors[0]
    broken = out / _slug(victim)
    assert (broken / "checkpoints" / "scan.npz").is_file() and not (broken / "circuit.json").exists()
    others = [n for n in world["names"] if n != victim]
    assert _uids(out, others) == {n: sequential[n] for n in others}

    # ingest of the parent: the two finished siblings go in, the unfinished one is named (exit 4)
    ing = CliRunner().invoke(cli, ["ingest", str(out), "--store", f"embedded:{embedded_dir}"])
    assert ing.exit_code == EXIT_PARTIAL, ing.output
    assert str(broken) in ing.stderr and "unfinished" in ing.stderr
    with FalkorStore(embedded_dir) as s:
        assert sorted(r.uid for r in list_runs(store=s)) == sorted(sequential[n] for n in others)

    # a rerun without --resume refuses the unfinished one; with --resume it finishes only that class
    refused = _extract(world, out)
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    fixed = _extract(world, out, "--resume")
    assert fixed.exit_code == 0, fixed.output
    assert "2 already finished (skipped)" in fixed.stderr and "1 done" in fixed.stderr
    assert _uids(out, world["names"]) == sequential


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["closed", "not-an-address", "http://127.0.0.1:6379"])
def test_a_bad_ray_address_is_one_line_in_seconds_and_writes_nothing(world, tmp_path, address):
    """ray.init retries a dead address for minutes; the CLI refuses it before Ray is started."""
    import time

    if address == "closed":
        address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "runs"
    ray_was_up = ray.is_initialized()  # the module's local cluster may be up when tests run in file order
    t0 = time.perf_counter()
    result = _extract(world, out, "--executor", "ray", "--address", address)
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in result.output, result.output
    assert elapsed < 30, elapsed
    assert ray.is_initialized() == ray_was_up  # no Ray started (or stopped) for a refused address
    assert not out.exists() or not any(out.rglob("circuit.json"))
