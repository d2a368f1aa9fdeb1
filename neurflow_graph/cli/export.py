"""``neurflow-graph export --run UID --format graphml|json OUT``: a run's circuit via networkx (OUT ``-``: stdout)."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("export")
@click.option("--run", "run_uid", default=None, help="Run uid or a unique prefix of one (see `neurflow-graph runs`).")
@click.option("--model", default=None, help="With --class instead of --run: the latest complete run of (model, class).")
@click.option("--class", "class_name", default=None, help="Class name or index (with --model).")
@click.option("--format", "fmt", type=click.Choice(["graphml", "json"]), default="graphml",
              show_default=True, help="GraphML or networkx node-link JSON.")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@store_options
def command(run_uid: str | None, model: str | None, class_name: str | None, fmt: str, out: str, store_url: str,
            database: str | None, username: str | None, password: str | None) -> None:
    """Write a run's circuit (neurons, semantic groups, neuron groups, weighted edges) to OUT ('-': standard output).

    The run is --run UID (or a unique prefix), or the latest complete run of --model M --class C."""
    from neurflow_graph.errors import InputError
    from neurflow_graph.queries.export import export_run, graph_bytes
    from neurflow_graph.store.url import open_store

    if (run_uid is None) == (model is None or class_name is None) or (run_uid and (model or class_name)):
        raise InputError("name the run with --run UID, or with --model M --class C (its latest complete run)")
    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        if run_uid is None:
            from neurflow_graph.queries.names import latest_run

            run_uid = latest_run(store, model, class_name)
        graph = export_run(store=store, run_uid=run_uid, path=None if out == "-" else out, fmt=fmt)
    finally:
        store.close()
    summary = f"{graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges ({fmt})"
    if out == "-":
        import sys

        sys.stdout.flush()
        sys.stdout.buffer.write(graph_bytes(graph=graph, fmt=fmt))
        sys.stdout.buffer.flush()
        click.echo(f"wrote {summary} to standard output", err=True)
    else:
        click.echo(f"wrote {out}: {summary}")
