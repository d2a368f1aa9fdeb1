"""Issue 14, items 2-8: every mistake gets one line and a documented exit code, and nothing is lost.

Item 1 (Ctrl-C, a real SIGINT to real processes) is in test_cli_interrupt.py. Exit codes:
2 input, 3 environment, 130 interrupted (docs/errors.md).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.cli import cli
from neurflow_graph.errors import EXIT_ENVIRONMENT, EXIT_INPUT
from colour_support import RGB, colour_module_source, install_module

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(result, code: int, *fragments: str) -> str:
    """Exit ``code``, no traceback, exactly one ``Error:`` line holding every fragment."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def colour(tmp_path, monkeypatch):
    """The colour model of test_cli_extract_inputs as a module file, and images of its classes."""
    file = install_module(tmp_path / "pkg", "nf_err_colour", colour_module_source(), monkeypatch)
    images = tmp_path / "images"
    for i, name in enumerate(["red", "green", "red", "blue"]):
        (images / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), RGB[name]).save(images / name / f"{i}.png")
    yield {"model": "nf_err_colour:build", "file": file, "images": images}
    for name in [m for m in sys.modules if m.startswith("nf_err_")]:
        sys.modules.pop(name, None)


def _extract(colour, out, *extra, layers="fc,features.1", cls="red"):
    return CliRunner().invoke(cli, ["extract", "--model", colour["model"], "--layers", layers, "--images",
                                    str(colour["images"]), "--class", cls, "--out", str(out), "--k", "4",
                                    "--tau", "2", "--ig-steps", "4", "--no-progress", *extra])


# ---------------------------------------------------------------------------- 2. OSError and OOM


@pytest.mark.parametrize("code,reason,fragment", [
    (errno.ENOSPC, "No space left on device", "free space on that disk"),
    (errno.EACCES, "Permission denied", "check the permissions"),
    (errno.EROFS, "Read-only file system", "the file system is read-only"),
])
def test_disk_errors_name_the_file_exit_3_and_leave_nothing(colour, tmp_path, monkeypatch, code, reason, fragment):
    """Disk full / permission denied / read-only are simulated: ``os.fsync`` raises the OSError the
    kernel would (tests run as root on a roomy disk, so nothing real produces them here)."""
    import neurflow_graph.fileio as fileio

    def failing_fsync(fd):
        raise OSError(code, reason)

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    out = tmp_path / "run"
    r = _extract(colour, out)
    line = _one_error_line(r, EXIT_ENVIRONMENT, f"cannot write {out / 'checkpoints' / 'manifest.json'}: {reason}",
                           fragment)
    assert "\n" not in line
    assert not (out / "circuit.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == []  # no temp file left behind


def test_unwrapped_oserror_reaches_the_central_handler_as_one_line(colour, tmp_path, monkeypatch):
    """An OSError no code path wrapped (simulated at the image listing) is still one line, exit 3."""
    import neurflow_graph.datasets.images as images

    def denied(root):
        raise PermissionError(errno.EACCES, "Permission denied", str(root))

    monkeypatch.setattr(images, "list_images", denied)
    r = _extract(colour, tmp_path / "run")
    _one_error_line(r, EXIT_ENVIRONMENT, f"cannot use {colour['images']}: Permission denied", "permissions")


def test_cuda_out_of_memory_names_the_device_and_max_batch(colour, tmp_path, monkeypatch):
    """Simulated: torch.cuda.OutOfMemoryError raised by a patched engine function. This machine has no
    GPU, so nothing real can produce a CUDA out-of-memory error here."""
    import neurflow_graph.extraction as extraction

    def oom(**kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 79.15 GiB of which 1.2 GiB is free.")

    monkeypatch.setattr(extraction, "extract_circuit", oom)
    r = _extract(colour, tmp_path / "run", "--max-batch", "32")
    _one_error_line(r, EXIT_ENVIRONMENT, "out of memory on cuda:0", "smaller --max-batch (now 32; try 16) --resume")


# ---------------------------------------------------------------------------- 3. reads never create a store


@pytest.mark.parametrize("argv", [
    ["runs"],
    ["query", "class_circuit", "-p", "model=m", "-p", "class=c"],
    ["cypher", "MATCH (n) RETURN count(n) AS n"],
    ["export", "--run", "0123456789abcdef", "out.json", "--format", "json"],
    ["delete-run", "0123456789abcdef"],
])
def test_read_commands_never_create_a_store(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEURFLOW_STORE", raising=False)
    missing = tmp_path / "nonexistent" / "dir" / "x"
    r = CliRunner().invoke(cli, [*argv, "--store", f"embedded:{missing}"])
    _one_error_line(r, EXIT_INPUT, f"no store at embedded:{missing}", "neurflow-graph ingest RUN_DIR",
                    "neurflow-graph demo")
    r = CliRunner().invoke(cli, argv)  # the default store, ./neurflow-data
    _one_error_line(r, EXIT_INPUT, f"no store at embedded:{tmp_path / 'neurflow-data'}")
    assert sorted(os.listdir(tmp_path)) == []  # neither folder was created


def test_read_of_an_empty_folder_or_unknown_graph_creates_nothing(tmp_path, embedded_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["runs", "--store", f"embedded:{empty}"])
    _one_error_line(r, EXIT_INPUT, "the folder holds no store data")
    assert os.listdir(empty) == []

    from neurflow_graph.store.falkor import FalkorStore

    with FalkorStore(embedded_dir) as s:  # a real store with the default graph
        s.setup()
        s.checkpoint()
    r = CliRunner().invoke(cli, ["runs", "--store", f"embedded:{embedded_dir}", "--database", "nuerflow"])
    _one_error_line(r, EXIT_INPUT, "no graph 'nuerflow'", "graphs there: neurflow", "check --database")
    with FalkorStore(embedded_dir) as s:
        graphs = s._command("GRAPH.LIST")
    assert sorted(g.decode() if isinstance(g, bytes) else g for g in graphs) == ["neurflow"]


# ---------------------------------------------------------------------------- 4. slow failures fail fast


def test_demo_checks_names_and_store_before_any_work(tmp_path):
    data = tmp_path / "data"
    r = CliRunner().invoke(cli, ["demo", "--data-dir", str(data), "--class", "bea"])
    _one_error_line(r, EXIT_INPUT, "unknown class 'bea'", "'bee'")
    r = CliRunner().invoke(cli, ["demo", "--data-dir", str(data), "--store", "bolt://127.0.0.1:1"])
    _one_error_line(r, EXIT_INPUT, "bolt://127.0.0.1:1")
    assert not data.exists()  # no world exported, no model loaded, nothing extracted


@pytest.mark.parametrize("extra,fragment", [
    (["--class", "purple"], "unknown class 'purple'"),
    (["--class", "red", "--layers", "fc,featurs.1"], "'featurs.1'"),
    (["--class", "red", "--model", "nf_err_nothere:build"], "cannot import 'nf_err_nothere'"),
])
def test_extract_checks_model_layers_and_class_before_decoding_images(colour, tmp_path, monkeypatch, extra, fragment):
    import neurflow_graph.datasets.images as images

    decoded: list[Path] = []
    real = images._decode_problem
    monkeypatch.setattr(images, "_decode_problem", lambda data, path: decoded.append(path) or real(data, path))
    args = ["extract", "--model", colour["model"], "--layers", "fc", "--images", str(colour["images"]),
            "--out", str(tmp_path / "run")]
    r = CliRunner().invoke(cli, args + extra)
    _one_error_line(r, EXIT_INPUT, fragment)
    assert decoded == []


# ---------------------------------------------------------------------------- 5. custom models

NO_PREPROCESSING = colour_module_source(input_size=None, class_names=None)


def test_custom_model_without_mean_std_is_warned_and_the_mismatch_names_preprocessing(colour, tmp_path):
    (colour["file"].parent / "nf_err_bare.py").write_text(NO_PREPROCESSING)
    only_red = tmp_path / "reds"
    only_red.mkdir()
    Image.new("RGB", (8, 8), RGB["red"]).save(only_red / "r.png")
    r = CliRunner().invoke(cli, ["extract", "--model", "nf_err_bare:build", "--layers", "fc", "--images",
                                 str(only_red), "--class", "2", "--out", str(tmp_path / "run")])
    _one_error_line(r, EXIT_INPUT, "classified as 'class_2' (2)", "--input-size, --mean, --std",
                    "declares no MEAN/STD")
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert any("nf_err_bare:build declares no MEAN/STD" in w and "--mean/--std/--input-size" in w for w in warnings)


def test_layers_lists_every_named_module_with_its_output_shape(colour):
    r = CliRunner().invoke(cli, ["layers", "--model", str(colour["file"]) + ":build"])
    assert r.exit_code == 0, r.output
    rows = {}
    for ln in r.stdout.splitlines()[1:-1]:  # header, one line per module, then the --layers hint
        name, kind, *shape = ln[2:].split()
        rows[name] = [kind, *shape]
    # oracle: the module's own named_modules() and a plain forward of each piece on an 8x8 input
    sys.path.insert(0, str(colour["file"].parent))
    import nf_err_colour

    net = nf_err_colour.build().eval()
    names = [n for n, _ in net.named_modules() if n]
    assert sorted(rows) == sorted(names)
    x = torch.zeros(1, 3, 8, 8)
    with torch.no_grad():
        feats = net.features(x)
        expected = {"features": feats.shape, "features.0": net.features[0](x).shape, "pool": net.pool(feats).shape,
                    "fc": net(x).shape}
    for name, shape in expected.items():
        assert rows[name][0] == type(dict(net.named_modules())[name]).__name__
        assert " ".join(rows[name][1:]) == str(tuple(shape)), (name, rows[name])
    # the shape hooks are gone afterwards
    from neurflow_graph.models.registry import layer_shapes, load_model
    from test_extraction_support import hook_count

    loaded = load_model(name=colour["model"], device="cpu", require_layers=False)
    assert len(layer_shapes(loaded)) == len(names) and hook_count(loaded.module) == 0


def test_layers_error_points_to_the_layers_command(colour, tmp_path):
    r = _extract(colour, tmp_path / "run", layers="fc,feature.1")
    _one_error_line(r, EXIT_INPUT, "'feature.1'", f"`neurflow-graph layers --model {colour['model']}`")


def test_class_names_file_names_the_runs(colour, tmp_path, monkeypatch):
    (colour["file"].parent / "nf_err_bare.py").write_text(NO_PREPROCESSING.replace("import torch\n",
                                                                                 "import torch\nINPUT_SIZE = 8\n", 1))
    args = ["extract", "--model", "nf_err_bare:build", "--layers", "fc", "--images", str(colour["images"]),
            "--out", str(tmp_path / "runs"), "--class", "red", "--class", "blue", "--mean", "0", "--std", "1"]
    r = CliRunner().invoke(cli, args)
    _one_error_line(r, EXIT_INPUT, "has no class names", "CLASS_NAMES", "--class-names FILE")
    (tmp_path / "names.txt").write_text("# logit order\nred\ngreen\n\nblue\n")
    seen: list[tuple[int, str, Path]] = []

    import neurflow_graph.extraction as extraction

    def record(*, model, class_index, run_dir, **kwargs):
        seen.append((class_index, model.class_name(class_index), run_dir))
        raise KeyboardInterrupt  # stop after recording: these tests cover the command, not the engine

    monkeypatch.setattr(extraction, "extract_circuit", record)
    r = CliRunner().invoke(cli, [*args, "--class-names", str(tmp_path / "names.txt")])
    assert r.exit_code == 130 and seen == [(0, "red", tmp_path / "runs" / "red")]
    (tmp_path / "bad.txt").write_text("red\ngreen\n")
    r = CliRunner().invoke(cli, [*args, "--class-names", str(tmp_path / "bad.txt")])
    _one_error_line(r, EXIT_INPUT, "2 class names", "3 outputs", "fix --class-names")


def test_file_path_and_module_name_are_one_canonical_model(colour, tmp_path, monkeypatch):
    from neurflow_graph.models.registry import load_model

    pkg = tmp_path / "proj" / "nf_err_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(colour["file"], pkg / "net.py")
    monkeypatch.chdir(tmp_path)
    by_file = load_model(name="proj/nf_err_pkg/net.py:build", layers=["fc"], device="cpu")
    by_module = load_model(name="nf_err_pkg.net:build", layers=["fc"], device="cpu")
    absolute = load_model(name=f"{pkg / 'net.py'}:build", layers=["fc"], device="cpu")
    assert by_file.spec.name == by_module.spec.name == absolute.spec.name == "nf_err_pkg.net:build"
    assert by_file.weights_sha256 == by_module.weights_sha256
    r = CliRunner().invoke(cli, ["layers", "--model", "proj/nf_err_pkg/nett.py:build"])
    _one_error_line(r, EXIT_INPUT, "no file proj/nf_err_pkg/nett.py")


# ---------------------------------------------------------------------------- 6. outputs


def test_outputs_respect_the_umask(colour, tmp_path):
    old = os.umask(0o027)
    try:
        r = _extract(colour, tmp_path / "run")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "run" / "circuit.json",
                                                         *(tmp_path / "run" / "checkpoints").iterdir()]}
    assert set(modes.values()) == {0o640}, modes


def test_out_refuses_a_finished_run_or_a_foreign_folder_without_force(colour, tmp_path):
    out = tmp_path / "run"
    assert _extract(colour, out).exit_code == 0
    before = (out / "circuit.json").read_bytes()
    r = _extract(colour, out, cls="blue")
    _one_error_line(r, EXIT_INPUT, f"--out {out} already holds a finished run", "--force")
    assert (out / "circuit.json").read_bytes() == before
    r = _extract(colour, out, "--force", cls="blue")
    assert r.exit_code == 0, r.output
    from neurflow_graph.circuit import load_circuit

    assert load_circuit(out).class_.name == "blue"

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not mine to touch")
    r = _extract(colour, foreign)
    _one_error_line(r, EXIT_INPUT, f"--out {foreign} is a non-empty folder that holds no run (holiday.jpg)",
                    "--force")
    assert sorted(os.listdir(foreign)) == ["holiday.jpg"]
    assert _extract(colour, foreign, "--force").exit_code == 0
    assert (foreign / "holiday.jpg").read_bytes() == b"not mine to touch"


# ---------------------------------------------------------------------------- 7. unsafe files and secrets


class _Payload:
    """Unpickling this runs code: it creates the file named by ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_never_runs_without_trust_pickle(colour, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "crafted.pt"
    torch.save({"state_dict": _Payload(str(marker))}, bad)  # a .pt file whose unpickling opens a file
    r = _extract(colour, tmp_path / "run", "--weights", str(bad))
    _one_error_line(r, EXIT_INPUT, f"weights file {bad} is not plain tensors", "the safe loader says:",
                    "Unsupported global", "--trust-pickle")
    assert not marker.exists()


def test_pickled_module_loads_only_with_trust_pickle(colour, tmp_path):
    sys.path.insert(0, str(colour["file"].parent))
    import nf_err_colour

    torch.save(nf_err_colour.build(), tmp_path / "module.pt")
    r = _extract(colour, tmp_path / "run", "--weights", str(tmp_path / "module.pt"))
    _one_error_line(r, EXIT_INPUT, "not plain tensors", "GLOBAL nf_err_colour.Colour")
    r = _extract(colour, tmp_path / "run", "--weights", str(tmp_path / "module.pt"), "--trust-pickle")
    assert r.exit_code == 0, r.output


SECRET = "s3cr3t-pw"


def test_password_on_the_command_line_is_refused(tmp_path):
    for argv in (["runs", "--store", "bolt://127.0.0.1:1", "--password", SECRET],
                 ["runs", "--store", f"bolt://neo4j:{SECRET}@127.0.0.1:1"]):
        r = CliRunner().invoke(cli, argv)
        _one_error_line(r, EXIT_INPUT, "on the command line", "process lists", "NEO4J_PASSWORD")
        assert SECRET not in r.output


def test_password_comes_from_the_environment_or_a_prompt(monkeypatch):
    """The driver is replaced by a recorder: no Neo4j server runs in the default test run (the real
    server's credential tests are in test_store_url.py / test_store_neo4j.py, with NEO4J_URI)."""
    import neurflow_graph.cli.options as options
    import neurflow_graph.store.neo4j_store as neo4j_store
    from neurflow_graph.errors import StoreConnectionError

    got: list[str | None] = []

    class Recorder:
        def __init__(self, uri, *, password=None, **kwargs):
            got.append(password)
            raise StoreConnectionError(f"cannot reach Neo4j at {uri}")

    monkeypatch.setattr(neo4j_store, "Neo4jStore", Recorder)
    monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    r = CliRunner().invoke(cli, ["runs", "--store", "bolt://127.0.0.1:1"])
    _one_error_line(r, EXIT_INPUT, "cannot reach Neo4j")
    monkeypatch.delenv("NEO4J_PASSWORD")
    monkeypatch.setattr(options, "_interactive", lambda: True)
    r = CliRunner().invoke(cli, ["runs", "--store", "bolt://127.0.0.1:1"], input="typed-pw\n")
    assert got == [SECRET, "typed-pw"] and "typed-pw" not in r.output
    monkeypatch.setattr(options, "_interactive", lambda: False)
    CliRunner().invoke(cli, ["runs", "--store", "bolt://127.0.0.1:1"])
    assert got[-1] is None  # no terminal, no environment: no password, no hang


# ---------------------------------------------------------------------------- 8. Python versions


def test_python_older_than_declared_is_refused_by_pip(tmp_path):
    """pip itself judges the package metadata: a 3.10 install is refused, 3.11 accepted."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wh"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wh").glob("*.whl")
    install = [*pip, "install", "--dry-run", "--no-deps", "--no-index", "--only-binary=:all:",
               "--target", str(tmp_path / "t"), str(wheel), "--python-version"]
    old = subprocess.run([*install, "3.10"], capture_output=True, text=True, timeout=300)
    assert old.returncode != 0 and "requires a different Python: 3.10.0 not in '>=3.11'" in old.stderr
    ok = subprocess.run([*install, f"{sys.version_info.major}.{sys.version_info.minor}"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
