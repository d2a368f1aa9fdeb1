"""Run directory: per-layer checkpoints so an interrupted extraction resumes where it stopped.

Layout (all written atomically, temp file + rename)::

    RUN_DIR/checkpoints/manifest.json   {"format", "fingerprint"}: what the checkpoints belong to
    RUN_DIR/checkpoints/scan.npz        phi of every analysed layer for every patch
    RUN_DIR/checkpoints/layer-NN.json   results of layer NN (concepts, semantic groups, core neurons, IG scores)
    RUN_DIR/circuit.json                written last (Circuit.save)

The fingerprint hashes everything that determines the result: model name, layers, weights (or a
hash of the random-init state dict), input size and normalisation, class, images (sha256, in
order) and every parameter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurflow_graph.fileio import atomic_write
from neurflow_graph.errors import ExtractionError, RunDirError, os_error

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1
CIRCUIT_NAME = "circuit.json"  # = neurflow_graph.circuit.CIRCUIT_FILE (not imported: rundir stays light)
# What a run directory holds besides circuit.json and checkpoints/ (annotations, exemplar mosaics).
RUN_DIR_ENTRIES = frozenset({CIRCUIT_NAME, CHECKPOINT_DIR, "annotations.jsonl", "exemplars"})
CIRCUIT_ARRAYS_PREFIX = "circuit-"  # circuit.json's array files, circuit-<sha>.npz (circuit.ARRAYS_PREFIX)


def fingerprint(*, model_name: str, layers: Sequence[str], weights: str, size: tuple[int, int],
                mean: Any, std: Any, class_index: int, image_hashes: Sequence[str], params: dict[str, Any]) -> str:
    """sha256 (hex) of the inputs and parameters of one extraction."""
    payload = {"format": CHECKPOINT_FORMAT, "model": model_name, "layers": list(layers), "weights": weights,
               "size": list(size), "mean": list(mean) if mean is not None else None,
               "std": list(std) if std is not None else None, "class": int(class_index),
               "images": list(image_hashes), "params": params}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Checkpoints:
    """Checkpoints of one run; inert when ``run_dir`` is None.

    ``resume=False`` clears earlier checkpoints; ``resume=True`` keeps them when their fingerprint
    matches and raises ExtractionError when it does not."""

    def __init__(self, *, run_dir: Path | None, fingerprint: str, resume: bool) -> None:
        self.dir = Path(run_dir) / CHECKPOINT_DIR if run_dir is not None else None
        self.fingerprint = fingerprint
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExtractionError(f"cannot create the run directory {self.dir.parent}: {e.strerror or e}") from e
        manifest = self.dir / "manifest.json"
        if resume and manifest.exists():
            try:
                saved = json.loads(manifest.read_text())
            except (OSError, ValueError) as e:
                raise ExtractionError(f"{manifest} is unreadable ({e}); delete {self.dir} or start without "
                                      "resume") from e
            if saved.get("fingerprint") != fingerprint or saved.get("format") != CHECKPOINT_FORMAT:
                raise ExtractionError(f"{run_dir} holds checkpoints of a different extraction (model, images, class "
                                      "or parameters changed); resume with the same inputs, use another run "
                                      "directory, or start over without resume")
        else:
            self._clear()
        atomic_write(manifest, lambda f: json.dump({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint}, f), mode="w")

    def _clear(self) -> None:
        assert self.dir is not None
        for p in self.dir.iterdir():
            ours = p.name in ("manifest.json", "scan.npz") or (p.name.startswith("layer-") and p.suffix == ".json")
            if ours:
                p.unlink()

    # ---------------------------------------------------------------- scan

    def load_scan(self, layers: Sequence[str]) -> dict[str, np.ndarray] | None:
        if self.dir is None or not (self.dir / "scan.npz").exists():
            return None
        with np.load(self.dir / "scan.npz") as data:
            if list(data["layers"]) != list(layers):
                return None
            return {name: np.array(data[f"phi_{i}"]) for i, name in enumerate(layers)}

    def load_scan_record(self) -> dict[str, int]:
        """How the checkpointed scan ran (``scan_folded_pairs``, ``scan_channels_last``); {} if unknown."""
        if self.dir is None or not (self.dir / "scan.npz").exists():
            return {}
        with np.load(self.dir / "scan.npz") as data:
            return {k[len("record_"):]: int(data[k]) for k in data.files if k.startswith("record_")}

    def save_scan(self, phi: dict[str, np.ndarray], layers: Sequence[str],
                  record: dict[str, int] | None = None) -> None:
        if self.dir is None:
            return
        arrays = {f"phi_{i}": phi[name] for i, name in enumerate(layers)}
        arrays.update({f"record_{k}": np.int64(v) for k, v in (record or {}).items()})
        atomic_write(self.dir / "scan.npz", lambda f: np.savez(f, layers=np.asarray(list(layers)), **arrays))

    # ---------------------------------------------------------------- layers

    def load_layer(self, index: int) -> dict[str, Any] | None:
        if self.dir is None:
            return None
        path = self.dir / f"layer-{index:02d}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a torn file from a crash: recompute the layer

    def save_layer(self, index: int, payload: dict[str, Any]) -> None:
        if self.dir is None:
            return
        atomic_write(self.dir / f"layer-{index:02d}.json", lambda f: json.dump(payload, f), mode="w")


# ---------------------------------------------------------------------------- run directory state


@dataclass(frozen=True)
class RunDirState:
    """What an ``--out`` folder holds.

    ``kind``: ``"new"`` (absent or empty), ``"finished"`` (circuit.json newer than any checkpoints),
    ``"unfinished"`` (checkpoints of an extraction that has not written its circuit yet), or
    ``"foreign"`` (non-empty, but no run: ``foreign`` lists a few of its entries)."""

    path: Path
    kind: str
    has_checkpoints: bool = False
    foreign: tuple[str, ...] = ()


def run_dir_state(run_dir: str | Path) -> RunDirState:
    """Inspect ``run_dir`` without changing it (hidden files are ignored)."""
    d = Path(run_dir)
    if not d.exists():
        return RunDirState(d, "new")
    if not d.is_dir():
        return RunDirState(d, "foreign", foreign=(d.name,))
    try:
        entries = sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise os_error(e, action="cannot read the run directory", path=d) from e
    manifest = d / CHECKPOINT_DIR / "manifest.json"
    circuit = d / CIRCUIT_NAME
    has_ckpt = manifest.is_file()
    if not entries:
        return RunDirState(d, "new")
    if circuit.is_file() and (not has_ckpt or circuit.stat().st_mtime_ns >= manifest.stat().st_mtime_ns):
        return RunDirState(d, "finished", has_checkpoints=has_ckpt)
    if has_ckpt:
        return RunDirState(d, "unfinished", has_checkpoints=True)
    others = tuple(e for e in entries if e not in RUN_DIR_ENTRIES
                   and not (e.startswith(CIRCUIT_ARRAYS_PREFIX) and e.endswith(".npz")))
    if not others:
        return RunDirState(d, "new")
    return RunDirState(d, "foreign", foreign=others[:3] + (("...",) if len(others) > 3 else ()))


def check_out_dir(run_dir: str | Path, *, resume: bool, restart: bool, force: bool) -> RunDirState:
    """Refuse to overwrite a finished run, to start over an unfinished one, or to write into an
    unrelated non-empty folder, unless the flag that allows it is given (RunDirError, one line).

    ``resume`` continues an unfinished run (or re-assembles a finished one from its matching
    checkpoints); ``restart`` throws an unfinished run's checkpoints away; ``force`` replaces
    whatever the folder holds (a finished or unfinished run) or writes into a non-empty folder.
    Returns the state found."""
    st = run_dir_state(run_dir)
    d = st.path
    if st.kind == "foreign" and not force:
        if not d.is_dir():
            raise RunDirError(f"--out {d} is a file, not a folder; give a folder for the run")
        raise RunDirError(f"--out {d} is a non-empty folder that holds no run ({', '.join(st.foreign)}); "
                          "give a new or empty folder, or --force to write the run into it")
    if st.kind == "finished" and not force and not (resume and st.has_checkpoints):
        raise RunDirError(f"--out {d} already holds a finished run ({d / CIRCUIT_NAME}); choose another --out, "
                          "or --force to replace it")
    if st.kind == "unfinished" and not (resume or restart or force):
        raise RunDirError(f"--out {d} holds an unfinished extraction; continue it with --resume, "
                          "or throw its checkpoints away with --restart")
    return st


def resume_point(run_dir: str | Path, layers: Sequence[str]) -> str:
    """Where a resumed run in ``run_dir`` would continue: ``"the activation scan"`` or ``"layer NAME"``."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    if not (ckpt / "scan.npz").is_file():
        return "the activation scan"
    done = 0
    while done < len(layers) and (ckpt / f"layer-{done:02d}.json").is_file():
        done += 1
    if done >= len(layers):
        return "the circuit assembly (every layer is done)"
    return f"layer {layers[done]}"
