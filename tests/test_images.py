"""Image folders (ImageFolder / flat), skipped files, D_c selection by prediction, class resolution."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from colour_support import RGB, colour_module_source, install_module
from neurflow_graph.datasets import images as images_mod
from neurflow_graph.datasets.images import (
    list_images, load_rgb, predict_classes, resolve_class, select_class_images,
)
from neurflow_graph.errors import ImageError, InputError
from neurflow_graph.models.registry import load_model

# A model whose prediction is known without running it: the logits are the mean R, G, B values,
# so a solid image is classified as its dominant colour. A fourth class, never predicted, repeats
# 'green' (ambiguous names); 'Red' is capitalised (case-insensitive resolution). tests/colour_support.py.
COLOUR_MODULE = colour_module_source(class_names=("Red", "green", "blue", "green"), extra_logit_rows=1)


@pytest.fixture
def colour_model(tmp_path, monkeypatch):
    install_module(tmp_path, "nf_colour_model", COLOUR_MODULE, monkeypatch)
    yield load_model(name="nf_colour_model:build", layers=["fc", "features.1"], device="cpu")
    sys.modules.pop("nf_colour_model", None)


def _save(path: Path, colour: str, size: tuple[int, int] = (12, 10), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, RGB[colour]).save(path, format=fmt)
    return path


def test_imagefolder_tree_with_skipped_files(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "zebra" / "b.png", "red")
    _save(root / "zebra" / "nested" / "a.jpg", "blue", fmt="JPEG")
    _save(root / "apple" / "c.png", "green")
    _save(root / "loose.png", "green")
    (root / "apple" / "notes.txt").write_text("not a picture")
    good = (root / "apple" / "c.png").read_bytes()
    (root / "apple" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "apple" / ".DS_Store").write_bytes(b"\0\1")
    records, skipped = list_images(root)
    rel = [r.path.relative_to(root.resolve()).as_posix() for r in records]
    assert rel == ["apple/c.png", "loose.png", "zebra/b.png", "zebra/nested/a.jpg"]
    assert [r.label for r in records] == ["apple", None, "zebra", "zebra"]
    assert all(r.sha256 == hashlib.sha256(r.path.read_bytes()).hexdigest() for r in records)
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"notes.txt", "truncated.png"}
    assert reasons["notes.txt"] == "not an image" and reasons["truncated.png"].startswith("corrupt image")


def test_flat_folder_and_unreadable_file(tmp_path, monkeypatch):
    _save(tmp_path / "b.png", "red")
    _save(tmp_path / "a.png", "blue")
    real = images_mod._read_bytes

    def read(path):
        if path.name == "b.png":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(images_mod, "_read_bytes", read)
    records, skipped = list_images(tmp_path)
    assert [r.path.name for r in records] == ["a.png"] and records[0].label is None
    assert [(p.name, why) for p, why in skipped] == [("b.png", "unreadable (Permission denied)")]


def test_missing_and_useless_folders(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ImageError, match=r"no readable image .*1 file\(s\) skipped: x.txt: not an image"):
        list_images(tmp_path)
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "x.txt")


def test_load_rgb_converts_and_names_bad_files(tmp_path):
    Image.new("L", (7, 5), 100).save(tmp_path / "g.png")
    im = load_rgb(tmp_path / "g.png")
    assert im.mode == "RGB" and im.size == (7, 5) and im.getpixel((0, 0)) == (100, 100, 100)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ImageError, match="bad.png"):
        load_rgb(tmp_path / "bad.png")


@pytest.mark.parametrize("batch_size", [2, 64])
def test_select_class_images_is_d_c_by_prediction(tmp_path, colour_model, batch_size):
    # Folder labels deliberately disagree with the colours: D_c follows the model, not the folder.
    colours = ["red", "green", "red", "blue", "red", "green"]
    for i, c in enumerate(colours):
        _save(tmp_path / "imgs" / "anything" / f"{i}.png", c, size=(10 + i, 9))
    records, _ = list_images(tmp_path / "imgs")
    assert predict_classes(model=colour_model, images=records, batch_size=batch_size) == \
        [{"red": 0, "green": 1, "blue": 2}[c] for c in colours]
    reds = select_class_images(model=colour_model, images=records, class_index=0, batch_size=batch_size)
    assert [r.path.name for r in reds] == ["0.png", "2.png", "4.png"]


def test_images_at_their_own_size(tmp_path, monkeypatch):
    # No INPUT_SIZE: images keep their size, so batches mix shapes. Logits = mean R, G, B.
    (tmp_path / "nf_mean_model.py").write_text(textwrap.dedent('''
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.out = torch.nn.Identity()

            def forward(self, x):
                return self.out(x.mean(dim=(2, 3)))

        def make():
            return M()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nf_mean_model", raising=False)
    model = load_model(name="nf_mean_model:make", layers=["out"], device="cpu")
    for i, (c, size) in enumerate([("blue", (5, 4)), ("green", (9, 3)), ("blue", (5, 4))]):
        _save(tmp_path / "imgs" / f"{i}.png", c, size=size)
    records, _ = list_images(tmp_path / "imgs")
    assert predict_classes(model=model, images=records, batch_size=8) == [2, 1, 2]
    sys.modules.pop("nf_mean_model", None)


def test_no_image_of_the_class_names_what_was_predicted(tmp_path, colour_model):
    for i in range(3):
        _save(tmp_path / f"{i}.png", "red")
    _save(tmp_path / "g.png", "green")
    records, _ = list_images(tmp_path)
    with pytest.raises(ImageError) as e:
        select_class_images(model=colour_model, images=records, class_index=2)
    msg = str(e.value)
    assert "'blue' (2)" in msg and "'Red' (0): 3" in msg and "'green' (1): 1" in msg


def test_resolve_class(colour_model):
    assert resolve_class(model=colour_model, text="2") == 2
    assert resolve_class(model=colour_model, text="red") == 0
    assert resolve_class(model=colour_model, text=" BLUE ") == 2
    with pytest.raises(InputError, match="ambiguous.*1, 3"):
        resolve_class(model=colour_model, text="green")
    with pytest.raises(InputError, match="unknown class 'bleu'.*close names: 'blue'"):
        resolve_class(model=colour_model, text="bleu")
    with pytest.raises(InputError, match="out of range"):
        resolve_class(model=colour_model, text="4")
