"""Many classes in one ``extract``: which classes, where each run goes, what is already done, the summary.

Used by ``neurflow-graph extract`` when it explains more than one class (several ``--class``,
``--class all`` or ``--classes-file FILE``). Layout: ``--out/<class-name-slug>/`` per class. A
class whose run directory already holds a finished run *of the same extraction* (model, layers,
weights, class, parameters and images) is skipped, so re-running a command finishes only what is
missing; ``--force`` recomputes it, ``--resume`` continues unfinished ones, ``--restart`` starts them
over (the single-class rules of ``extraction.rundir.check_out_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from neurflow_graph.executors.jobs import (
    DONE, FAILED, NO_IMAGES, SKIPPED, ClassJob, ClassOutcome, finished_run_matches,
)

ALL = "all"
EXECUTORS = ("sequential", "ray")


def resolve_classes(*, model: Any, classes: Sequence[str], classes_file: str | None) -> tuple[list[int], bool]:
    """``--class`` values and ``--classes-file`` lines -> class indices (first occurrence order), and
    whether ``--class all`` was given. Every name is checked before anything runs; the first bad
    one is an InputError naming the file line and close names."""
    from neurflow_graph.datasets.images import resolve_class
    from neurflow_graph.errors import InputError

    texts = [t for t in classes]
    every = any(t.strip().lower() == ALL for t in texts)
    if every and (len(texts) > 1 or classes_file):
        raise InputError("--class all already names every class; drop the other --class / --classes-file")
    if not texts and not classes_file:
        raise InputError("give the classes to explain: --class C (repeatable), --class all, or --classes-file FILE")
    if every:
        n = model.num_classes
        if n is None:
            raise InputError(f"--class all: {model.spec.name} declares no classes and its logit layer's width is "
                             "unknown; list them with --classes-file FILE or --class N")
        return list(range(n)), True
    indices: list[int] = []
    for text in texts:
        _add(indices, resolve_class(model=model, text=text))
    if classes_file:
        path = Path(classes_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise InputError(f"--classes-file {path}: {e.strerror or e}; give a text file with one class name or "
                             "index per line") from e
        found = False
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            found = True
            try:
                _add(indices, resolve_class(model=model, text=text))
            except InputError as e:
                raise InputError(f"--classes-file {path} line {number}: {e}") from e
        if not found:
            raise InputError(f"--classes-file {path} names no class; write one class name or index per line")
    return indices, False


def _add(indices: list[int], index: int) -> None:
    if index not in indices:
        indices.append(index)


def check_run_dirs(run_dirs: dict[int, Path], *, resume: bool, restart: bool, force: bool) -> set[int]:
    """``check_out_dir`` for each class, except that a finished run is not an error: it is returned
    as a candidate to skip (checked against the extraction by :func:`plan_jobs`), unless ``force``."""
    from neurflow_graph.extraction.rundir import check_out_dir, run_dir_state

    finished: set[int] = set()
    for i, d in run_dirs.items():
        if not force and run_dir_state(d).kind == "finished":
            finished.add(i)
            continue
        check_out_dir(d, resume=resume, restart=restart, force=force)
    return finished


def plan_jobs(*, model: Any, indices: Sequence[int], run_dirs: dict[int, Path], finished: set[int],
              records: Sequence[Any], predictions: Sequence[int], every: bool, params: Any
              ) -> tuple[list[ClassJob], list[ClassOutcome]]:
    """The jobs to run and the classes settled without running (skipped, or no images for
    ``--class all``). A listed class no image is classified as is an ImageError (exit 2) before
    anything runs, as for one class; so is a finished run of a *different* extraction."""
    from neurflow_graph.datasets.images import select_class_images
    from neurflow_graph.errors import RunDirError

    jobs: list[ClassJob] = []
    settled: list[ClassOutcome] = []
    for i in indices:
        name, d = model.class_name(i), run_dirs[i]
        chosen = [r for r, p in zip(records, predictions) if p == i]
        if not chosen:
            if every:
                settled.append(ClassOutcome(index=i, name=name, run_dir=d, status=NO_IMAGES))
                continue
            select_class_images(model=model, images=records, class_index=i, predictions=predictions)  # raises
        if i in finished:
            differs = finished_run_matches(d, model=model, class_index=i, params_json=params.to_json(),
                                           image_hashes=[r.sha256 for r in chosen])
            if differs is not None:
                raise RunDirError(f"--out {d} holds a finished run of a different extraction ({differs}); "
                                  "choose another --out, or --force to replace it")
            settled.append(ClassOutcome(index=i, name=name, run_dir=d, status=SKIPPED, n_images=len(chosen)))
            continue
        jobs.append(ClassJob(index=i, name=name, run_dir=d, images=tuple(chosen)))
    return jobs, settled


def run_jobs(*, executor: str, model: Any, jobs: Sequence[ClassJob], params: Any, resume: bool, progress: bool,
             address: str | None, gpus_per_task: float | None, max_retries: int,
             echo: Callable[..., None]) -> list[ClassOutcome]:
    """Run ``jobs`` with ``executor``, printing a progress line per class to stderr and each
    finished class's summary line to stdout."""
    total = len(jobs)
    count = {"started": 0, "ended": 0}

    def on_start(job: ClassJob) -> None:
        count["started"] += 1
        verb = "submitted" if executor == "ray" else "started"
        echo(f"[{count['started']}/{total}] {verb} class {job.name!r} ({job.index}): {len(job.images)} images "
             f"-> {job.run_dir}", err=True)

    def on_outcome(o: ClassOutcome) -> None:
        count["ended"] += 1
        where = f" [{o.worker}]" if executor == "ray" and o.worker else ""
        if o.status == DONE:
            echo(f"[{count['ended']}/{total}] done class {o.name!r}{where}", err=True)
            echo(o.line())
        else:
            echo(f"[{count['ended']}/{total}] failed class {o.name!r}{where}: {o.error}", err=True)

    if not jobs:
        return []
    if executor == "ray":
        from neurflow_graph.executors.ray_executor import run_ray

        return run_ray(model=model, jobs=jobs, params=params, resume=resume, address=address,
                       gpus_per_task=gpus_per_task, max_retries=max_retries, on_start=on_start,
                       on_outcome=on_outcome)
    from neurflow_graph.executors.sequential import run_sequential

    return run_sequential(model=model, jobs=jobs, params=params, resume=resume, progress=progress,
                          on_start=on_start, on_outcome=on_outcome)


def finish(outcomes: Sequence[ClassOutcome], *, echo: Callable[..., None]) -> None:
    """Print the summary (stderr); PartialFailure (exit 4) when a class failed."""
    from neurflow_graph.errors import PartialFailure

    by = {s: [o for o in outcomes if o.status == s] for s in (DONE, SKIPPED, NO_IMAGES, FAILED)}
    parts = [f"{len(by[DONE])} done", f"{len(by[SKIPPED])} already finished (skipped)"]
    if by[NO_IMAGES]:
        shown = ", ".join(o.name for o in by[NO_IMAGES][:5]) + (", ..." if len(by[NO_IMAGES]) > 5 else "")
        parts.append(f"{len(by[NO_IMAGES])} without images ({shown})")
    parts.append(f"{len(by[FAILED])} failed")
    echo(f"{len(outcomes)} classes: " + ", ".join(parts), err=True)
    failed = by[FAILED]
    if failed:
        first = failed[0]
        raise PartialFailure(f"{len(failed)} of {len(outcomes)} classes failed ({', '.join(o.name for o in failed)}); "
                             f"the others are complete. First: {first.name}: {first.error}. Rerun the same "
                             "command with --resume to redo only the unfinished ones")
