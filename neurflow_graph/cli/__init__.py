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
from neurflow_graph.errors import Interrupted, NeurflowError, device_memory_error, os_error

# command name -> module under neurflow_graph.cli
COMMANDS: dict[str, str] = {
    "world": "world",
    "demo-model": "demo_model",
    "extract": "extract",
    "ingest": "ingest",
    "annotate": "annotate",
    "runs": "runs",
    "delete-run": "delete_run",
    "query": "query",
    "cypher": "cypher",
    "export": "export",
    "store": "store",
    "demo": "demo",
    "directions": "directions",
    "layers": "layers",
    "exemplars": "exemplars",
    "draw": "draw",
    "serve": "serve",
    "report": "report",
    "neodash": "neodash",
    "label": "label",
    "debug": "debug",
    "evaluate": "evaluate",
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
        """Run the command; every failure a user can meet becomes one line and an exit code.

        Project errors print ``Error: <message>`` (their ``exit_code``: 2 input, 3 environment);
        OSErrors and out-of-memory errors that reach here are wrapped the same way (naming the
        file or the device); Ctrl-C prints how to continue and exits 130. Anything else is a bug
        and keeps its traceback. See docs/errors.md."""
        try:
            return super().invoke(ctx)
        except NeurflowError as e:
            _fail(ctx, e)
        except KeyboardInterrupt:
            _fail(ctx, Interrupted(INTERRUPT_HINTS.get(ctx.invoked_subcommand or "", "interrupted")))
        except OSError as e:
            _fail(ctx, os_error(e))
        except (RuntimeError, MemoryError) as e:
            wrapped = device_memory_error(e)
            if wrapped is None:
                raise
            _fail(ctx, wrapped)


# What Ctrl-C prints per command when the command itself does not say more (`extract` names the
# layer to resume from). Every write is idempotent, so "rerun" is always safe.
INTERRUPT_HINTS: dict[str, str] = {
    "ingest": "interrupted; rerun the same ingest to finish (an unfinished run stays 'ingesting', "
              "never visible as complete)",
    "demo": "interrupted; rerun the same demo to continue (finished layers and runs are kept)",
}


def _fail(ctx: click.Context, e: NeurflowError) -> None:
    message = str(e).replace("\n", " ")
    click.echo(message if isinstance(e, Interrupted) else f"Error: {message}", err=True)
    ctx.exit(e.exit_code)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="neurflow-graph")
def cli() -> None:
    """NeurFlow circuits of vision classifiers, stored in a graph and queried with Cypher."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="neurflow-graph")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
