"""``neurflow-graph draw --run UID --out FILE.png|FILE.svg``: a class circuit drawn layer by layer."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("draw")
@click.option("--run", "run", required=True, help="Run uid (or a unique prefix; see `neurflow-graph runs`).")
@click.option("--out", "out", required=True, help="Picture to write: FILE.png or FILE.svg.")
@click.option("--min-weight", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Keep group edges with |W| at least this.")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Keep at most N strongest incoming edges per parent group.")
@store_options
def command(run: str, out: str, min_weight: float, top: int | None, store_url: str, database: str | None,
            username: str | None, password: str | None) -> None:
    """Draw run UID's circuit: logit on top, groups as exemplar mosaics, edges by |W| and sign."""
    from pathlib import Path

    from neurflow_graph.errors import InputError

    if Path(out).suffix.lower() not in (".png", ".svg"):
        raise InputError(f"--out must end in .png or .svg, got {Path(out).name!r}")
    from neurflow_graph.store.url import open_store
    from neurflow_graph.viz.draw import draw_run

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        path, graph = draw_run(store=store, run=run, out=out, min_weight=min_weight, top=top)
    finally:
        store.close()
    click.echo(f"{path}  ({len(graph.nodes)} groups, {len(graph.edges)} edges, run {graph.run})")
