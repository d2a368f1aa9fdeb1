"""The Ray executor: one Ray task per class, GPUs assigned by Ray, each task writing its own run directory.

The driver (the CLI) loads the model once and puts it in Ray's object store; every task gets it
from there, moves it to its device (``cuda`` when the task holds a GPU: Ray sets
``CUDA_VISIBLE_DEVICES`` for it), and runs :func:`~neurflow_graph.executors.jobs.run_class`. A
worker that dies (killed, out of host memory, node lost) is retried by Ray up to ``max_retries``
times; a retry starts its class over, so its run directory is never half-written: until
``circuit.json`` is renamed into place it holds only checkpoints, which ``ingest`` does not read.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from neurflow_graph.executors.jobs import FAILED, ClassJob, ClassOutcome, fault_from_env, run_class

INSTALL_HINT = "--executor ray needs Ray; install it with pip install 'neurflow-graph[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or InputError (exit 2) with the install command."""
    from neurflow_graph.errors import InputError

    try:
        import ray
    except ImportError as e:
        raise InputError(INSTALL_HINT) from e
    return ray


REACH_TIMEOUT_S = 5.0


def check_address(address: str, *, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Refuse an unreachable ``--address`` in seconds (InputError, exit 2), before ``ray.init``.

    ``ray.init`` retries a dead address for minutes. ``auto`` (find the local cluster) and an empty
    string are left to Ray; ``HOST:PORT`` (a head's GCS) and ``ray://HOST:PORT`` (Ray Client) are
    probed with one TCP connection."""
    from neurflow_graph.errors import InputError

    target = address.strip()
    if not target or target == "auto":
        return
    if target.startswith("ray://"):
        target = target[len("ray://"):]
    elif "://" in target:
        raise InputError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    host, sep, port_text = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto "
                         "(`ray start --head` prints the address)")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise InputError(f"no Ray cluster answers at --address {address} ({reason}); start one with "
                         "`ray start --head` and pass the address it prints") from e


def _class_task(model: Any, job: ClassJob, params: Any, resume: bool, device: str, fault: str | None
                ) -> ClassOutcome:
    """Body of one Ray task (runs in a worker process)."""
    import ray
    import torch

    if device != "cpu":
        dev = torch.device(device)
        model = replace(model, module=model.module.to(dev), device=dev)
    outcome = run_class(model=model, job=job, params=params, resume=resume, progress=False, fault=fault)
    ctx = ray.get_runtime_context()
    gpus = ctx.get_accelerator_ids().get("GPU", [])
    outcome.worker = f"node {ctx.get_node_id()[:8]} pid {outcome.worker.split()[-1]}" + (
        f" gpu {','.join(map(str, gpus))}" if gpus else "")
    return outcome


def run_ray(*, model: Any, jobs: Sequence[ClassJob], params: Any, resume: bool, address: str | None = None,
            gpus_per_task: float | None = None, cpus_per_task: float = 1.0, max_retries: int = 2,
            on_start: Callable[[ClassJob], None] | None = None,
            on_outcome: Callable[[ClassOutcome], None] | None = None) -> list[ClassOutcome]:
    """Run ``jobs`` as Ray tasks (one per class) and return their outcomes in ``jobs`` order.

    ``address``: a running cluster (``ray start --head`` prints it; ``auto`` finds the local one);
    None starts a local Ray for this call (or uses one already initialised in this process).
    ``gpus_per_task``: None = 1 when the cluster has GPUs, else 0. A class whose worker died more
    than ``max_retries`` times is a failed outcome; the other classes complete."""
    from neurflow_graph.errors import InputError, Interrupted

    ray = import_ray()
    if address:
        check_address(address)
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except Exception as e:  # ConnectionError, a timeout, Ray's own errors: the address or the cluster's state
            where = f"the Ray cluster at --address {address}" if address else "a local Ray"
            raise InputError(f"cannot start or connect to {where} ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}); start one with `ray start --head` and pass the "
                             "address it prints") from e
        started = True
    try:
        if gpus_per_task is None:
            gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        device = "cuda" if gpus_per_task > 0 else "cpu"
        module = model.module.to("cpu") if str(model.device) != "cpu" else model.module
        import torch

        model_ref = ray.put(replace(model, module=module, device=torch.device("cpu")))
        task = ray.remote(_class_task).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                                               max_retries=max_retries, retry_exceptions=False)
        fault = fault_from_env()
        pending: dict[Any, ClassJob] = {}
        for job in jobs:
            pending[task.remote(model_ref, job, params, resume, device, fault)] = job
            if on_start is not None:
                on_start(job)
        outcomes: dict[int, ClassOutcome] = {}
        t0 = time.perf_counter()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except ray.exceptions.RayError as e:
                    reason = " ".join(str(e).split())[:300]
                    outcome = ClassOutcome(index=job.index, name=job.name, run_dir=job.run_dir, status=FAILED,
                                           n_images=len(job.images), seconds=time.perf_counter() - t0,
                                           error=f"its Ray worker died {max_retries + 1} time(s) "
                                                 f"({type(e).__name__}: {reason}); the run directory holds no "
                                                 "circuit (unfinished)", exit_code=3)
                outcomes[job.index] = outcome
                if on_outcome is not None:
                    on_outcome(outcome)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            names = ", ".join(j.name for j in pending.values())
            raise Interrupted(f"interrupted; rerun the same command with --resume to continue "
                              f"(unfinished classes: {names})") from None
        return [outcomes[j.index] for j in jobs]
    finally:
        if started:
            ray.shutdown()
