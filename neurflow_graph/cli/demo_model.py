"""`neurflow-graph demo-model`: train (or take from the cache) the concept-world demo CNN."""

from __future__ import annotations

import click


@click.command("demo-model")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=True),
              help="File to write the state_dict to (e.g. demo.pt).")
@click.option("--cache-dir", envvar="NEURFLOW_CACHE", default=None,
              help="Cache directory (env NEURFLOW_CACHE; default ~/.cache/neurflow-graph).")
@click.option("--seed", type=int, default=0, show_default=True, help="Training and world seed.")
@click.option("--quiet", is_flag=True, help="No per-epoch progress on stderr.")
def command(out_path: str, cache_dir: str | None, seed: int, quiet: bool) -> None:
    """Build the demo model for the concept world and write its weights to OUT."""
    from pathlib import Path

    from neurflow_graph.errors import InputError
    from neurflow_graph.models.demo import (
        TrainConfig, demo_model_path, get_demo_model, load_demo_metrics, save_state_dict,
    )

    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if Path(out_path).is_dir():
        raise InputError(f"--out {out_path} is a directory; give a file path such as {Path(out_path) / 'demo.pt'}")
    config = TrainConfig(seed=seed)
    path = demo_model_path(cache_dir=cache_dir, config=config)
    before = path.stat().st_mtime_ns if path.is_file() else None
    progress = None if quiet else (lambda msg: click.echo(msg, err=True))
    model, cache_path = get_demo_model(cache_dir=cache_dir, config=config, progress=progress)
    cached = before is not None and cache_path.stat().st_mtime_ns == before
    out = save_state_dict(model=model, path=out_path)
    metrics = load_demo_metrics(cache_path)
    if metrics is None:
        figures = "held-out accuracy unknown (no metrics beside the cached weights)"
    else:
        figures = (f"held-out accuracy {metrics.test_accuracy:.1%} on {metrics.n_test} test images, "
                   f"trained in {metrics.seconds:.0f} s")
    click.echo(f"demo model: {figures} ({'cached' if cached else 'trained now'}: {cache_path}); wrote {out}")
