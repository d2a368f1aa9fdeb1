"""Executors: run a many-class extraction (one run directory per class) in this process or on Ray.

``run_sequential`` (this process, one class after the other, one shared model) and ``run_ray``
(one Ray task per class; ``pip install 'neurflow-graph[ray]'``) both take ``ClassJob``s and return
``ClassOutcome``s; a class that fails is an outcome, never the end of the others.
``many.plan_jobs`` decides, before any work, which classes run and which are already finished.
See docs/scale.md.
"""

from neurflow_graph.executors.jobs import (
    DONE, FAILED, NO_IMAGES, SKIPPED, ClassJob, ClassOutcome, finished_run_matches, run_class,
)
from neurflow_graph.executors.sequential import run_sequential

__all__ = ["DONE", "FAILED", "NO_IMAGES", "SKIPPED", "ClassJob", "ClassOutcome", "finished_run_matches",
           "run_class", "run_sequential"]
