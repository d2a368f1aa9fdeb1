"""`extract` over many classes (--class all, --classes-file) with the sequential executor, and
`ingest` of a parent folder that holds an unfinished sibling. Real engine, real store."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from colour_support import RGB, colour_module_source, install_module
from neurflow_graph.circuit import load_circuit
from neurflow_graph.cli import cli
from neurflow_graph.errors import EXIT_INPUT, EXIT_PARTIAL
from neurflow_graph.identity import run_uid

# Logits = mean R, G, B (tests/colour_support.py); no INPUT_SIZE, so the images of one class must share a size.
FREE_SIZE = colour_module_source(input_size=None, mean_std=True, conv_offset=0.05)
ARGS = ["--layers", "fc,features.1", "--k", "3", "--tau", "2", "--ig-steps", "4", "--no-progress"]


@pytest.fixture
def colour(tmp_path, monkeypatch):
    install_module(tmp_path / "pkg", "nf_many_colour", FREE_SIZE, monkeypatch)
    images = tmp_path / "images"
    sizes = {"red": [(16, 12), (20, 10)], "green": [(16, 12), (16, 12)], "blue": [(16, 12)]}
    for colour_name, shapes in sizes.items():
        (images / colour_name).mkdir(parents=True)
        for j, size in enumerate(shapes):
            img = Image.new("RGB", size, RGB[colour_name])
            img.putpixel((j, j), (255, 255, 255))  # images differ, so their hashes do
            img.save(images / colour_name / f"{j}.png")
    yield {"model": "nf_many_colour:build", "images": images}
    sys.modules.pop("nf_many_colour", None)


def _extract(colour, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["extract", "--model", colour["model"], "--images", str(colour["images"]),
                                    "--out", str(out), *ARGS, *extra])


def _one_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def test_class_all_reports_the_failed_class_and_completes_the_others(colour, tmp_path):
    out = tmp_path / "runs"
    r = _extract(colour, out, "--class", "all")
    # red's two images differ in size and the model has no input size: that class fails, alone
    line = _one_error(r, EXIT_PARTIAL, "1 of 3 classes failed (red)", "2 different sizes", "--resume")
    assert "[1/3] started class 'red' (0): 2 images" in r.stderr and "3 classes: 2 done" in r.stderr
    assert not (out / "red" / "circuit.json").exists()
    done = {name: load_circuit(out / name) for name in ("green", "blue")}
    assert [c.class_.index for c in done.values()] == [1, 2]
    assert sorted(r.stdout.splitlines()) == sorted(ln for ln in r.stdout.splitlines() if "neurons" in ln)
    assert len(r.stdout.splitlines()) == 2 and line

    # the same command again: the finished classes are skipped (same circuits), red fails again
    uids = {n: run_uid(c) for n, c in done.items()}
    again = _extract(colour, out, "--class", "all")
    assert again.exit_code == EXIT_PARTIAL and "2 already finished (skipped)" in again.stderr
    assert {n: run_uid(load_circuit(out / n)) for n in uids} == uids
    # other parameters over finished runs: refused before anything runs, --force recomputes
    other = _extract(colour, out, "--classes-file", str(_file(tmp_path, "green\n")), "--k", "2")
    _one_error(other, EXIT_INPUT, f"--out {out / 'green'} holds a finished run of a different extraction",
               "parameters differ", "--force")
    forced = _extract(colour, out, "--classes-file", str(_file(tmp_path, "green\n")), "--k", "2", "--force")
    assert forced.exit_code == 0, forced.output
    assert load_circuit(out / "green").params["k"] == 2


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "classes.txt"
    p.write_text(text)
    return p


def test_classes_file_names_are_checked_up_front(colour, tmp_path):
    out = tmp_path / "runs"
    f = _file(tmp_path, "# which classes\nblue\n\n1\ngren\n")
    r = _extract(colour, out, "--classes-file", str(f))
    _one_error(r, EXIT_INPUT, f"--classes-file {f} line 5", "unknown class 'gren'", "close names: 'green'")
    assert not out.exists()
    _one_error(_extract(colour, out, "--classes-file", str(_file(tmp_path, "# none\n"))), EXIT_INPUT, "names no class")
    _one_error(_extract(colour, out, "--class", "all", "--class", "red"), EXIT_INPUT, "--class all already names")
    _one_error(_extract(colour, out), EXIT_INPUT, "--class all", "--classes-file FILE")
    _one_error(_extract(colour, out, "--class", "red", "--address", "auto"), EXIT_INPUT, "--executor ray")
    # a file of good names: one run directory per class even for one class, in file order
    ok = _extract(colour, out, "--classes-file", str(_file(tmp_path, "blue\n2\n")))
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in out.iterdir()) == ["blue"] and (out / "blue" / "circuit.json").is_file()


def test_executor_ray_without_ray_installed_is_one_line(colour, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like to import
    r = _extract(colour, tmp_path / "runs", "--class", "all", "--executor", "ray")
    _one_error(r, EXIT_INPUT, "pip install 'neurflow-graph[ray]'")


def test_ingest_of_a_parent_with_an_unfinished_run_ingests_its_siblings(tmp_path, embedded_dir):
    from neurflow_graph.store.falkor import FalkorStore
    from neurflow_graph.store.runs import list_runs
    from neurflow_graph.synthetic import synthetic_circuit

    parent = tmp_path / "runs"
    good = {}
    for i, name in enumerate(["ant", "bee", "cat"]):
        c = synthetic_circuit(class_index=i, class_name=name, widths=(10, 24, 24, 16))
        c.save(parent / name)
        good[name] = run_uid(c)
    (parent / "bee" / "circuit.json").unlink()  # bee's extraction died: only its checkpoints are left
    (parent / "bee" / "checkpoints").mkdir()
    (parent / "bee" / "checkpoints" / "manifest.json").write_text("{}")
    r = CliRunner().invoke(cli, ["ingest", str(parent), "--store", f"embedded:{embedded_dir}"])
    line = _one_error(r, EXIT_PARTIAL, "1 unfinished run directory not ingested", str(parent / "bee"),
                      "the 2 finished run(s) are ingested", "--resume")
    assert line and sum(" nodes, " in ln for ln in r.stdout.splitlines()) == 2
    with FalkorStore(embedded_dir) as s:
        runs = list_runs(store=s)
    assert sorted(x.uid for x in runs) == sorted([good["ant"], good["cat"]]) and all(x.status == "complete" for x in runs)
    # named directly, the unfinished run is still an error before the store opens
    _one_error(CliRunner().invoke(cli, ["ingest", str(parent / "bee"), "--store", f"embedded:{embedded_dir}"]),
               EXIT_INPUT, "unfinished run")
