"""`neurflow-graph directions`: principal components of layers beside their neurons (Dey et al. 2025)."""

from __future__ import annotations

from pathlib import Path

import click

from neurflow_graph.cli.options import device_option, resolve_password, trust_pickle_option


@click.command("directions")
@click.option("--model", "model", required=True,
              help="Registry name (alexnet, resnet50, demo, ...), package.module:factory or path/to/file.py:factory.")
@click.option("--weights", default=None,
              help="DEFAULT (torchvision's pretrained enum), a .pt/.pth file, or omit for random init "
                   "(demo: its trained weights).")
@trust_pickle_option
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Resize images to this square side (default: the model's own, e.g. 224 for torchvision).")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of images (ImageFolder class sub-folders give labels for completeness 2).")
@click.option("--layers", "layers", required=True,
              help="Comma-separated layers to analyse (named_modules() paths, e.g. conv1,conv2 or features.0).")
@click.option("--samples", type=click.IntRange(min=2), default=100_000, show_default=True,
              help="Spatial positions sampled per layer for PCA (spread evenly over the images).")
@click.option("--site", type=click.Choice(["pre", "post"]), default=None,
              help="Only this side of the layer's ReLU (default: every site the layer has).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: directions.json, components.npz and PNG figures.")
@click.option("--store", "store_url", default=None,
              help="Also write the directions into this store (embedded:PATH or neo4j:// URL) and link "
                   "them to the model's runs there.")
@click.option("--database", envvar="NEO4J_DATABASE", default=None, help="Database / graph name of --store.")
@click.option("--username", envvar="NEO4J_USERNAME", default=None, help="Neo4j user (env NEO4J_USERNAME).")
@click.option("--eval-images", type=click.IntRange(min=0), default=128, show_default=True,
              help="Images for completeness 2 (ablation curves); 0 skips it.")
@click.option("--ablation-points", type=click.IntRange(min=2), default=9, show_default=True,
              help="At most this many k values per ablation curve (all k when the layer is narrower).")
@click.option("--exemplars", "n_exemplars", type=click.IntRange(min=0), default=8, show_default=True,
              help="Exemplar patches kept per direction.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the position sampling.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@device_option
def command(model: str, weights: str | None, trust_pickle: bool, input_size: int | None, images_dir: Path, layers: str, samples: int,
            site: str | None, out_dir: Path, store_url: str | None, database: str | None, username: str | None,
            eval_images: int, ablation_points: int, n_exemplars: int, seed: int, batch_size: int, no_plots: bool,
            device: str | None) -> None:
    """PCA of each layer's activations (every spatial position a sample), pre- and post-ReLU where a
    ReLU is next to the layer; completeness 1 (variance of top-k PCs vs top-k neurons, counts for
    80% / 99%) and 2 (accuracy or agreement as PCs / neurons are ablated); exemplar patches per
    direction. With --store: Direction nodes, ALIGNED_WITH edges from neuron groups and each run's
    coverage. See docs/directions.md."""
    import os

    from neurflow_graph.datasets.images import list_images
    from neurflow_graph.directions.compute import compute_directions
    from neurflow_graph.directions.result import write_result
    from neurflow_graph.errors import InputError
    from neurflow_graph.models.registry import load_model

    names = [x.strip() for x in layers.split(",") if x.strip()]
    if not names:
        raise InputError("--layers is empty; give comma-separated module names, e.g. --layers conv1,conv2")
    if store_url is not None:
        from neurflow_graph.store.url import parse_store_url

        parse_store_url(store_url)  # a bad URL stops before any work
    loaded = load_model(name=model, weights=weights, device=device, trust_pickle=trust_pickle, require_layers=False,
                        input_size=input_size)
    _check_layers(loaded.module, names)
    records, skipped = list_images(images_dir)
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable or non-image file(s) in {images_dir}", err=True)
    click.echo(f"{loaded.spec.name} ({loaded.weights_source}), {len(records)} images, layers {', '.join(names)}",
               err=True)
    result = compute_directions(model=loaded, images=records, layers=names, samples=samples,
                                sites=None if site is None else [site], seed=seed, batch_size=batch_size,
                                eval_images=eval_images, ablation_points=ablation_points, n_exemplars=n_exemplars)
    path = write_result(result, out_dir)
    if not no_plots:
        from neurflow_graph.directions.plots import plot_result

        plot_result(result, out_dir)
    for s in result.sites:
        p, n = s.counts["pca"], s.counts["neurons"]
        click.echo(f"{s.layer:>14} {s.site:<4} dim {s.dim:>5}  80%: PCA {_n(p['80'])} neurons {_n(n['80'])}   "
                   f"99%: PCA {_n(p['99'])} neurons {_n(n['99'])}   ({s.n_samples} samples)")
    click.echo(f"wrote {path} in {result.seconds:.1f}s")
    if store_url is not None:
        from neurflow_graph.store.directions import write_directions
        from neurflow_graph.store.url import open_store

        password = resolve_password(store_url=store_url, username=username, password=os.environ.get("NEO4J_PASSWORD"))
        store = open_store(store_url, database=database, username=username, password=password)
        try:
            store.setup()
            wrote = write_directions(store=store, result=result)
        finally:
            store.close()
        click.echo(f"stored in {store.display_url}: {wrote.summary()}")


def _n(k: int | None) -> str:
    return f"{k:>5}" if k is not None else "    -"


def _check_layers(module, names: list[str]) -> None:
    from neurflow_graph.errors import InputError
    from neurflow_graph.interventions.masking import resolve_layer

    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"layer(s) listed twice: {', '.join(dupes)}")
    for n in names:
        resolve_layer(module, n)
