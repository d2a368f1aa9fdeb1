"""``neurflow-graph runs``: the runs in the store, complete or not."""

from __future__ import annotations

import json

import click

from neurflow_graph.cli.options import store_options

_COLUMNS = ("uid", "model", "class", "status", "latest", "created_at", "neurons", "groups", "edges", "relationships")


@click.command("runs")
@store_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def command(store_url: str, database: str | None, username: str | None, password: str | None, fmt: str) -> None:
    """List runs: uid, model, class, status, latest, created_at and counts."""
    from neurflow_graph.queries.format import format_rows
    from neurflow_graph.store.runs import list_runs
    from neurflow_graph.store.url import open_store

    store = open_store(store_url, database=database, username=username, password=password)
    try:
        runs = list_runs(store=store)
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
