"""``report``: the dashboard's pages as a static site that opens from disk (no server).

The site is the same ``index.html``/``app.js``/``app.css`` that ``serve`` sends, plus ``data.js``
holding every answer the pages can ask for (``window.NEURFLOW_DATA``: library query answers keyed by
name and parameters, and circuit layouts) and ``mosaics/<sha256>.png`` copied from the run
directories. Answers are computed by the same :class:`~neurflow_graph.web.api.DashboardApi`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from neurflow_graph.errors import InputError
from neurflow_graph.fileio import atomic_write
from neurflow_graph.web.api import ApiError, DashboardApi

MAX_CLASSES_PAIRED = 12  # two-class pages are written for every ordered pair of the first N classes per model
PAGE_LIMIT = 50          # the pages' `limit` for shared_groups / compare_models
SIDE_LIMIT = 10          # hub_neurons / polysemantic_neurons


def param_key(name: str, params: dict[str, Any]) -> str:
    """The key app.js's ``paramKey`` builds: ``name?k=v&...`` (sorted, empty values left out)."""
    items = sorted((k, v) for k, v in params.items() if v is not None and v != "")
    return name + "?" + "&".join(f"{k}={v}" for k, v in items)


def collect(api: DashboardApi) -> tuple[dict[str, Any], dict[str, str]]:
    """``(data, mosaics)``: everything the pages ask for, and ``{sha256: path}`` of the mosaics they show."""
    data: dict[str, Any] = {"queries": {}, "layouts": {}}

    def put(name: str, params: dict[str, Any]) -> dict[str, Any]:
        key = param_key(name, params)
        if key not in data["queries"]:
            data["queries"][key] = api.query(name, {k: str(v) for k, v in params.items()})
        return data["queries"][key]

    summary = put("dashboard_summary", {})["rows"]
    runs: dict[str, dict[str, Any]] = {}
    for r in summary:
        runs.setdefault(r["run"], r)
    for run in runs:
        for g in put("circuit_groups", {"run": run})["rows"]:
            put("group_members", {"run": run, "layer": g["layer"], "group": g["group_id"]})
        data["layouts"][run] = api.layout({"run": run})
    models: dict[str, list[str]] = {}
    for r in runs.values():
        models.setdefault(r["model_uid"], [])
        if r["class_name"] not in models[r["model_uid"]]:
            models[r["model_uid"]].append(r["class_name"])
    for m, classes in models.items():
        chosen = classes[:MAX_CLASSES_PAIRED]
        for a in chosen:
            for b in chosen:
                if a != b:
                    put("shared_neurons_by_layer", {"model": m, "class_a": a, "class_b": b})
                    put("shared_groups", {"model": m, "class_a": a, "class_b": b, "limit": PAGE_LIMIT})
        put("hub_neurons", {"model": m, "limit": SIDE_LIMIT})
        put("polysemantic_neurons", {"model": m, "limit": SIDE_LIMIT})
    for ma in models:
        for mb in models:
            for c in (x for x in models[ma] if x in models[mb]):
                try:
                    put("compare_models", {"model_a": ma, "model_b": mb, "class": c, "limit": PAGE_LIMIT})
                except ApiError:
                    pass  # a pair the query refuses (reported on the page as "no answer in this report")
    return data, dict(api._mosaics)


def write_report(*, store: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Write the static site to ``out_dir`` (created; files replaced atomically); return index.html's path."""
    from neurflow_graph.web.server import static_file
    import hashlib

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    (out / "mosaics").mkdir(exist_ok=True)
    try:
        data, mosaics = collect(DashboardApi(store))
    except ApiError as e:
        raise InputError(str(e)) from e
    for sha, path in mosaics.items():
        try:
            blob = Path(path).read_bytes()
        except OSError:
            continue  # the page shows "no mosaic" for it
        if hashlib.sha256(blob).hexdigest() == sha:
            atomic_write(out / "mosaics" / f"{sha}.png", lambda f, b=blob: f.write(b))
    for name in ("app.js", "app.css"):
        atomic_write(out / name, lambda f, n=name: f.write(static_file(n)))
    text = "window.NEURFLOW_DATA = " + json.dumps(data, allow_nan=False, separators=(",", ":")) + ";\n"
    atomic_write(out / "data.js", lambda f: f.write(text), mode="w")
    return atomic_write(out / "index.html", lambda f: f.write(static_file("index.html")))
