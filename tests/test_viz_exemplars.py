"""Exemplar mosaics: cropped from the real source images, content-addressed, rebuilt by the CLI,
recorded on the store's group nodes (references only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.cli import cli
from neurflow_graph.circuit import load_circuit
from neurflow_graph.synthetic import synthetic_circuit
from neurflow_graph.viz import exemplars as ex


def _images(run_dir: Path, circuit) -> None:
    """Real PNGs at the circuit's (relative) image paths: a smooth colour ramp, different per image."""
    rng = np.random.default_rng(0)
    for im in circuit.images:
        path = run_dir / im.path
        path.parent.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:64, 0:64]
        base = rng.integers(0, 120, size=3)
        arr = np.stack([base[0] + xx * 2, base[1] + yy * 2, base[2] + (xx + yy)], axis=-1).clip(0, 255)
        Image.fromarray(arr.astype(np.uint8)).save(path)


@pytest.fixture
def run(tmp_path):
    circuit = synthetic_circuit(class_index=1, class_name="bee", k=20, max_semantic_groups=2)
    _images(tmp_path, circuit)
    circuit.save(tmp_path)
    return tmp_path, circuit


def test_mosaics_show_the_stored_boxes_of_each_group(run):
    run_dir, circuit = run
    ex.write_exemplars(circuit=circuit, run_dir=run_dir)
    doc = json.loads((run_dir / "exemplars" / "manifest.json").read_text())
    assert (doc["format"], doc["version"], doc["thumb"]) == ("neurflow-exemplars", 1, 64)
    n_sg = sum(len(n.semantic_groups) for n in circuit.neurons)
    assert len([g for g in doc["groups"] if g["kind"] == "semantic_group"]) == n_sg
    assert len([g for g in doc["groups"] if g["kind"] == "neuron_group"]) == len(circuit.neuron_groups)
    patches = {p.id: p for p in circuit.patches}
    paths = {i.id: run_dir / i.path for i in circuit.images}
    for entry in doc["groups"]:
        data = (run_dir / "exemplars" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and entry["file"] == entry["sha256"][:16] + ".png"
        assert 1 <= len(entry["patches"]) <= 16
    # each tile's mean colour is the mean colour of its box in the source image (independent crop)
    ng = circuit.neuron_groups[1]
    tiles = ex.group_exemplars(run_dir, ng.layer, ng.id)
    entry = next(g for g in doc["groups"] if g["kind"] == "neuron_group" and g["gid"] == ng.id and g["layer"] == ng.layer)
    assert len(tiles) == len(entry["patches"])
    for tile, pid in zip(tiles, entry["patches"]):
        p = patches[pid]
        src = np.asarray(Image.open(paths[p.image]).convert("RGB"), dtype=np.float64)
        x0, y0, x1, y1 = p.box
        assert tile.size == (64, 64)
        np.testing.assert_allclose(np.asarray(tile, dtype=np.float64).mean(axis=(0, 1)),
                                   src[y0:y1, x0:x1].mean(axis=(0, 1)), atol=2.0)
    arr = ex.group_exemplars_array(run_dir, ng.layer, ng.id)
    assert arr.shape == (len(tiles), 64, 64, 3) and arr.dtype == np.uint8
    assert ex.mosaic_path(run_dir, ng.layer, ng.id).name == entry["file"]


def test_neuron_group_mosaic_takes_each_members_best_patches_first(run):
    _, circuit = run
    plans = {p.key(): p for p in ex.plan_exemplars(circuit)}
    sg = {(n.layer, n.index, g.id): g.patches for n in circuit.neurons for g in n.semantic_groups}
    for ng in circuit.neuron_groups:
        chosen = plans[("neuron_group", ng.layer, ng.id)].patches
        union = {p for idx, j in ng.members for p in sg[(ng.layer, idx, j)]}
        assert len(chosen) == len(set(chosen)) == min(16, len(union)) and set(chosen) <= union
        if len(ng.members) <= 16:
            assert {sg[(ng.layer, idx, j)][0] for idx, j in ng.members} <= set(chosen)


def test_exemplars_command_rebuilds_an_older_run_and_is_stable(run):
    run_dir, circuit = run
    assert not (run_dir / "exemplars").exists()
    result = CliRunner().invoke(cli, ["exemplars", str(run_dir)])
    assert result.exit_code == 0, result.output
    first = sorted(p.name for p in (run_dir / "exemplars").iterdir())
    stale = run_dir / "exemplars" / ("0" * 16 + ".png")
    stale.write_bytes(b"old")
    assert CliRunner().invoke(cli, ["exemplars", str(run_dir)]).exit_code == 0
    assert sorted(p.name for p in (run_dir / "exemplars").iterdir()) == first  # same content, same names; stale gone


def test_missing_source_image_is_one_clear_line(run):
    run_dir, circuit = run
    (run_dir / circuit.images[0].path).unlink()
    result = CliRunner().invoke(cli, ["exemplars", str(run_dir)])
    assert result.exit_code == 2
    assert "source image" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ingest_records_mosaic_references_on_groups(run, store):
    from neurflow_graph.queries.library import run_query
    from neurflow_graph.store.ingest import ingest_runs, load_runs

    run_dir, circuit = run
    ex.write_exemplars(circuit=circuit, run_dir=run_dir)
    [res] = ingest_runs(store=store, runs=load_runs([run_dir]))
    rows = run_query(store=store, name="circuit_groups", params={"run": res.uid})
    assert len(rows) == len(circuit.neuron_groups)
    for r in rows:
        data = Path(r["mosaic"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["mosaic_sha256"]
        assert Path(r["mosaic"]) == ex.mosaic_path(run_dir, r["layer"], r["group_id"]).resolve()
    sg = store.read("MATCH (s:SemanticGroup {run: $run}) WHERE s.mosaic IS NOT NULL RETURN count(s) AS n", {"run": res.uid})
    assert sg[0]["n"] == sum(len(n.semantic_groups) for n in circuit.neurons)
    # only references: no property of any node holds image bytes
    big = store.read("MATCH (g:NeuronGroup {run: $run}) RETURN max(size(g.mosaic)) AS n", {"run": res.uid})
    assert big[0]["n"] < 300
    assert load_circuit(run_dir).neuron_groups == circuit.neuron_groups
