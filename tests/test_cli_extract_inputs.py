"""`neurflow-graph extract`: bad input gives one `Error:` line and exit 2; good input reaches the engine."""

from __future__ import annotations

import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from neurflow_graph.cli import cli
from colour_support import RGB, colour_module_source, install_module
from neurflow_graph.extraction.params import ExtractParams

# Logits = mean R, G, B: a solid image is classified as its dominant colour (tests/colour_support.py).
COLOUR_MODULE = colour_module_source()
COLOUR = "nf_cli_colour:build"


@pytest.fixture
def colour_module(tmp_path, monkeypatch):
    install_module(tmp_path / "pkg", "nf_cli_colour", COLOUR_MODULE, monkeypatch)
    yield COLOUR
    sys.modules.pop("nf_cli_colour", None)


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    for i, colour in enumerate(["red", "green", "red", "blue"]):
        (root / colour).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), RGB[colour]).save(root / colour / f"{i}.png")
    return root


def _extract(*args: str):
    return CliRunner().invoke(cli, ["extract", *args])


def _assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_unknown_model(images, tmp_path):
    r = _extract("--model", "resnet51", "--images", str(images), "--class", "0", "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "unknown model 'resnet51'", "resnet50", "demo", "module:factory")


def test_layer_that_does_not_exist(images, tmp_path):
    r = _extract("--model", "resnet18", "--layers", "fc,layer4.1,layr3.0", "--images", str(images),
                 "--class", "0", "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "'layr3.0'", "close matches: layer3.0", "top-level modules: conv1")


def test_weights_that_do_not_fit(images, tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    r = _extract("--model", "resnet50", "--weights", str(tmp_path / "r18.pt"), "--images", str(images),
                 "--class", "0", "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "do not fit resnet50", "missing: layer1.0.conv3.weight", "shape mismatch: ")


def test_default_weights_offline(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    r = _extract("--model", "resnet18", "--weights", "DEFAULT", "--images", str(images), "--class", "0",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "could not download", "resnet18-f37072fd.pth", "--weights PATH")


def test_missing_images_dir(tmp_path, colour_module):
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(tmp_path / "nope"), "--class", "red",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "image folder", "does not exist")


def test_folder_without_readable_images(tmp_path, colour_module):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"\xff\xd8 garbage")
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(tmp_path / "imgs"), "--class", "red",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "no readable image", "1 file(s) skipped: a.jpg: corrupt image")


def test_unreadable_file_is_skipped_and_named(images, tmp_path, colour_module, fake_engine):
    (images / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "notes.txt").write_text("labels: red, green")
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    assert [len(c["images"]) for c in fake_engine] == [2]  # the broken file is not among them
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == 1 and "broken.png" in skipped[0] and "corrupt image" in skipped[0]
    # files that are not named as images are summarised, not reported one by one as failures
    assert "ignored 1 file(s) that are not images (notes.txt)" in r.stderr.splitlines()


def test_class_name_that_does_not_exist(images, tmp_path, colour_module):
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "gren",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "unknown class 'gren'", "close names: 'green'")


def test_no_image_classified_as_the_class(tmp_path, colour_module):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8), RGB["red"]).save(tmp_path / "imgs" / "r.png")
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(tmp_path / "imgs"), "--class", "blue",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "classified as 'blue' (2)", "'red' (0): 1")


def test_cuda_without_cuda(images, tmp_path, colour_module, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"), "--device", "cuda")
    _assert_one_line_error(r, "CUDA is not available", "--device cpu")


@pytest.mark.parametrize("args,fragment", [
    (["--mean", "0.5,abc,0.5"], "--mean must be comma-separated numbers"),
    (["--mean", "0.5,0.5"], "mean must be 1 or 3 finite numbers"),
    (["--std", "0.2,0,0.2"], "std values must be > 0"),
    (["--crop-fractions", "1,1.5"], "--crop-fractions must be comma-separated numbers in (0, 1]"),
    (["--tau-layer", "features.1"], "--tau-layer must be LAYER=N"),
    (["--tau-layer", "conv9=4"], "--tau-layer names 'conv9'"),
    (["--stride-fraction", "0"], "--stride-fraction must be in (0, 1]"),
])
def test_malformed_options(images, tmp_path, colour_module, args, fragment):
    r = _extract("--model", colour_module, "--layers", "fc,features.1", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"), *args)
    _assert_one_line_error(r, fragment)


# ---------------------------------------------------------------------------- reaching the engine


@pytest.fixture
def fake_engine(monkeypatch):
    calls: list[dict] = []

    def extract_circuit(*, model, images, class_index, params, run_dir=None, resume=False, progress=True,
                        memory_budget=None, scan_layout="eager"):
        calls.append(dict(model=model, images=list(images), class_index=class_index, params=params,
                          run_dir=run_dir, resume=resume, progress=progress, memory_budget=memory_budget,
                          scan_layout=scan_layout))
        return types.SimpleNamespace(neurons=[object()] * (class_index + 2), neuron_groups=[object()])

    # the real parameters, a stand-in engine: these tests cover the command, not the extraction
    fake = types.ModuleType("neurflow_graph.extraction")
    fake.ExtractParams = ExtractParams
    fake.extract_circuit = extract_circuit
    monkeypatch.setitem(sys.modules, "neurflow_graph.extraction", fake)
    return calls


def test_one_class_runs_in_out_dir_with_options(images, tmp_path, colour_module, fake_engine):
    out = tmp_path / "run"
    r = _extract("--model", colour_module, "--layers", "fc,features.1", "--images", str(images), "--class", "red",
                 "--out", str(out), "--k", "7", "--tau", "3", "--tau-layer", "features.1=2",
                 "--crop-fractions", "1,0.5", "--ig-method", "riemann_right", "--rank-by", "abs_sum",
                 "--seed", "4", "--resume", "--no-progress", "--memory-budget", "512MiB", "--scan-layout", "fast")
    assert r.exit_code == 0, r.output
    (call,) = fake_engine
    assert call["run_dir"] == out and call["class_index"] == 0 and call["resume"] and not call["progress"]
    assert call["memory_budget"] == 512 * 2**20 and call["scan_layout"] == "fast"
    assert sorted(x.path.name for x in call["images"]) == ["0.png", "2.png"]
    assert call["params"] == ExtractParams(k=7, tau=3, tau_per_layer={"features.1": 2}, crop_fractions=(1.0, 0.5),
                                         ig_method="riemann_right", rank_by="abs_sum", seed=4)
    assert call["model"].spec.layers == ["fc", "features.1"]
    summary = r.stdout.strip().splitlines()
    assert len(summary) == 1 and str(out) in summary[0] and "2 neurons, 1 groups" in summary[0]


def test_several_classes_get_one_run_dir_each(images, tmp_path, colour_module, fake_engine):
    out = tmp_path / "runs"
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "Blue",
                 "--class", "0", "--class", "red", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert [(c["class_index"], c["run_dir"]) for c in fake_engine] == [(2, out / "blue"), (0, out / "red")]
    assert [len(c["images"]) for c in fake_engine] == [1, 2]
    assert fake_engine[0]["params"] == ExtractParams() and fake_engine[0]["progress"]
    assert [c["memory_budget"] for c in fake_engine] == [None, None]  # sized from the device by the engine
    assert len(r.stdout.strip().splitlines()) == 2


def test_memory_budget_reaches_every_class_of_a_many_class_run(images, tmp_path, colour_module, fake_engine):
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "Blue",
                 "--class", "red", "--out", str(tmp_path / "runs"), "--memory-budget", "64MiB")
    assert r.exit_code == 0, r.output
    assert [c["memory_budget"] for c in fake_engine] == [64 * 2**20, 64 * 2**20]




# ---- issue 13: --layers order and the logit layer, checked before any image is read or scanned ----


@pytest.mark.parametrize("layers, fragments", [
    ("fc,layer3.1,layer4.1", ["must run top -> bottom", "'layer4.1' is listed below 'layer3.1'"]),
    ("layer4.1,layer3.1", ["must start at the logit layer", "(1, 1000)", "'layer4.1'"]),
    ("fc,layer4.1,fc.weight", ["not a module"]),
])
def test_layers_out_of_order_or_not_starting_at_the_logit(images, tmp_path, layers, fragments, monkeypatch):
    from neurflow_graph.datasets import images as images_module

    def no_scan(*_a, **_k):
        raise AssertionError("images were listed before --layers was checked")

    monkeypatch.setattr(images_module, "list_images", no_scan)
    r = _extract("--model", "resnet18", "--layers", layers, "--images", str(images), "--class", "0",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, *fragments)
    assert not (tmp_path / "run").exists()


def test_custom_model_layers_out_of_order_stop_before_the_scan(images, tmp_path, colour_module, monkeypatch):
    """A custom model (INPUT_SIZE 8) with its layers listed bottom-up: refused before the activation
    scan, which must not start."""
    from neurflow_graph.extraction import circuit_builder

    def no_scan(**_k):
        raise AssertionError("the scan started before --layers was checked")

    monkeypatch.setattr(circuit_builder, "scan_activations", no_scan)
    r = _extract("--model", colour_module, "--layers", "features.1,fc", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"), "--no-progress")
    _assert_one_line_error(r, "must run top -> bottom", "'fc' is listed below 'features.1'")


def test_bad_memory_budget_and_preprocess_for_a_custom_model(images, tmp_path, colour_module):
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"), "--memory-budget", "lots")
    _assert_one_line_error(r, "--memory-budget 'lots'", "2GiB")
    r = _extract("--model", colour_module, "--layers", "fc", "--images", str(images), "--class", "red",
                 "--out", str(tmp_path / "run"), "--preprocess", "weights")
    _assert_one_line_error(r, "--preprocess weights", "--preprocess squash")
