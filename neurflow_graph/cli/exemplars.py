"""``neurflow-graph exemplars RUN_DIR``: (re)build the exemplar mosaics of finished runs."""

from __future__ import annotations

import click


@click.command("exemplars")
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--thumb", type=click.IntRange(min=8, max=512), default=64, show_default=True,
              help="Side of each patch thumbnail in pixels.")
@click.option("--max-patches", type=click.IntRange(min=1, max=256), default=16, show_default=True,
              help="Most patches per mosaic.")
def command(run_dirs: tuple[str, ...], thumb: int, max_patches: int) -> None:
    """Write RUN_DIR/exemplars/ (a mosaic per semantic and neuron group, from the run's images) for each RUN_DIR
    (a run directory or a parent of run directories)."""
    from neurflow_graph.store.ingest import load_runs
    from neurflow_graph.viz.exemplars import read_manifest, write_exemplars

    for run_dir, circuit in load_runs(list(run_dirs)):
        path = write_exemplars(circuit=circuit, run_dir=run_dir, thumb=thumb, max_patches=max_patches)
        n = len(read_manifest(run_dir)["groups"])
        click.echo(f"{run_dir}: {n} mosaics -> {path.parent}")
