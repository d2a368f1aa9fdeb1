"""The neuron-group mosaics of a run directory, as the images sent to the model.

Mosaics are built by ``neurflow-graph exemplars RUN_DIR`` (:mod:`neurflow_graph.viz.exemplars`,
``RUN_DIR/exemplars/manifest.json``). The PNG bytes are sent as they are on disk, so the image
hash stored with a label is the manifest's ``sha256`` of the mosaic file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from neurflow_graph.errors import RunFormatError
from neurflow_graph.labels.requests import Image


@dataclass(frozen=True)
class GroupMosaic:
    layer: str
    gid: int
    path: Path
    sha256: str
    patches: tuple[int, ...]  # the circuit's patch ids shown in the mosaic

    def image(self) -> Image:
        """The mosaic's bytes, checked against the manifest's sha256."""
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise RunFormatError(f"cannot read the mosaic {self.path} ({e.strerror}); rebuild the exemplars with "
                                 f"`neurflow-graph exemplars {self.path.parent.parent}`") from e
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise RunFormatError(f"{self.path} does not match its sha256 in the manifest; rebuild the exemplars "
                                 f"with `neurflow-graph exemplars {self.path.parent.parent}`")
        return Image(png=data, sha256=self.sha256)


def neuron_group_mosaics(run_dir: str | Path) -> dict[tuple[str, int], GroupMosaic]:
    """(layer, gid) -> its mosaic, for every neuron group the manifest lists."""
    from neurflow_graph.viz.exemplars import EXEMPLAR_DIR, read_manifest

    run_dir = Path(run_dir)
    doc = read_manifest(run_dir)
    out: dict[tuple[str, int], GroupMosaic] = {}
    for g in doc.get("groups", []):
        if g.get("kind") != "neuron_group":
            continue
        try:
            key = (str(g["layer"]), int(g["gid"]))
            out[key] = GroupMosaic(layer=key[0], gid=key[1], path=run_dir / EXEMPLAR_DIR / str(g["file"]),
                                   sha256=str(g["sha256"]), patches=tuple(int(p) for p in g.get("patches", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise RunFormatError(f"{run_dir / EXEMPLAR_DIR} has a malformed manifest entry ({e}); rebuild it with "
                                 f"`neurflow-graph exemplars {run_dir}`") from e
    return out
