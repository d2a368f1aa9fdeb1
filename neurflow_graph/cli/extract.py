"""``neurflow-graph extract``: explain one or more classes of a model with NeurFlow circuits.

The command parses and validates its inputs (model, weights, layers, images, classes, options)
before any extraction starts, then runs the engine once per class. With one ``--class`` the run
directory is ``--out`` itself; with several (or ``--class all``, ``--classes-file``, ``--executor ray``)
it is ``--out/<class-name-slug>/`` for each, run by ``neurflow_graph.executors`` (docs/scale.md).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from neurflow_graph.cli.options import device_option, model_options, parse_floats

# ExtractParams field -> CLI option, for options left unset (the engine's defaults then apply).
_PARAM_OPTIONS = ("k", "tau", "stride_fraction", "ig_steps", "ig_method", "rank_by", "max_semantic_groups",
                  "max_neuron_groups", "max_batch", "seed")
_SELECT_BATCH = 64  # D_c selection batch when --max-batch is not given


@click.command("extract")
@model_options
@click.option("--images", "images_dir", required=True,
              help="Image folder: class sub-folders (ImageFolder) or a flat folder of images.")
@click.option("--class", "classes", multiple=True,
              help="Class to explain, by index or name (case-insensitive). Repeat for several classes; "
                   "`all` explains every class (one run directory each, see docs/scale.md).")
@click.option("--classes-file", default=None, type=click.Path(dir_okay=False),
              help="File of classes to explain, one name or index per line (# comments).")
@click.option("--executor", type=click.Choice(["sequential", "ray"]), default="sequential", show_default=True,
              help="Where several classes run: this process, or one Ray task per class (pip install "
                   "'neurflow-graph[ray]').")
@click.option("--address", default=None, help="Ray cluster address (with --executor ray; default: a local Ray).")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=None,
              help="GPUs Ray assigns to each class task [1 when the cluster has GPUs, else 0].")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Times Ray reruns a class whose worker died.")
@click.option("--out", "out_dir", required=True,
              help="Run directory (one class) or parent of one run directory per class.")
@click.option("--k", type=click.IntRange(min=1), default=None, help="Top patches forming a neuron's concept [50].")
@click.option("--tau", type=click.IntRange(min=1), default=None, help="Core concept neurons kept per layer [16].")
@click.option("--tau-layer", "tau_layers", multiple=True, metavar="LAYER=N",
              help="Per-layer tau override, e.g. layer4.2=8. Repeatable.")
@click.option("--crop-fractions", default=None, help="Patch sizes as fractions of the image side [1,0.5,0.25].")
@click.option("--stride-fraction", type=float, default=None, help="Sliding-window stride / patch side [0.5].")
@click.option("--ig-steps", type=click.IntRange(min=1), default=None, help="Integrated-gradients steps [50].")
@click.option("--ig-method", type=click.Choice(["gausslegendre", "riemann_right"]), default=None,
              help="Integrated-gradients quadrature [gausslegendre].")
@click.option("--rank-by", type=click.Choice(["abs_mean", "abs_sum"]), default=None,
              help="How IG scores rank child neurons [abs_mean]; abs_sum is the paper's.")
@click.option("--max-semantic-groups", type=click.IntRange(min=1), default=None,
              help="Most semantic groups per neuron [5].")
@click.option("--max-neuron-groups", type=click.IntRange(min=1), default=None,
              help="Most neuron groups per layer [8].")
@click.option("--max-batch", type=click.IntRange(min=1), default=None, help="Largest forward/backward batch [256].")
@click.option("--preprocess", type=click.Choice(["weights", "squash"]), default=None,
              help="Image preprocessing: weights = the torchvision weights' own transforms (resize, centre crop, "
                   "mean/std; default for registry models), squash = whole image resized to the input size.")
@click.option("--memory-budget", default=None, metavar="SIZE",
              help="Memory for cached layer maps and gradients, e.g. 2GiB or 512MiB [device: half the free GPU "
                   "memory, or a quarter of RAM].")
@click.option("--scan-layout", type=click.Choice(["fast", "eager"]), default="eager", show_default=True,
              help="Activation scan: eager = the model as it is (bit-exact with eager PyTorch); fast = a copy "
                   "of the model with conv+BatchNorm folded, in channels_last memory format (same phi up to "
                   "float rounding, ~1.4x faster scan on CPU; exact ties may then rank differently). Not a "
                   "run parameter.")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@device_option
@click.option("--class-names", "class_names_file", default=None, type=click.Path(dir_okay=False),
              help="File of class names in logit order (one per line, or a JSON list) for a model that "
                   "declares no CLASS_NAMES; runs are then named by class instead of class_N.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the run directory.")
@click.option("--restart", is_flag=True, help="Throw away the checkpoints of an unfinished run in --out and start over.")
@click.option("--force", is_flag=True,
              help="Replace a finished run in --out, or write into a non-empty folder that holds no run.")
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
def command(model: str, weights: str | None, layers: str | None, input_size: int | None, mean: str | None,
            std: str | None, trust_pickle: bool, images_dir: str, classes: tuple[str, ...], out_dir: str,
            tau_layers: tuple[str, ...], crop_fractions: str | None, device: str | None,
            class_names_file: str | None, resume: bool, restart: bool, force: bool, no_progress: bool,
            classes_file: str | None, executor: str, address: str | None, gpus_per_task: float | None,
            max_retries: int, scan_layout: str, **param_values: Any) -> None:
    """Extract NeurFlow circuits of --class C (one or more) from the images --images DIR into --out RUN_DIR.

    An --out that holds a finished run, an unfinished one or unrelated files is refused unless
    --force (replace), --resume (continue) or --restart (start over) says what to do with it.
    Ctrl-C stops with exit code 130 and names the layer --resume continues from."""
    from neurflow_graph.datasets.images import (
        NOT_AN_IMAGE, list_images, predict_classes, resolve_class, select_class_images,
    )
    from neurflow_graph.errors import ImageError, InputError
    from neurflow_graph.extraction.rundir import check_out_dir
    from neurflow_graph.models.registry import load_model, preprocessing_warning, read_class_names, resolve_device

    if resume and restart:
        raise InputError("--resume continues an unfinished run and --restart throws it away; give one of them")
    # Cheap checks first, so a typo does not cost a model download or an image scan.
    mean_t = parse_floats(mean, name="mean")
    std_t = parse_floats(std, name="std")
    crops = _parse_crop_fractions(crop_fractions)
    stride = param_values.get("stride_fraction")
    if stride is not None and not 0.0 < stride <= 1.0:
        raise InputError(f"--stride-fraction must be in (0, 1], got {stride}")
    tau_pairs = [_parse_tau_layer(text) for text in tau_layers]
    resolve_device(device)
    if address is not None and executor != "ray":
        raise InputError("--address names a Ray cluster; give it with --executor ray")
    if executor == "ray":
        from neurflow_graph.executors.ray_executor import import_ray

        import_ray()  # not installed: one line with the install command, before the model loads
    images_path = Path(images_dir).expanduser()
    if not images_path.exists():
        raise ImageError(f"image folder {images_path} does not exist; pass --images DIR with class sub-folders "
                         "or image files")
    if not images_path.is_dir():
        raise ImageError(f"{images_path} is not a folder; pass --images DIR (a folder of images or of class "
                         "sub-folders)")
    names = read_class_names(class_names_file) if class_names_file is not None else None

    preprocess = param_values.pop("preprocess", None)
    memory_text = param_values.pop("memory_budget", None)
    from neurflow_graph.extraction.budget import parse_memory

    memory_budget = parse_memory(memory_text) if memory_text is not None else None

    # Then the model, its layers and the classes, still before decoding any image.
    loaded = load_model(name=model, weights=weights, layers=layers, input_size=input_size, mean=mean_t,
                        std=std_t, device=device, trust_pickle=trust_pickle, class_names=names, preprocess=preprocess)
    if loaded.spec.input_size is not None:  # else checked by the engine at the images' size, still before the scan
        from neurflow_graph.extraction.layer_order import check_layer_order

        check_layer_order(module=loaded.module, layers=loaded.spec.layers,
                          input_size=(loaded.spec.input_size, loaded.spec.input_size), device=loaded.device)
    warning = preprocessing_warning(loaded)
    if warning:
        click.echo(warning, err=True)
    tau_per_layer = _check_tau_layers(tau_pairs, loaded.spec.layers)
    from neurflow_graph.executors import many

    indices, every = many.resolve_classes(model=loaded, classes=classes, classes_file=classes_file)
    multi = len(indices) > 1 or every or classes_file is not None or executor == "ray"
    run_dirs = _run_dirs(Path(out_dir), [(i, loaded.class_name(i)) for i in indices], nested=multi)
    finished = many.check_run_dirs(run_dirs, resume=resume, restart=restart, force=force) if multi else set()
    for i in indices if not multi else ():
        check_out_dir(run_dirs[i], resume=resume, restart=restart, force=force)

    records, skipped = list_images(images_path)
    not_images = [path for path, reason in skipped if reason == NOT_AN_IMAGE]
    for path, reason in skipped:
        if reason != NOT_AN_IMAGE:
            click.echo(f"skipped {path}: {reason}", err=True)
    if not_images:
        shown = ", ".join(p.name for p in not_images[:3]) + (", ..." if len(not_images) > 3 else "")
        click.echo(f"ignored {len(not_images)} file(s) that are not images ({shown})", err=True)
    if loaded.spec.class_names is None and any(r.label is not None for r in records):
        click.echo(f"warning: {loaded.spec.name} declares no class names, so runs are named class_N although the "
                   "images sit in class folders; declare CLASS_NAMES = [...] in the model's module or pass "
                   "--class-names FILE (one name per line, in logit order)", err=True)

    batch = param_values.get("max_batch") or _SELECT_BATCH
    with _device_memory(loaded, batch=batch, run_dir=None):
        predictions = predict_classes(model=loaded, images=records, batch_size=batch)
    if multi:
        _extract_many(loaded, indices=indices, every=every, run_dirs=run_dirs, finished=finished, records=records,
                      predictions=predictions, params=_params(param_values, crops, tau_per_layer), resume=resume,
                      progress=not no_progress, executor=executor, address=address, gpus_per_task=gpus_per_task,
                      max_retries=max_retries, memory_budget=memory_budget, scan_layout=scan_layout)
        return
    selections = {i: select_class_images(model=loaded, images=records, class_index=i, predictions=predictions)
                  for i in indices}
    for i in indices:
        click.echo(f"class {loaded.class_name(i)!r} ({i}): {len(selections[i])} of {len(records)} images "
                   f"classified as it (D_c) -> {run_dirs[i]}", err=True)

    from neurflow_graph.extraction import ExtractParams, extract_circuit

    given = {k: v for k, v in param_values.items() if k in _PARAM_OPTIONS and v is not None}
    if crops is not None:
        given["crop_fractions"] = crops
    if tau_per_layer:
        given["tau_per_layer"] = tau_per_layer
    params = ExtractParams(**given)

    summaries: list[str] = []
    for i in indices:
        start = time.perf_counter()
        done = [loaded.class_name(j) for j in indices[:indices.index(i)]]
        with _interruption(loaded, run_dirs[i], class_name=loaded.class_name(i), done=done), \
                _device_memory(loaded, batch=params.max_batch, run_dir=run_dirs[i]):
            circuit = extract_circuit(model=loaded, images=selections[i], class_index=i, params=params,
                                      run_dir=run_dirs[i], resume=resume, progress=not no_progress,
                                      memory_budget=memory_budget, scan_layout=scan_layout)
        seconds = time.perf_counter() - start
        summaries.append(f"{loaded.class_name(i)} ({i}): {run_dirs[i]}  {len(circuit.neurons)} neurons, "
                         f"{len(circuit.neuron_groups)} groups, {len(selections[i])} images, {seconds:.1f} s")
    for line in summaries:
        click.echo(line)


def _params(param_values: dict[str, Any], crops: Any, tau_per_layer: dict[str, int]) -> Any:
    from neurflow_graph.extraction import ExtractParams

    given = {k: v for k, v in param_values.items() if k in _PARAM_OPTIONS and v is not None}
    if crops is not None:
        given["crop_fractions"] = crops
    if tau_per_layer:
        given["tau_per_layer"] = tau_per_layer
    return ExtractParams(**given)


def _extract_many(loaded: Any, *, indices: list[int], every: bool, run_dirs: dict[int, Path], finished: set[int],
                  records: Any, predictions: Any, params: Any, resume: bool, progress: bool, executor: str,
                  address: str | None, gpus_per_task: float | None, max_retries: int,
                  memory_budget: int | None, scan_layout: str) -> None:
    """Several classes (docs/scale.md): plan (skip finished runs), run on the executor, summarise."""
    from dataclasses import replace

    from neurflow_graph.executors import many

    jobs, settled = many.plan_jobs(model=loaded, indices=indices, run_dirs=run_dirs, finished=finished,
                                   records=records, predictions=predictions, every=every, params=params)
    jobs = [replace(j, memory_budget=memory_budget, scan_layout=scan_layout) for j in jobs]
    for o in settled:
        click.echo(o.line(), err=True)
    outcomes = many.run_jobs(executor=executor, model=loaded, jobs=jobs, params=params, resume=resume,
                             progress=progress, address=address, gpus_per_task=gpus_per_task,
                             max_retries=max_retries, echo=click.echo)
    many.finish(settled + outcomes, echo=click.echo)


@contextmanager
def _interruption(loaded: Any, run_dir: Path, *, class_name: str, done: list[str]) -> Iterator[None]:
    """Ctrl-C during one class's extraction -> Interrupted naming the layer --resume continues from."""
    from neurflow_graph.errors import Interrupted
    from neurflow_graph.extraction.rundir import resume_point

    try:
        yield
    except KeyboardInterrupt:
        point = resume_point(run_dir, loaded.spec.layers)
        kept = f"; finished: {', '.join(done)}" if done else ""
        raise Interrupted(f"interrupted; rerun the same command with --resume to continue from {point} "
                          f"(class {class_name}{kept})") from None


@contextmanager
def _device_memory(loaded: Any, *, batch: int, run_dir: Path | None) -> Iterator[None]:
    """An out-of-memory error on the model's device -> one line naming it and a smaller --max-batch."""
    from neurflow_graph.errors import device_memory_error

    try:
        yield
    except (RuntimeError, MemoryError) as e:
        resume = " --resume" if run_dir is not None else ""
        hint = (f"rerun with a smaller --max-batch (now {batch}; try {max(1, batch // 2)}){resume}, "
                "free the device of other jobs, or use --device cpu")
        device = str(loaded.device) if loaded.device.type != "cpu" or isinstance(e, MemoryError) else None
        wrapped = device_memory_error(e, device=device, hint=hint)
        if wrapped is None:
            raise
        raise wrapped from e


def _parse_crop_fractions(text: str | None) -> tuple[float, ...] | None:
    from neurflow_graph.errors import InputError

    values = parse_floats(text, name="crop-fractions")
    if values is None:
        return None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise InputError(f"--crop-fractions must be comma-separated numbers in (0, 1], got {text!r}")
    return values


def _parse_tau_layer(text: str) -> tuple[str, int]:
    from neurflow_graph.errors import InputError

    layer, sep, value = text.rpartition("=")
    layer = layer.strip()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not sep or not layer or n < 1:
        raise InputError(f"--tau-layer must be LAYER=N with N a positive integer, got {text!r}")
    return layer, n


def _check_tau_layers(pairs: list[tuple[str, int]], layers: list[str]) -> dict[str, int]:
    from neurflow_graph.errors import InputError

    for layer, _ in pairs:
        if layer not in layers[1:]:
            raise InputError(f"--tau-layer names {layer!r}, which is not an analysed layer below the logit layer; "
                             f"use one of {', '.join(layers[1:])}")
    return dict(pairs)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _run_dirs(out: Path, classes: list[tuple[int, str]], *, nested: bool = False) -> dict[int, Path]:
    """One class: ``out``. Several (or ``nested``): ``out/<slug>`` each (index appended where slugs collide)."""
    if len(classes) == 1 and not nested:
        return {classes[0][0]: out}
    slugs = {i: _slug(name) or f"class-{i}" for i, name in classes}
    counts: dict[str, int] = {}
    for s in slugs.values():
        counts[s] = counts.get(s, 0) + 1
    return {i: out / (s if counts[s] == 1 else f"{s}-{i}") for i, s in slugs.items()}
