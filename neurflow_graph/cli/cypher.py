"""``neurflow-graph cypher 'MATCH ...' [-p k=v] [--write]``: an ad-hoc query, read-only by default."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("cypher")
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME[:TYPE]=VALUE",
              help="A parameter ($NAME in the query). VALUE is read as JSON when it is a number, "
                   "true/false/null, a list or a map, else as a string; NAME:TYPE forces a type "
                   "(string, int, float, bool, list<string>, ...).")
@click.option("--write", is_flag=True, help="Allow the query to change the graph (default: read-only).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@store_options
def command(query: str, params: tuple[str, ...], write: bool, fmt: str, store_url: str,
            database: str | None, username: str | None, password: str | None) -> None:
    """Run an ad-hoc Cypher QUERY with parameters (never spliced into its text)."""
    from neurflow_graph.queries.adhoc import run_adhoc, typed_assignments
    from neurflow_graph.queries.format import format_rows
    from neurflow_graph.store.url import open_store

    bound = typed_assignments(params)
    store = open_store(store_url, database=database, username=username, password=password, create=write)
    try:
        rows = run_adhoc(store=store, text=query, params=bound, write=write)
    finally:
        store.close()
    click.echo(format_rows(rows=rows, fmt=fmt))
