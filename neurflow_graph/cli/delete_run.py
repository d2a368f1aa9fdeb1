"""``neurflow-graph delete-run UID``: remove one run and whatever only it used."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("delete-run")
@click.argument("uid", metavar="RUN")
@store_options
def command(uid: str, store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Delete run RUN (a uid or a unique prefix): its own nodes and relationships, and shared nodes (neurons, patches, images,
    layers, model, class) that no other run uses. Other runs are untouched."""
    from neurflow_graph.store.runs import delete_run
    from neurflow_graph.store.url import open_store

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        from neurflow_graph.queries.names import resolve_run

        result = delete_run(store=store, uid=resolve_run(store, uid))
    finally:
        store.close()
    click.echo(result.summary())
