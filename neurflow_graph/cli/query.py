"""``neurflow-graph query NAME -p key=value ...``: run a library query (read-only)."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


def _listing() -> str:
    from neurflow_graph.queries.library import list_queries

    lines = []
    for q in list_queries():
        lines.append(f"{q.name}: {q.purpose}")
        for p in q.params:
            default = "" if p.required else f" = {p.describe().split(' = ', 1)[1]}"
            hint = f"  -- {p.help}" if p.help else ""
            lines.append(f"    {p.name} {p.type}{default}{hint}")
        lines.append(f"    -> {', '.join(q.columns)}")
    return "\n".join(lines)


@click.command("query")
@click.argument("name", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A query parameter, typed by the query's header; repeat for each.")
@click.option("--list", "list_", is_flag=True, help="List the library's queries, purposes and parameters.")
@click.option("--show", is_flag=True, help="Print the query's Cypher instead of running it.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@store_options
def command(name: str | None, params: tuple[str, ...], list_: bool, show: bool, fmt: str,
            store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Run library query NAME from cypher/ read-only (see --list and docs/queries.md)."""
    from neurflow_graph.errors import InputError
    from neurflow_graph.queries.format import format_rows
    from neurflow_graph.queries.library import execute, get_query, parse_assignments

    if list_:
        click.echo(_listing())
        return
    if not name:
        raise InputError("give a query NAME (see `neurflow-graph query --list`)")
    query = get_query(name)
    bound = query.bind(parse_assignments(params))
    if show:
        click.echo(query.text.rstrip())
        return
    from neurflow_graph.store.url import open_store

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        rows = execute(store=store, query=query, params=bound)
    finally:
        store.close()
    click.echo(format_rows(rows=rows, columns=query.columns, fmt=fmt))
