"""``neurflow-graph debug``: which neuron groups drive a class's false positives (paper sec. 5.1)."""

from __future__ import annotations

from pathlib import Path

import click

from neurflow_graph.cli.options import device_option, run_model_options, store_options


@click.command("debug")
@click.option("--run", "run", required=True, help="Run uid (or unique prefix) in the store, or a run directory.")
@click.option("--images", "images_dir", required=True, type=click.Path(),
              help="ImageFolder tree (one sub-folder per class); false positives are judged by folder name.")
@click.option("--layer", default=None, help="Layer of the neuron groups (default: the layer below the logit).")
@click.option("--random", "n_random", type=int, default=100, show_default=True,
              help="Random neuron sets per group size to compare each group with.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random sets.")
@click.option("--out", "out_dir", default=None, type=click.Path(),
              help="Folder for debug.json and the PNGs (default: RUN_DIR/debug/LAYER).")
@run_model_options
@device_option
@store_options
def command(run: str, images_dir: str, layer: str | None, n_random: int, seed: int, out_dir: str | None,
            runs_dirs: tuple[str, ...], model: str | None, weights: str | None, device: str | None,
            store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Metric M of each neuron group on the false positives, heat maps, and masking each group
    against random neuron sets of its size; findings stored as annotations (source "debug")."""
    from neurflow_graph.datasets.images import list_images
    from neurflow_graph.debugging.debug import debug_class
    from neurflow_graph.debugging.plots import plot_debug
    from neurflow_graph.debugging.report import debug_annotations, debug_sentences, debug_table
    from neurflow_graph.debugging.runs import group_concepts, load_run_model, open_run, record_annotations, world_of
    from neurflow_graph.fileio import atomic_write

    located, store = open_run(run=run, store_url=store_url, database=database, username=username,
                              password=password, runs_dirs=runs_dirs)
    try:
        loaded = load_run_model(circuit=located.circuit, model=model, weights=weights, device=device)
        records, _ = list_images(images_dir)
        truth = world_of(Path(records[0].path))
        result = debug_class(model=loaded, circuit=located.circuit, run_uid=located.uid, images=records, layer=layer,
                             n_random=n_random, seed=seed, truth=truth, concepts=group_concepts(located=located))
        out = Path(out_dir) if out_dir else located.run_dir / "debug" / result.layer
        out.mkdir(parents=True, exist_ok=True)
        pictures = plot_debug(result, out)
        atomic_write(out / "debug.json", lambda f: f.write(result.json_text()), mode="w")
        path, written = record_annotations(located=located, store=store, annotations=debug_annotations(result))
    finally:
        if store is not None:
            store.close()
    click.echo(debug_table(result))
    for line in debug_sentences(result):
        click.echo(line)
    click.echo(f"results: {out / 'debug.json'}; pictures: " + ", ".join(str(p) for p in pictures.values()))
    click.echo(f"annotations: {path}" + (f" and {written} in {store.display_url}" if store is not None else ""))
