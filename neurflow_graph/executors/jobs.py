"""One class of a many-class extraction: the job, its outcome, and the work itself.

Both executors (``sequential``, ``ray_executor``) run :func:`run_class` once per class. A class's
run directory follows the single-class rules of ``extraction.rundir``: checkpoints while it runs,
``circuit.json`` written last and atomically, so a class that dies mid-way leaves an *unfinished*
run directory that ``ingest`` never reads as a run.

Test-only fault injection (documented in docs/scale.md): with
``NEURFLOW_FAULT_KILL=CLASS:TIMES:DIR`` in the environment of the process that *plans* the run
(the CLI), the worker explaining class ``CLASS`` (its name) SIGKILLs itself as soon as that
class's activation scan checkpoint exists, on its first ``TIMES`` attempts (attempts are counted
by files in ``DIR``). It is how the tests kill a Ray worker mid-class; nothing else reads it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

FAULT_ENV = "NEURFLOW_FAULT_KILL"

DONE, SKIPPED, FAILED, NO_IMAGES = "done", "skipped", "failed", "no-images"


@dataclass(frozen=True)
class ClassJob:
    """One class to explain: ``images`` is its D_c (ImageRecords), ``run_dir`` its own folder."""

    index: int
    name: str
    run_dir: Path
    images: tuple[Any, ...] = ()
    memory_budget: int | None = None  # bytes (--memory-budget); None: sized from the worker's device
    scan_layout: str = "eager"  # --scan-layout (extraction.scan_layout)


@dataclass
class ClassOutcome:
    """What became of one class. ``status``: done, skipped (a finished run of the same extraction
    was already there), failed (``error`` is the one-line reason) or no-images (``--class all``
    only: no image is classified as the class)."""

    index: int
    name: str
    run_dir: Path
    status: str
    n_images: int = 0
    neurons: int = 0
    groups: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    worker: str = field(default="")

    def line(self) -> str:
        """The per-class summary line (stdout for done classes, as single-class extract prints)."""
        head = f"{self.name} ({self.index}): {self.run_dir}"
        if self.status == DONE:
            return (f"{head}  {self.neurons} neurons, {self.groups} groups, {self.n_images} images, "
                    f"{self.seconds:.1f} s")
        if self.status == SKIPPED:
            return f"{head}  already finished (same extraction), skipped"
        if self.status == NO_IMAGES:
            return f"{head}  no image is classified as it, skipped"
        return f"{head}  FAILED: {self.error}"


def run_class(*, model: Any, job: ClassJob, params: Any, resume: bool, progress: bool,
              fault: str | None = None) -> ClassOutcome:
    """Extract one class into ``job.run_dir``; errors the user or the machine caused become a
    failed outcome (one line), KeyboardInterrupt propagates. ``fault``: see the module doc."""
    from neurflow_graph.errors import NeurflowError, device_memory_error

    from neurflow_graph.extraction import extract_circuit  # looked up per call (tests stand in an engine)

    start = time.perf_counter()
    watcher = _arm_fault(fault, job)
    try:
        circuit = extract_circuit(model=model, images=list(job.images), class_index=job.index, params=params,
                                   run_dir=job.run_dir, resume=resume, progress=progress,
                                   memory_budget=job.memory_budget, scan_layout=job.scan_layout)
    except NeurflowError as e:
        return _failed(job, str(e), e.exit_code, start)
    except (RuntimeError, MemoryError) as e:
        batch = getattr(params, "max_batch", None)
        wrapped = device_memory_error(e, device=str(model.device),
                                      hint=f"rerun with a smaller --max-batch (now {batch}) and --resume")
        if wrapped is None:
            return _failed(job, f"{type(e).__name__}: {e} (a bug in neurflow-graph; please report it)", 1, start)
        return _failed(job, str(wrapped), wrapped.exit_code, start)
    except Exception as e:  # a bug in one class must not take the other classes down; it is reported
        return _failed(job, f"{type(e).__name__}: {e} (a bug in neurflow-graph; please report it)", 1, start)
    finally:
        if watcher is not None:
            watcher.set()
    return ClassOutcome(index=job.index, name=job.name, run_dir=job.run_dir, status=DONE, n_images=len(job.images),
                        neurons=len(circuit.neurons), groups=len(circuit.neuron_groups),
                        seconds=time.perf_counter() - start, worker=f"pid {os.getpid()}")


def _failed(job: ClassJob, message: str, code: int, start: float) -> ClassOutcome:
    return ClassOutcome(index=job.index, name=job.name, run_dir=job.run_dir, status=FAILED, n_images=len(job.images),
                        seconds=time.perf_counter() - start, error=" ".join(message.split()), exit_code=code,
                        worker=f"pid {os.getpid()}")


def fault_from_env() -> str | None:
    """The test-only fault spec, read where the run is planned (so it reaches remote workers as an argument)."""
    return os.environ.get(FAULT_ENV) or None


def _arm_fault(fault: str | None, job: ClassJob) -> threading.Event | None:
    """Start the test-only killer thread when ``fault`` names this job's class (module doc)."""
    if not fault:
        return None
    name, times, folder = fault.split(":", 2)
    if name != job.name:
        return None
    marks = Path(folder)
    marks.mkdir(parents=True, exist_ok=True)
    attempt = len(list(marks.glob(f"{name}.attempt-*"))) + 1
    (marks / f"{name}.attempt-{attempt}").write_text(str(os.getpid()))
    if attempt > int(times):
        return None
    stop = threading.Event()
    scan = Path(job.run_dir) / "checkpoints" / "scan.npz"

    def kill_when_scanned() -> None:
        while not stop.wait(0.002):
            if scan.is_file():
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_when_scanned, daemon=True).start()
    return stop


# ---------------------------------------------------------------------------- planning


def finished_run_matches(run_dir: Path, *, model: Any, class_index: int, params_json: dict[str, Any],
                         image_hashes: Sequence[str]) -> str | None:
    """None when ``run_dir/circuit.json`` is the same extraction (model, layers, weights, class,
    parameters, D_c), else what differs (one phrase)."""
    from neurflow_graph.errors import RunFormatError

    path = Path(run_dir) / "circuit.json"
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunFormatError(f"{path} cannot be read ({e}); --force replaces the run") from e
    m = head.get("model", {})
    if m.get("name") != model.spec.name or list(m.get("layers", [])) != list(model.spec.layers) \
            or m.get("weights_sha256") != getattr(model, "weights_sha256", None):
        return "the model, its layers or its weights differ"
    if int(head.get("class", {}).get("index", -1)) != int(class_index):
        return "the class differs"
    if head.get("params") != json.loads(json.dumps(params_json)):
        return "the extraction parameters differ"
    if [i.get("sha256") for i in head.get("images", [])] != list(image_hashes):
        return "the images of the class differ"
    return None
