"""`neurflow-graph world`: export the concept world as an ImageFolder tree with ground truth."""

from __future__ import annotations

import click


@click.command("world")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=True, dir_okay=True),
              help="Directory to write (new, empty, or a previous world export).")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed.")
@click.option("--per-class", "n_per_class", type=int, default=50, show_default=True, help="Images per class.")
@click.option("--split", type=click.Choice(["train", "test", "bias"]), default="train", show_default=True,
              help="Which split's images (disjoint streams of the same world); bias: every other class on flowers and grass.")
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels (>= 32).")
@click.option("--spurious-rate", type=float, default=None,
              help="Draw every spurious concept at this rate in every class (default: the biased class rates).")
@click.option("--bias-flowers", type=int, default=None,
              help="Bias split only: flowers beside each object of a class without spurious concepts "
                   "(1-5; default 1). More flowers make more of them pass for the biased class.")
def command(out_dir: str, seed: int, n_per_class: int, split: str, size: int, spurious_rate: float | None,
            bias_flowers: int | None) -> None:
    """Write OUT/<class>/<class>_<j>.png, OUT/world.json and OUT/masks.npz (per-pixel concept masks)."""
    from neurflow_graph.datasets.concept_world import BIAS_SPLIT_FLOWERS, CLASS_NAMES, export_world

    out = export_world(out_dir=out_dir, seed=seed, n_per_class=n_per_class, split=split, size=size,
                       spurious_rate=spurious_rate,
                       bias_flowers=BIAS_SPLIT_FLOWERS if bias_flowers is None else bias_flowers)
    flowers = f", {bias_flowers} flowers per other-class image" if bias_flowers is not None and split == "bias" else ""
    click.echo(f"wrote {n_per_class * len(CLASS_NAMES)} images ({len(CLASS_NAMES)} classes x {n_per_class}, "
               f"{split} split{flowers}, seed {seed}, {size}px) to {out}; ground truth in {out / 'world.json'}")
