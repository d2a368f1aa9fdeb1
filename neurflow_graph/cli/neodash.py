"""``neurflow-graph neodash --out dashboard.json``: a NeoDash dashboard of the query library."""

from __future__ import annotations

import click


@click.command("neodash")
@click.option("--out", "out", required=True, help="Dashboard file to write (load it in NeoDash: Load -> from file).")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Initial value of a query parameter (e.g. -p model=resnet50 -p class=bee); repeatable.")
def command(out: str, params: tuple[str, ...]) -> None:
    """Write a NeoDash 2.4 dashboard whose reports are the library's queries, verbatim."""
    import json
    from pathlib import Path

    from neurflow_graph.errors import InputError
    from neurflow_graph.fileio import atomic_write
    from neurflow_graph.queries.library import parse_assignments
    from neurflow_graph.web.neodash import build_dashboard

    values = parse_assignments(params)
    doc = build_dashboard(values=values)
    unknown = sorted(set(values) - _declared())
    if unknown:
        raise InputError(f"no library query takes a parameter {unknown[0]!r}")
    target = Path(out)
    if not target.parent.is_dir():
        raise InputError(f"the folder {target.parent} does not exist; create it or choose another --out")
    atomic_write(target, lambda f: json.dump(doc, f, indent=1), mode="w")
    n = sum(len(p["reports"]) for p in doc["pages"])
    click.echo(f"{target}: {n} reports on {len(doc['pages'])} pages")


def _declared() -> set[str]:
    from neurflow_graph.queries.library import list_queries

    return {p.name for q in list_queries() for p in q.params}
