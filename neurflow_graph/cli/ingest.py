"""``neurflow-graph ingest RUN_DIR...``: circuits into the graph store (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from neurflow_graph.cli.options import store_options

if TYPE_CHECKING:
    from neurflow_graph.store.ingest import WaitInfo


def wait_message(info: "WaitInfo") -> str | None:
    """The stderr line for one report of waiting for another ingest of the same run (None: no line;
    only the start and the end of a wait are printed)."""
    run, limit = f"run {info.run_uid}", f"{info.stale_after_s:.0f} s"
    if info.state == "started":
        age = "" if info.heartbeat_age_s is None else f" (its heartbeat is {info.heartbeat_age_s:.0f} s old)"
        return (f"waiting for another ingest of {run}{age}: this one goes on when that one completes the run, "
                f"or takes it over once that one sends no heartbeat for {limit}")
    waited = f"after {info.waited_s:.0f} s of waiting"
    if info.state == "completed":
        return f"{run}: the other ingest completed it ({waited})"
    if info.state == "released":
        return f"{run}: the other ingest gave it up (it failed); taking it over ({waited})"
    if info.state == "stale":
        return f"{run}: the other ingest sent no heartbeat for {limit} (it stopped); taking it over ({waited})"
    return None


@click.command("ingest")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_options
@click.option("--force", is_flag=True, help="Rewrite runs that are already complete (they stay visible meanwhile).")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows per UNWIND write.")
def command(run_dirs: tuple[Path, ...], store_url: str, database: str | None, username: str | None,
            password: str | None, force: bool, batch_size: int) -> None:
    """Ingest run directories (or parents of run directories) into the store.

    Runs are streamed: each is read and validated completely before any of its writes, and only
    one is in memory at a time; a run directory's annotations.jsonl is written after its circuit.
    A run becomes visible to queries only once all of it is written; re-running the command
    finishes an interrupted ingest (and repairs `latest`) and never duplicates anything. One
    summary line is printed per run. An ingest that finds another ingest of the same run writing
    it waits for that one (it completes the run, or is taken over after 60 s without a heartbeat)
    and says so on stderr when the wait starts and ends.
    """
    from neurflow_graph.store.ingest import find_run_dirs, ingest_runs, iter_runs
    from neurflow_graph.store.url import open_store

    unfinished: list[Path] = []
    # A wrong path stops the command before the store opens; so does an unfinished run named
    # directly. Unfinished runs beside finished ones under a parent are reported at the end (exit 4).
    found = find_run_dirs(run_dirs, unfinished_out=unfinished)
    runs = iter_runs(found)
    store = open_store(store_url, database=database, username=username, password=password)
    try:
        results = ingest_runs(store=store, runs=runs, force=force, batch_size=batch_size,
                              on_result=lambda r: click.echo(r.summary()), validated=True, on_wait=_echo_wait)
    finally:
        store.close()
    written = [r for r in results if not r.skipped]
    if len(results) > 1:
        rels = sum(r.relationships for r in written)
        secs = sum(r.seconds for r in written)
        rate = f" ({rels / secs:,.0f} rel/s)" if secs > 0 else ""
        click.echo(f"{len(written)} of {len(results)} runs written into {store.display_url}: "
                   f"{rels} relationships in {secs:.2f}s{rate}")
    if unfinished:
        from neurflow_graph.errors import PartialFailure

        shown = ", ".join(map(str, unfinished[:3])) + (", ..." if len(unfinished) > 3 else "")
        raise PartialFailure(f"{len(unfinished)} unfinished run director{'y' if len(unfinished) == 1 else 'ies'} "
                             f"not ingested ({shown}: no circuit.json; the extraction failed, was interrupted or "
                             f"is still running); the {len(results)} finished run(s) are ingested. Finish them "
                             "with `neurflow-graph extract ... --resume`, then ingest again")


def _echo_wait(info: "WaitInfo") -> None:
    line = wait_message(info)
    if line is not None:
        click.echo(line, err=True)
