"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

DEFAULT_STORE = "embedded:./neurflow-data"


def model_options(f):
    """--model/--weights/--layers/--input-size/--mean/--std, as used by `extract` and friends."""
    decorators = [
        click.option("--model", "model", required=True,
                     help="Registry name (resnet50, googlenet, alexnet, resnet18, demo) or package.module:factory."),
        click.option("--weights", default=None,
                     help="DEFAULT (torchvision's pretrained enum), a .pt/.pth file (state_dict or checkpoint), or omit for random init."),
        click.option("--layers", default=None,
                     help="Comma-separated layer names top->bottom (first = logit layer). Default: the registry's list."),
        click.option("--input-size", type=int, default=None, help="Square input side in pixels (custom models)."),
        click.option("--mean", default=None, help="Normalization mean, comma-separated per channel (custom models)."),
        click.option("--std", default=None, help="Normalization std, comma-separated per channel (custom models)."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def store_options(f):
    """--store/--database/--username/--password; credentials default to Neo4j's env conventions."""
    decorators = [
        click.option("--store", "store_url", envvar="NEURFLOW_STORE", default=DEFAULT_STORE, show_default=True,
                     help="embedded:PATH (FalkorDB, started on demand) or neo4j://, bolt://, neo4j+s:// URL."),
        click.option("--database", envvar="NEO4J_DATABASE", default=None,
                     help="Database (Neo4j) or graph name (embedded). Default: neo4j / neurflow."),
        click.option("--username", envvar="NEO4J_USERNAME", default=None, help="Neo4j user (env NEO4J_USERNAME)."),
        click.option("--password", envvar="NEO4J_PASSWORD", default=None,
                     help="Neo4j password (env NEO4J_PASSWORD). Never printed."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def device_option(f):
    return click.option("--device", default=None,
                        help="cpu or cuda (default: cuda when available, else cpu).")(f)


def parse_floats(text: str | None, *, name: str) -> tuple[float, ...] | None:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406); raises InputError on junk."""
    from neurflow_graph.errors import InputError

    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise InputError(f"--{name} must be comma-separated numbers, got {text!r}") from e
