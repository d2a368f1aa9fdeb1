"""The sequential executor: every class in this process, one after the other, sharing one loaded model."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from neurflow_graph.executors.jobs import DONE, ClassJob, ClassOutcome, fault_from_env, run_class


def run_sequential(*, model: Any, jobs: Sequence[ClassJob], params: Any, resume: bool, progress: bool,
                   on_start: Callable[[ClassJob], None] | None = None,
                   on_outcome: Callable[[ClassOutcome], None] | None = None) -> list[ClassOutcome]:
    """Run ``jobs`` in order; a failed class is reported (its outcome) and the next one starts.

    Ctrl-C raises :class:`~neurflow_graph.errors.Interrupted` naming the class and the layer
    ``--resume`` continues from (the classes before it are complete)."""
    from neurflow_graph.errors import Interrupted
    from neurflow_graph.extraction.rundir import resume_point

    fault = fault_from_env()
    outcomes: list[ClassOutcome] = []
    for job in jobs:
        if on_start is not None:
            on_start(job)
        try:
            outcome = run_class(model=model, job=job, params=params, resume=resume, progress=progress, fault=fault)
        except KeyboardInterrupt:
            point = resume_point(job.run_dir, model.spec.layers)
            done = [o.name for o in outcomes if o.status == DONE]
            kept = f"; finished: {', '.join(done)}" if done else ""
            raise Interrupted(f"interrupted; rerun the same command with --resume to continue from {point} "
                              f"(class {job.name}{kept})") from None
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes
