"""Read what pictures need from a store, through the query library only (read-only)."""

from __future__ import annotations

from typing import Any

from neurflow_graph.errors import InputError
from neurflow_graph.viz.graph import CircuitGraph, from_rows


def resolve_run(store: Any, text: str) -> str:
    """A complete run's full uid from ``text`` (full uid or unique prefix); InputError otherwise.

    Uses ``neurflow_graph.queries.names.resolve_run`` when it exists (shared name checking)."""
    try:
        from neurflow_graph.queries.names import resolve_run as shared
    except ImportError:
        shared = None
    if shared is not None:
        return shared(store, text)
    from neurflow_graph.store.runs import list_runs

    runs = [r.uid for r in list_runs(store=store) if r.status == "complete"]
    hits = [u for u in runs if u.startswith(text)] if text else []
    if text in runs:
        return text
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"no complete run {text!r} in the store; list them with `neurflow-graph runs`")
    raise InputError(f"run prefix {text!r} is ambiguous: {', '.join(sorted(hits)[:5])}; give more characters")


def circuit_graph(store: Any, run: str) -> CircuitGraph:
    """The class circuit of ``run`` (a full uid) from the library query ``circuit_groups``."""
    from neurflow_graph.queries.library import run_query

    rows = run_query(store=store, name="circuit_groups", params={"run": run})
    if not rows:
        raise InputError(f"run {run} has no neuron groups in the store (is it complete? see `neurflow-graph runs`)")
    return from_rows(rows)
