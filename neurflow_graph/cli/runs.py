"""``neurflow-graph runs``: the runs in the store, complete or not."""

from __future__ import annotations

import json

import click

from neurflow_graph.cli.options import store_options

_COLUMNS = ("uid", "model", "class", "status", "latest", "created_at", "neurons", "groups", "edges", "relationships")


def _filtered(store, runs, *, model: str | None, class_name: str | None, run_prefix: str | None):
    """``runs`` restricted by the filters, each checked like a query's names (unknown -> one-line error)."""
    from neurflow_graph.queries.names import UnknownNameError, resolve_class, resolve_model, resolve_run, suggest

    if run_prefix is not None:
        uid = resolve_run(store, run_prefix)
        runs = [r for r in runs if r.uid == uid]
    if model is not None:
        muid = resolve_model(store, model)
        runs = [r for r in runs if r.model == muid]
        if class_name is not None:
            class_name = resolve_class(store, muid, class_name)
    if class_name is not None:
        names = {r.class_name for r in runs}
        if class_name not in names:
            raise UnknownNameError(f"no run of class {class_name!r}: {suggest(class_name, names)}")
        runs = [r for r in runs if r.class_name == class_name]
    return runs


@click.command("runs")
@store_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--model", "model", default=None, help="Only runs of this model (name or Model uid).")
@click.option("--class", "class_name", default=None, help="Only runs of this class (name, or index with --model).")
@click.option("--run", "run_prefix", default=None, help="Only the run with this uid or unique uid prefix.")
def command(store_url: str, database: str | None, username: str | None, password: str | None, fmt: str,
            model: str | None, class_name: str | None, run_prefix: str | None) -> None:
    """List runs: uid, model, class, status, latest, created_at and counts (filters are checked names)."""
    from neurflow_graph.queries.format import format_rows
    from neurflow_graph.store.runs import list_runs
    from neurflow_graph.store.url import open_store

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        runs = list_runs(store=store)
        runs = _filtered(store, runs, model=model, class_name=class_name, run_prefix=run_prefix)
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in runs], indent=1))
        return
    if not runs:
        click.echo(f"no runs in {store.display_url} (add some with `neurflow-graph ingest RUN_DIR`)")
        return
    rows = [{"uid": r.uid, "model": r.model, "class": r.class_name, "status": r.status,
             "latest": "yes" if r.latest else "", "created_at": r.created_at,
             "neurons": r.counts.get("neurons"), "groups": r.counts.get("neuron_groups"),
             "edges": r.counts.get("edges"), "relationships": r.counts.get("relationships")} for r in runs]
    click.echo(format_rows(rows=rows, columns=_COLUMNS, fmt=fmt))
