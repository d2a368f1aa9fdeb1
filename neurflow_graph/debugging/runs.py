"""Find a run's circuit and directory from what the user typed, and load its model.

``--run`` is a run directory (holding ``circuit.json``) or a run uid / unique prefix. A uid is
checked against the store (``queries.names.resolve_run``); its directory is the one ingest recorded
(``Run.run_dir``) when its circuit still has that uid, else it is found among the runs under
``runs_dirs`` (default: ``<embedded store path>/runs``) by content identity (``identity.run_uid``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurflow_graph.circuit import CIRCUIT_FILE, Circuit, load_circuit
from neurflow_graph.errors import InputError, ModelError, RunFormatError


@dataclass
class LocatedRun:
    circuit: Circuit
    run_dir: Path
    uid: str


def _run_uid(circuit: Circuit) -> str:
    from neurflow_graph.identity import run_uid

    return run_uid(circuit)


def default_runs_dirs(store_url: str | None) -> list[Path]:
    """Where run directories are looked for: the embedded store's ``runs/`` and ``./neurflow-data/runs``."""
    out = []
    if store_url and store_url.startswith("embedded:"):
        out.append(Path(store_url.split(":", 1)[1] or "./neurflow-data") / "runs")
    out.append(Path("neurflow-data") / "runs")
    return list(dict.fromkeys(out))


def locate_run(*, run: str, store: Any | None, runs_dirs: Sequence[str | Path]) -> LocatedRun:
    """The circuit, directory and uid of ``run`` (a directory, or a uid/prefix known to ``store``)."""
    text = (run or "").strip()
    if not text:
        raise InputError("give --run: a run uid (see `neurflow-graph runs`) or a run directory")
    path = Path(text).expanduser()
    if path.is_dir() or path.name == CIRCUIT_FILE:
        run_dir = path if path.is_dir() else path.parent
        circuit = load_circuit(run_dir)
        return LocatedRun(circuit=circuit, run_dir=run_dir, uid=_run_uid(circuit))
    if store is None:
        raise InputError(f"--run {text!r} is not a run directory and no store is open to look the uid up in")
    from neurflow_graph.queries.names import resolve_run

    uid = resolve_run(store, text)
    # ingest records where the run directory was (Run.run_dir); else search the runs folders
    rows = store.read("MATCH (r:Run {uid: $uid}) RETURN r.run_dir AS run_dir", {"uid": uid})
    recorded = rows[0].get("run_dir") if rows else None
    if recorded and (Path(recorded) / CIRCUIT_FILE).is_file():
        circuit = load_circuit(recorded)
        if _run_uid(circuit) == uid:
            return LocatedRun(circuit=circuit, run_dir=Path(recorded), uid=uid)
    searched = []
    for root in runs_dirs:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        searched.append(str(root))
        for f in sorted(root.rglob(CIRCUIT_FILE)):
            try:
                circuit = load_circuit(f.parent)
            except RunFormatError:
                continue
            if _run_uid(circuit) == uid:
                return LocatedRun(circuit=circuit, run_dir=f.parent, uid=uid)
    where = ", ".join(searched) or "no existing folder"
    raise RunFormatError(f"run {uid} is in the store but its run directory was not found under {where}; "
                         "pass the directory itself as --run, or --runs-dir DIR")


def load_run_model(*, circuit: Circuit, model: str | None = None, weights: str | None = None,
                   device: str | None = None) -> Any:
    """The run's model (``model``/``weights`` default to the run's registry name and its default
    weights); ModelError when the weights are not the ones the run was extracted with."""
    from neurflow_graph.models.registry import load_model

    loaded = load_model(name=model or circuit.model.name, weights=weights, layers=circuit.model.layers,
                        device=device)
    want = circuit.model.weights_sha256
    if want is not None and loaded.weights_sha256 != want:
        raise ModelError(f"the model's weights ({str(loaded.weights_sha256)[:16]}) are not those the run was extracted "
                         f"with ({want[:16]}); pass --model/--weights of that run, or re-extract it")
    return loaded


def group_concepts(*, located: LocatedRun) -> dict[tuple[str, int], str | None]:
    """``{(layer, gid): concept}`` of the run's neuron groups: the run directory's ``concept``
    annotations (default source preference), else the ground truth of the concept world the run's
    images come from (a ``world.json`` beside their class folders), else nothing."""
    from neurflow_graph.annotations import preferred, read_run_annotations
    from neurflow_graph.identity import neuron_group_uid

    circuit = located.circuit
    chosen = preferred(read_run_annotations(located.run_dir), key="concept")
    out: dict[tuple[str, int], str | None] = {}
    for g in circuit.neuron_groups:
        a = chosen.get(neuron_group_uid(located.uid, g.layer, g.id))
        out[(g.layer, g.id)] = str(a.value) if a is not None else getattr(g, "concept", None)
    if any(v is not None for v in out.values()) or not circuit.images:
        return out
    truth = world_of(Path(circuit.images[0].path))
    if truth is None:
        return out
    from neurflow_graph.analysis.ground_truth import score_groups

    try:
        return {(s.layer, s.group): s.concept for s in score_groups(circuit=circuit, truth=truth)}
    except InputError:
        return out


def world_of(image: Path) -> Any | None:
    """The concept-world ground truth an exported image belongs to (``world.json`` one or two folders
    up), or None."""
    from neurflow_graph.datasets.concept_world import WORLD_FILE, load_world_ground_truth

    for root in (image.parent, image.parent.parent):
        if (root / WORLD_FILE).is_file():
            return load_world_ground_truth(root)
    return None


def open_run(*, run: str, store_url: str | None, database: str | None = None, username: str | None = None,
             password: str | None = None, runs_dirs: Sequence[str | Path] = ()) -> tuple[LocatedRun, Any | None]:
    """Locate ``run`` and open the store (never creating one) when it exists; the caller closes it.
    A run directory needs no store; a uid does."""
    from neurflow_graph.errors import StoreError
    from neurflow_graph.store.url import open_store

    store = None
    if store_url:
        try:
            store = open_store(store_url, database=database, username=username, password=password, create=False)
        except StoreError:
            if not Path(run).expanduser().is_dir():
                raise
    try:
        located = locate_run(run=run, store=store, runs_dirs=list(runs_dirs) or default_runs_dirs(store_url))
    except BaseException:
        if store is not None:
            store.close()
        raise
    return located, store


def record_annotations(*, located: LocatedRun, store: Any | None, annotations: Sequence[Any]) -> tuple[Path, int]:
    """Append ``annotations`` to the run directory's file and, when the run is in ``store``, write them
    there too (targets the store does not hold are left out). Returns (file, written to store)."""
    from neurflow_graph.annotations import append_run_annotations

    path = append_run_annotations(located.run_dir, annotations)
    written = 0
    if store is not None:
        from neurflow_graph.store.annotations import write_annotations

        written = write_annotations(store=store, annotations=list(annotations), skip_missing=True)
    return path, written
