"""A model whose predictions are known without running it, as the source of a module file.

Its logits are the mean R, G, B values of the image (a 1x1 conv, ReLU, average pool and a linear
layer set to identities), so a solid image is classified as its dominant colour. Tests write the
source into a temporary package and load it as ``MODULE:build`` the way a user's own model is
loaded."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

RGB = {"red": (230, 20, 10), "green": (15, 200, 30), "blue": (5, 25, 240)}


def colour_module_source(*, class_names: tuple[str, ...] | None = ("red", "green", "blue"), input_size: int | None = 8,
                         mean_std: bool = False, conv_offset: float = 0.0, extra_logit_rows: int = 0) -> str:
    """The module's source. ``input_size`` None: no INPUT_SIZE (images of one batch must share a
    size); ``class_names`` None: no CLASS_NAMES (classes are named class_0 ...); ``mean_std``: MEAN/STD of zero and one; ``conv_offset``: added to the conv's identity
    (makes every channel respond to every colour); ``extra_logit_rows``: classes after the first
    three whose logit is minus the sum of R, G, B (never predicted)."""
    n_out = 3 + extra_logit_rows
    assert class_names is None or len(class_names) == n_out, (class_names, n_out)
    header = [] if class_names is None else [f"CLASS_NAMES = {list(class_names)!r}"]
    if input_size is not None:
        header.insert(0, f"INPUT_SIZE = {input_size}")
    if mean_std:
        header += ["MEAN = (0.0, 0.0, 0.0)", "STD = (1.0, 1.0, 1.0)"]
    fc = "torch.eye(3)" if not extra_logit_rows else \
        f"torch.cat([torch.eye(3), torch.full(({extra_logit_rows}, 3), -1.0)])"
    return textwrap.dedent('''
        import torch
        from torch import nn

        {header}

        class Colour(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.fc = nn.Linear(3, {n_out})
                with torch.no_grad():
                    self.features[0].weight.copy_(torch.eye(3)[:, :, None, None] + {offset!r})
                    self.features[0].bias.zero_()
                    self.fc.weight.copy_({fc})
                    self.fc.bias.zero_()

            def forward(self, x):
                return self.fc(torch.flatten(self.pool(self.features(x)), 1))

        def build():
            return Colour()
    ''').format(header="\n".join(header), n_out=n_out, offset=conv_offset, fc=fc)


def install_module(directory: Path, name: str, source: str, monkeypatch) -> Path:
    """Write ``source`` as ``directory/name.py``, put ``directory`` on sys.path (undone by
    ``monkeypatch``) and forget any module of that name already imported; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source)
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return path
