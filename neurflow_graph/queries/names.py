"""Checking the names a user gives (model, class, layer, run, group, annotation source).

A wrong name is an error, never an empty answer: every library query's parameters go through
:func:`check_params` before the query runs, and every command that takes a run uid resolves it
with :func:`resolve_run`. An unknown name raises :class:`UnknownNameError` (exit 2) with one line
naming the close matches (``difflib``) or, when there are none, the valid values.

* **model**: a Model uid (``name@weights``) or a model name; a name ingested with several weight
  sets is ambiguous and the error lists their uids. Resolved to the Model uid.
* **class**: a class name of a complete run of that model, or its class index (``class=2``,
  as ``extract --class`` accepts). Resolved to the class name.
* **run**: a full run uid or a unique prefix of one; an ambiguous prefix lists the runs it matches.
  A library query also requires the run to be complete and of the given model and class.
* **layer**: a layer of the selected run (``Run.layers``); **group**: a group id at that layer.
* **source**: an annotation source present in the store (``user``, ``mllm:...``, ``ground_truth``, ...).

Every check is a read-only, parametrised query.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from neurflow_graph.errors import InputError, StoreError

if TYPE_CHECKING:
    from neurflow_graph.store.base import GraphStore

_SHOWN = 12  # valid values listed at most


class UnknownNameError(InputError):
    """A model, class, layer, run, group or source that the store does not hold (or holds ambiguously)."""


class OutdatedRunError(StoreError):
    """A query would read runs ingested before the derived aggregates it reads existed (exit 2):
    its answer would be silently incomplete until they are ingested again with ``--force``."""


def _read(store: GraphStore, text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    from neurflow_graph.queries.library import run_read

    return run_read(store=store, text=text, params=params)


def _listing(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return shown + (f", ... ({len(values) - _SHOWN} more)" if len(values) > _SHOWN else "")


def suggest(text: str, valid: Iterable[Any]) -> str:
    """'did you mean: a, b?' when some valid values are close to ``text``, else 'valid: ...' (or 'there are none')."""
    values = sorted({str(v) for v in valid})
    if not values:
        return "there are none"
    lowered = {v.lower(): v for v in values}
    close = difflib.get_close_matches(str(text).lower(), list(lowered), n=3, cutoff=0.6)
    close += [v.lower() for v in values if str(text).lower() in v.lower() and v.lower() not in close][:3 - len(close)]
    if close:
        return "did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
    return "valid: " + _listing(values)


def resolve_run(store: GraphStore, text: str) -> str:
    """The full uid of the run named by ``text`` (a uid or a unique prefix, any status); UnknownNameError."""
    text = (text or "").strip()
    if not text:
        raise UnknownNameError("give a run uid or a unique prefix of one (see `neurflow-graph runs`)")
    rows = _read(store, "MATCH (r:Run) WHERE r.uid STARTS WITH $p "
                        "RETURN r.uid AS uid, r.model AS model, r.class_name AS class_name, r.status AS status "
                        "ORDER BY uid LIMIT 21", {"p": text})
    exact = [r for r in rows if r["uid"] == text]
    if exact or len(rows) == 1:
        return (exact or rows)[0]["uid"]
    if rows:
        listed = "; ".join(f"{r['uid']} ({r['model']}, {r['class_name']!r}, {r['status']})" for r in rows[:20])
        more = " and more" if len(rows) > 20 else ""
        raise UnknownNameError(f"run prefix {text!r} matches {len(rows)} runs{more}: {listed}; give more digits")
    raise UnknownNameError(f"no run {text!r} in {store.display_url}; list the runs with `neurflow-graph runs`")


def resolve_model(store: GraphStore, text: str) -> str:
    """The Model uid named by ``text`` (a uid or a name held by exactly one weight set); UnknownNameError."""
    rows = _read(store, "MATCH (m:Model) RETURN m.uid AS uid, m.name AS name ORDER BY uid", {})
    for r in rows:
        if r["uid"] == text:
            return text
    named = [r["uid"] for r in rows if r["name"] == text]
    if len(named) == 1:
        return named[0]
    if named:
        raise UnknownNameError(f"model {text!r} names {len(named)} weight sets: {', '.join(named)}; "
                               "pass one of these uids instead")
    valid = sorted({r["name"] for r in rows} | {r["uid"] for r in rows})
    raise UnknownNameError(f"unknown model {text!r}: {suggest(text, valid)}")


def _runs_of(store: GraphStore, model_uid: str) -> list[dict[str, Any]]:
    return _read(store, "MATCH (r:Run)-[:OF_MODEL]->(m:Model {uid: $model}) WHERE r.status = 'complete' "
                        "RETURN r.uid AS uid, r.class_name AS class_name, r.class_index AS class_index, "
                        "r.latest AS latest, r.layers AS layers", {"model": model_uid})


def resolve_class(store: GraphStore, model_uid: str, text: str, *, runs: list[dict[str, Any]] | None = None) -> str:
    """The class name of a complete run of ``model_uid`` named by ``text`` (a name or a class index)."""
    runs = _runs_of(store, model_uid) if runs is None else runs
    names = {r["class_name"] for r in runs}
    if text in names:
        return text
    if text.strip().lstrip("+").isdigit():
        by_index = {r["class_name"] for r in runs if r["class_index"] == int(text)}
        if len(by_index) == 1:
            return by_index.pop()
    if not runs:
        raise UnknownNameError(f"model {model_uid} has no complete run; ingest one with `neurflow-graph ingest`")
    raise UnknownNameError(f"unknown class {text!r} for model {model_uid}: {suggest(text, names)}")


def _resolve_any_class(store: GraphStore, text: str) -> str:
    rows = _read(store, "MATCH (r:Run) WHERE r.status = 'complete' RETURN DISTINCT r.class_name AS name", {})
    names = {r["name"] for r in rows}
    if text in names:
        return text
    raise UnknownNameError(f"no complete run explains class {text!r}: {suggest(text, names)}")


def _check_run(store: GraphStore, text: str, *, model_uid: str | None, class_name: str | None) -> str:
    uid = resolve_run(store, text)
    row = _read(store, "MATCH (r:Run {uid: $uid}) RETURN r.status AS status, r.model AS model, "
                       "r.class_name AS class_name", {"uid": uid})[0]
    if row["status"] != "complete":
        raise UnknownNameError(f"run {uid} is not complete (status {row['status']!r}): queries read complete runs "
                               "only; rerun its ingest to finish it")
    if model_uid is not None and row["model"] != model_uid:
        raise UnknownNameError(f"run {uid} is of model {row['model']}, not {model_uid}")
    if class_name is not None and row["class_name"] != class_name:
        raise UnknownNameError(f"run {uid} explains class {row['class_name']!r}, not {class_name!r}")
    return uid


def _selected(runs: list[dict[str, Any]], class_name: str, run_uid: str | None) -> dict[str, Any] | None:
    for r in runs:
        if r["class_name"] == class_name and (r["uid"] == run_uid if run_uid else r["latest"]):
            return r
    return None


def check_source(store: GraphStore, text: str) -> str:
    rows = _read(store, "MATCH (a:Annotation) RETURN DISTINCT a.source AS source", {})
    sources = {r["source"] for r in rows}
    if text in sources:
        return text
    raise UnknownNameError(f"no annotation has source {text!r}: {suggest(text, sources)}")


def _triples(params: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(model param, class param, run param) of a query's parameters."""
    if "model_a" in params:
        return [("model_a", "class", "run_a"), ("model_b", "class", "run_b")]
    if "class_a" in params:
        return [("model", "class_a", "run_a"), ("model", "class_b", "run_b")]
    if "model" in params:
        return [("model", "class" if "class" in params else None, "run" if "run" in params else None)]
    return []


def check_params(store: GraphStore, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (bound by a library query's header) with every name checked and resolved.

    Models become Model uids, classes class names, runs full uids; unknown layers, groups or
    sources raise :class:`UnknownNameError`. Parameters this module does not know pass unchanged.
    """
    out = dict(params)
    first_run: dict[str, Any] | None = None
    model_layers: list[str] | None = None
    for model_key, class_key, run_key in _triples(params):
        if out.get(model_key) is None:
            if class_key and params.get(class_key) is not None:  # a class of any model
                out[class_key] = _resolve_any_class(store, str(params[class_key]))
            continue
        out[model_key] = resolve_model(store, str(params[model_key]))
        muid = out[model_key]
        if class_key is None or out.get(class_key) is None:
            if run_key and params.get(run_key) is not None:
                out[run_key] = _check_run(store, str(params[run_key]), model_uid=muid, class_name=None)
            if model_layers is None:
                model_layers = [r["name"] for r in _read(store, "MATCH (:Model {uid: $m})-[:HAS_LAYER]->(l:Layer) "
                                                                "RETURN l.name AS name ORDER BY l.depth", {"m": muid})]
            continue
        runs = _runs_of(store, muid)
        out[class_key] = resolve_class(store, muid, str(params[class_key]), runs=runs)
        if run_key and params.get(run_key) is not None:
            out[run_key] = _check_run(store, str(params[run_key]), model_uid=muid, class_name=out[class_key])
        selected = _selected(runs, out[class_key], out.get(run_key) if run_key else None)
        if first_run is None:
            first_run = selected
    if "model" not in params and "model_a" not in params and params.get("run") is not None:
        out["run"] = _check_run(store, str(params["run"]), model_uid=None, class_name=None)
    if params.get("layer") is not None and first_run is None and model_layers is not None:
        if params["layer"] not in model_layers:
            raise UnknownNameError(f"model {out['model']} has no layer {params['layer']!r}: "
                                   f"{suggest(params['layer'], model_layers)}")
    if params.get("layer") is not None and first_run is not None:
        layers = list(first_run.get("layers") or [])
        if params["layer"] not in layers:
            raise UnknownNameError(f"run {first_run['uid']} has no layer {params['layer']!r}: "
                                   f"{suggest(params['layer'], layers)}")
        if params.get("group") is not None:
            gids = [r["gid"] for r in _read(store, "MATCH (g:NeuronGroup {run: $run, layer: $layer}) "
                                                   "RETURN g.gid AS gid ORDER BY gid",
                                            {"run": first_run["uid"], "layer": params["layer"]})]
            if params["group"] not in gids:
                raise UnknownNameError(f"layer {params['layer']} of run {first_run['uid']} has no group "
                                       f"{params['group']}: groups {_listing(gids) or 'none'}")
    if params.get("source") is not None:
        out["source"] = check_source(store, str(params["source"]))
    return out


def check_paths_limit(store: GraphStore, params: Mapping[str, Any]) -> None:
    """concept_paths_to_logit's ``limit`` against the paths stored per group of the selected run."""
    run = params.get("run")
    if run is None:
        rows = _read(store, "MATCH (r:Run)-[:OF_MODEL]->(m:Model {uid: $model}) WHERE r.status = 'complete' "
                            "AND r.latest = true AND r.class_name = $class "
                            "RETURN r.uid AS uid, r.paths_per_group AS n", {"model": params["model"], "class": params["class"]})
    else:
        rows = _read(store, "MATCH (r:Run {uid: $run}) RETURN r.uid AS uid, r.paths_per_group AS n", {"run": run})
    if not rows:
        return
    uid, n = rows[0]["uid"], rows[0]["n"]
    if n is None:
        raise UnknownNameError(f"run {uid} was ingested before best paths were stored; "
                               "ingest its run directory again with --force")
    if params.get("limit") is not None and params["limit"] > n:
        raise UnknownNameError(f"limit {params['limit']} is more than the {n} best paths stored per group of run "
                               f"{uid}; ask for at most {n}")


def latest_run(store: GraphStore, model: str, class_name: str) -> str:
    """The uid of the latest complete run of (``model``, ``class_name``), both checked (a class may be its index)."""
    muid = resolve_model(store, model)
    runs = _runs_of(store, muid)
    name = resolve_class(store, muid, class_name, runs=runs)
    return next(r["uid"] for r in runs if r["class_name"] == name and r["latest"])


# Library queries that read the derived aggregates written at ingest (docs/graph-model.md "Derived
# aggregates"), by the runs they read: every latest run of the model (of every model when it is null)
# and the named run, or only the runs their (model, class, run) parameters select.
AGGREGATES_MODEL_WIDE = frozenset({"hub_neurons", "polysemantic_neurons", "dashboard_summary", "classes_sharing_group"})
AGGREGATES_SELECTED = frozenset({"class_circuit", "shared_groups", "shared_neurons_by_layer", "compare_models"})
_OUTDATED = ("MATCH (r:Run) WHERE r.status = 'complete' AND (r.aggregates IS NULL OR r.aggregates < $version) "
             "RETURN r.uid AS uid, r.model AS model, r.class_name AS class_name, r.latest AS latest, "
             "r.run_dir AS run_dir ORDER BY uid")


def check_aggregates(store: GraphStore, name: str, params: Mapping[str, Any]) -> None:
    """OutdatedRunError when library query ``name`` (``params`` checked by :func:`check_params`) would
    read a complete run without this version's derived aggregates (``Run.aggregates``, written at
    ingest). One read of the Run nodes lacking it: none in a store written by this version."""
    from neurflow_graph.store.ingest import AGGREGATES_VERSION

    if name not in AGGREGATES_MODEL_WIDE and name not in AGGREGATES_SELECTED:
        return
    old = _read(store, _OUTDATED, {"version": AGGREGATES_VERSION})
    if not old:
        return
    named = {params[k] for k in ("run", "run_a", "run_b") if params.get(k) is not None}
    read = []
    for r in old:
        if r["uid"] in named:
            read.append(r)
        elif not r["latest"]:
            continue
        elif name in AGGREGATES_MODEL_WIDE:
            if params.get("model") is None or r["model"] == params["model"]:
                read.append(r)
        elif any(r["model"] == params.get(m) and r["class_name"] == params.get(c) and params.get(k) is None
                 for m, c, k in _triples(params) if c is not None):
            read.append(r)
    if not read:
        return
    one = len(read) == 1
    shown = ", ".join(f"{r['uid']} ({r['model']}, {r['class_name']!r})" for r in read[:3])
    shown += f" and {len(read) - 3} more" if len(read) > 3 else ""
    dirs = [str(r["run_dir"]) for r in read if r["run_dir"]]
    where = " ".join(dirs[:3]) + (" ..." if len(dirs) > 3 else "") if len(dirs) == len(read) else "RUN_DIR..."
    raise OutdatedRunError(
        f"{'run' if one else 'runs'} {shown} in {store.display_url} {'was' if one else 'were'} ingested by an "
        f"older neurflow-graph, without the derived aggregates that {name} reads (its answer would be "
        f"incomplete): ingest {'it' if one else 'them'} again into that store with "
        f"`neurflow-graph ingest --force {where}`")
