"""``neurflow-graph annotate --run UID FILE``: a user's own labels for a run's neuron groups."""

from __future__ import annotations

from pathlib import Path

import click

from neurflow_graph.cli.options import store_options


@click.command("annotate")
@click.option("--run", "run", required=True, help="Run uid or a unique prefix (see `neurflow-graph runs`).")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--source", default="user", show_default=True,
              help="Source recorded with each label (e.g. user, user:alice).")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write the labels to RUN_DIR/annotations.jsonl. Default: the directory recorded at ingest.")
@store_options
def command(run: str, file: Path, source: str, run_dir: Path | None, store_url: str, database: str | None,
            username: str | None, password: str | None) -> None:
    """Attach labels from FILE (JSON or CSV) to the run's neuron groups, as annotations.

    \b
    JSON: [{"uid": "<group uid>", "label": "..."}, {"layer": "conv3", "group": 2, "label": "..."}]
    CSV:  uid,label   or   layer,group,label   (a caption column is optional)

    Every group must exist in the run (else nothing is written, exit 2). The labels go to the
    store and to the run directory's annotations.jsonl, so a re-ingest keeps them; the run's uid
    never changes. Writing a group's label again from the same source replaces it.
    """
    from neurflow_graph.annotations import append_run_annotations, load_user_labels
    from neurflow_graph.errors import InputError
    from neurflow_graph.queries.names import resolve_run
    from neurflow_graph.store.annotations import user_label_annotations, write_annotations
    from neurflow_graph.store.url import open_store

    labels = load_user_labels(file)
    with open_store(store_url, database=database, username=username, password=password, create=False) as store:
        uid = resolve_run(store, run)
        notes = user_label_annotations(store=store, run_uid=uid, labels=labels, source=source)
        recorded = store.read("MATCH (r:Run {uid: $uid}) RETURN r.run_dir AS d", {"uid": uid})
        where = run_dir or (Path(recorded[0]["d"]) if recorded and recorded[0]["d"] else None)
        if where is not None and not where.is_dir():
            raise InputError(f"run directory {where} does not exist; give --run-dir (or move it back)")
        if where is not None:
            append_run_annotations(where, notes)  # first the file: a re-ingest then restores the store
        n = write_annotations(store=store, annotations=notes)
        store.checkpoint()
    groups = len({a.target for a in notes})
    dest = f" and {where / 'annotations.jsonl'}" if where is not None else \
        " (no run directory known: give --run-dir to keep them with the run)"
    click.echo(f"run {uid}: {n} annotations on {groups} groups (source {source!r}) written to the store{dest}")
