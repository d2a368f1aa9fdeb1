"""``neurflow-graph report --out DIR``: the dashboard as a static site that opens from disk."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("report")
@store_options
@click.option("--out", "out_dir", required=True, help="Folder to write the site to (index.html, data.js, mosaics/).")
def command(store_url: str, database: str | None, username: str | None, password: str | None, out_dir: str) -> None:
    """Write the dashboard's pages (runs, circuits, two classes, two models) with their answers to --out DIR."""
    from neurflow_graph.store.url import open_store
    from neurflow_graph.web.report import write_report

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        index = write_report(store=store, out_dir=out_dir)
    finally:
        store.close()
    click.echo(f"{index}  (open it in a browser: file://{index.resolve()})")
