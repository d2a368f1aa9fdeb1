"""``neurflow-graph export --run UID --format graphml|json OUT``: a run's circuit via networkx (OUT ``-``: stdout)."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("export")
@click.option("--run", "run_uid", required=True, help="Run uid or a unique prefix of one (see `neurflow-graph runs`).")
@click.option("--format", "fmt", type=click.Choice(["graphml", "json"]), default="graphml",
              show_default=True, help="GraphML or networkx node-link JSON.")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@store_options
def command(run_uid: str, fmt: str, out: str, store_url: str, database: str | None,
            username: str | None, password: str | None) -> None:
    """Write run UID's circuit (neurons, semantic groups, neuron groups, weighted edges) to OUT ('-': standard output)."""
    from neurflow_graph.queries.export import export_run, graph_bytes
    from neurflow_graph.store.url import open_store

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
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
