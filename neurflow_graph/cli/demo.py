"""`neurflow-graph demo`: concept world -> model -> circuits -> store -> queries -> findings."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import device_option


@click.command("demo")
@click.option("--data-dir", default="neurflow-data", show_default=True, type=click.Path(file_okay=False),
              help="Where the world, run directories and the embedded store live.")
@click.option("--store", "store_url", envvar="NEURFLOW_STORE", default=None,
              help="Store URL (default: embedded:DATA_DIR). neo4j://... works too.")
@click.option("--per-class", default=12, show_default=True, type=int, help="Held-out images per class.")
@click.option("--class", "classes", multiple=True, help="Only these classes (default: all).")
@device_option
def command(data_dir: str, store_url: str | None, per_class: int, classes: tuple[str, ...],
            device: str | None) -> None:
    """Run NeurFlow end to end on the built-in concept world and print what the graph shows."""
    from neurflow_graph.demo import run_demo

    run_demo(data_dir=data_dir, store_url=store_url, per_class=per_class, classes=list(classes) or None,
             device=device, echo=click.echo)
