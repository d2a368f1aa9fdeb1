"""``neurflow-graph evaluate``: the paper's tests of a run (sec. 4 Figs. 4-6, app. D.7)."""

from __future__ import annotations

from pathlib import Path

import click

from neurflow_graph.cli.options import device_option, run_model_options, store_options


@click.command("evaluate")
@click.option("--run", "run", required=True, help="Run uid (or unique prefix) in the store, or a run directory.")
@click.option("--images", "images_dir", default=None, type=click.Path(),
              help="ImageFolder tree with the class's images (needed by fidelity).")
@click.option("--experiments", default="optimality,fidelity,weight_fidelity,k_dependence", show_default=True,
              help="Comma-separated experiments to run.")
@click.option("--random", "n_random", type=int, default=100, show_default=True,
              help="Random sets per target and size (optimality).")
@click.option("--targets", "targets_per_layer", type=int, default=5, show_default=True,
              help="Target neurons drawn per layer (optimality).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default=None, type=click.Path(),
              help="Folder for the JSON results and PNGs (default: RUN_DIR/evaluation).")
@run_model_options
@device_option
@store_options
def command(run: str, images_dir: str | None, experiments: str, n_random: int, targets_per_layer: int, seed: int,
            out_dir: str | None, runs_dirs: tuple[str, ...], model: str | None, weights: str | None,
            device: str | None, store_url: str, database: str | None, username: str | None,
            password: str | None) -> None:
    """Optimality, fidelity, weight fidelity and k-dependence of a run; each a JSON result, a PNG and
    an annotation on the Run (source "evaluation:<name>")."""
    from neurflow_graph.datasets.images import list_images
    from neurflow_graph.debugging.runs import load_run_model, open_run, record_annotations
    from neurflow_graph.errors import InputError
    from neurflow_graph.evaluation import EvaluationSettings, check_experiments, evaluate_run
    from neurflow_graph.evaluation.report import evaluation_annotations, sentence, write_outputs

    names = check_experiments([n.strip() for n in experiments.split(",") if n.strip()])
    for label, value, low in (("--random", n_random, 2), ("--targets", targets_per_layer, 1)):
        if value < low:
            raise InputError(f"{label} must be >= {low}, got {value}")
    if "fidelity" in names and images_dir is None:
        raise InputError("the fidelity experiment needs --images DIR (the class's images in a sub-folder); "
                         "or leave it out of --experiments")
    located, store = open_run(run=run, store_url=store_url, database=database, username=username,
                              password=password, runs_dirs=runs_dirs)
    try:
        loaded = load_run_model(circuit=located.circuit, model=model, weights=weights, device=device)
        records = list_images(images_dir)[0] if images_dir is not None else None
        settings = EvaluationSettings(n_random=n_random, targets_per_layer=targets_per_layer, seed=seed)
        result = evaluate_run(model=loaded, circuit=located.circuit, run_uid=located.uid, images=records,
                              experiments=names, settings=settings)
        files = write_outputs(result, Path(out_dir) if out_dir else located.run_dir / "evaluation")
        path, written = record_annotations(located=located, store=store, annotations=evaluation_annotations(result))
    finally:
        if store is not None:
            store.close()
    for name, res in result.results.items():
        click.echo(sentence(name, res))
        click.echo(f"  {files[name]['json']}  {files[name]['png']}  ({result.seconds[name]:.1f} s)")
    click.echo(f"run's concepts reproduced from its images: {result.concepts_reproduced:.0%}; "
               f"annotations: {path}" + (f" and {written} in {store.display_url}" if store is not None else ""))
