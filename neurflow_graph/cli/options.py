"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

DEFAULT_STORE = "embedded:./neurflow-data"


def trust_pickle_option(f):
    return click.option("--trust-pickle", is_flag=True,
                        help="Allow a --weights file that is not plain tensors (e.g. a pickled nn.Module). "
                             "Unpickling can run code the file carries: only for files you trust.")(f)


def model_options(f):
    """--model/--weights/--layers/--input-size/--mean/--std/--trust-pickle, as used by `extract` and friends."""
    decorators = [
        click.option("--model", "model", required=True,
                     help="Registry name (resnet50, googlenet, alexnet, resnet18, demo), package.module:factory "
                          "or path/to/file.py:factory."),
        click.option("--weights", default=None,
                     help="DEFAULT (torchvision's pretrained enum), a .pt/.pth file (state_dict or checkpoint), or omit for random init."),
        click.option("--layers", default=None,
                     help="Comma-separated layer names top->bottom (first = logit layer). Default: the registry's "
                          "list. `neurflow-graph layers --model M` lists them."),
        click.option("--input-size", type=int, default=None, help="Square input side in pixels (custom models)."),
        click.option("--mean", default=None, help="Normalization mean, comma-separated per channel (custom models)."),
        click.option("--std", default=None, help="Normalization std, comma-separated per channel (custom models)."),
        trust_pickle_option,
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


PASSWORD_ENV = "NEO4J_PASSWORD"


def _no_password_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The password comes from NEO4J_PASSWORD (or a prompt), never from argv: process lists show argv."""
    from click.core import ParameterSource

    from neurflow_graph.errors import InputError

    if value is not None and ctx.get_parameter_source(param.name or "password") == ParameterSource.COMMANDLINE:
        raise InputError(f"--password is not accepted on the command line (other users see it in process "
                         f"lists); set {PASSWORD_ENV} in the environment, or leave it unset to be prompted")
    return value


def _store_url_without_password(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from click.core import ParameterSource

    from neurflow_graph.errors import InputError
    from neurflow_graph.store.url import parse_store_url, redact_url

    if value and ctx.get_parameter_source(param.name or "store_url") == ParameterSource.COMMANDLINE:
        parsed = parse_store_url(value)
        if parsed.password is not None:
            raise InputError(f"--store {redact_url(value)} carries a password on the command line (other users "
                             f"see it in process lists); drop it from the URL and set {PASSWORD_ENV}, or leave "
                             "it unset to be prompted")
    return value


def _interactive() -> bool:
    """Whether a prompt can be answered (stdin is a terminal)."""
    import sys

    return sys.stdin.isatty()


def resolve_password(*, store_url: str, username: str | None, password: str | None) -> str | None:
    """The Neo4j password: NEO4J_PASSWORD (already in ``password``) or one in a NEURFLOW_STORE URL,
    else an interactive prompt when stdin is a terminal; None for the embedded store."""
    from neurflow_graph.store.url import parse_store_url

    if password is not None:
        return password
    try:
        parsed = parse_store_url(store_url)
    except Exception:  # a bad URL is reported by open_store, in one line
        return None
    if parsed.kind != "neo4j" or parsed.password is not None or not _interactive():
        return None
    user = username or parsed.username or "neo4j"
    return click.prompt(f"Neo4j password for {user} at {parsed.display}", hide_input=True, err=True)


def store_options(f):
    """--store/--database/--username, and the password from NEO4J_PASSWORD or a prompt (never argv).

    The command still receives ``password`` (None for the embedded store or when nothing was given
    and there is no terminal to ask on)."""
    import functools

    @functools.wraps(f)
    def with_password(*args, **kwargs):
        kwargs["password"] = resolve_password(store_url=kwargs.get("store_url") or DEFAULT_STORE,
                                              username=kwargs.get("username"), password=kwargs.get("password"))
        return f(*args, **kwargs)

    decorators = [
        click.option("--store", "store_url", envvar="NEURFLOW_STORE", default=DEFAULT_STORE, show_default=True,
                     callback=_store_url_without_password,
                     help="embedded:PATH (FalkorDB, started on demand) or neo4j://, bolt://, neo4j+s:// URL "
                          "(env NEURFLOW_STORE)."),
        click.option("--database", envvar="NEO4J_DATABASE", default=None,
                     help="Database (Neo4j) or graph name (embedded). Default: neo4j / neurflow."),
        click.option("--username", envvar="NEO4J_USERNAME", default=None, help="Neo4j user (env NEO4J_USERNAME)."),
        # Hidden: only its environment variable is read; typed on the command line it is refused.
        click.option("--password", envvar=PASSWORD_ENV, default=None, hidden=True, expose_value=True,
                     callback=_no_password_argument),
    ]
    wrapped = with_password
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return wrapped


def run_model_options(f):
    """--runs-dir, --model and --weights of the commands that re-load a stored run's model
    (debug, evaluate): where the run directory of a uid is, and which model and weights to load."""
    decorators = [
        click.option("--runs-dir", "runs_dirs", multiple=True, type=click.Path(),
                     help="Where to look for the run directory of a uid (default: the embedded store's runs/)."),
        click.option("--model", default=None, help="Model (default: the run's); for custom models."),
        click.option("--weights", default=None, help="Weights of the run's model (default: the registry default)."),
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
