"""Command-line entry point: ``neurflow-graph``.

The group is thin. Each command lives in its own module ``neurflow_graph/cli/<name>.py``
exposing a click command named ``command``; modules are imported lazily so
``neurflow-graph --help`` stays fast and a heavy import (torch) is paid only by
the commands that need it.
"""

from __future__ import annotations

import importlib
import sys

import click

from neurflow_graph import __version__
from neurflow_graph.errors import NeurflowError

# command name -> module under neurflow_graph.cli
COMMANDS: dict[str, str] = {
    "world": "world",
    "demo-model": "demo_model",
    "extract": "extract",
    "ingest": "ingest",
    "runs": "runs",
    "delete-run": "delete_run",
    "query": "query",
    "cypher": "cypher",
    "export": "export",
    "store": "store",
    "demo": "demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"neurflow_graph.cli.{module}").command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NeurflowError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="neurflow-graph")
def cli() -> None:
    """NeurFlow circuits of vision classifiers, stored in a graph and queried with Cypher."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="neurflow-graph")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
