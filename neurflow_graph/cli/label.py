"""``neurflow-graph label --run UID``: concept labels from a multimodal LLM (Sec. 5.2, App. G).

See docs/labels.md. The endpoint is any OpenAI-compatible chat-completions server: the API key
comes from ``OPENAI_API_KEY`` only (never argv), the URL from ``--base-url`` or ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

from pathlib import Path

import click

from neurflow_graph.cli.options import store_options


def _progress():
    """One updating line on a terminal's stderr (nothing when stderr is not a terminal)."""
    import sys

    if not sys.stderr.isatty():
        return None
    done = [0]

    def show(outcome) -> None:
        done[0] += 1
        r = outcome.request
        click.echo(f"\r{done[0]} answered; last: {r.kind} {r.subject['layer']}/{r.subject['gid']} {outcome.status}"
                   "\x1b[K", err=True, nl=False)

    return show


@click.command("label")
@click.option("--run", "run", required=True, help="Run uid (or a unique prefix; see `neurflow-graph runs`).")
@click.option("--layer", "layers", multiple=True, help="Label only this layer's groups (repeat for more). Default: all.")
@click.option("--model-name", default=None, envvar="NEURFLOW_LABEL_MODEL",
              help="Model name sent to the endpoint. Default: gpt-4o, as the paper.")
@click.option("--base-url", default=None,
              help="Endpoint base URL, e.g. http://localhost:11434/v1. Default: $OPENAI_BASE_URL, else OpenAI's.")
@click.option("--max-requests", type=click.IntRange(min=0), default=None,
              help="Send at most N requests this time (cached answers are free); run again to continue.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests in flight at once.")
@click.option("--dry-run", is_flag=True, help="Send nothing: write the exact requests (JSON bodies and images) "
                                              "to RUN_DIR/labels/dry-run (or --dry-run-dir).")
@click.option("--dry-run-dir", type=click.Path(path_type=Path), default=None, help="Folder for --dry-run.")
@click.option("--children", type=click.IntRange(min=1), default=3, show_default=True,
              help="Formation: the strongest child groups shown with each group (Groups 2..N).")
@click.option("--evaluate", is_flag=True,
              help="Check the labels instead: held-out exemplars vs random patches, and the ground truth.")
@click.option("--positives", type=click.IntRange(min=1), default=4, show_default=True,
              help="--evaluate: held-out exemplars per group.")
@click.option("--negatives", type=click.IntRange(min=1), default=4, show_default=True,
              help="--evaluate: random patches per group.")
@click.option("--seed", type=int, default=0, show_default=True, help="--evaluate: seed of the mix.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=120.0, show_default=True,
              help="Seconds per HTTP attempt (the openai client's timeout).")
@click.option("--max-retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Retries on 429, 5xx, timeouts (the openai client's own backoff).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Response cache. Default: RUN_DIR/labels/cache.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="The run directory, when the store does not record it (runs ingested before it did).")
@store_options
def command(run: str, layers: tuple[str, ...], model_name: str | None, base_url: str | None,
            max_requests: int | None, concurrency: int, dry_run: bool, dry_run_dir: Path | None, children: int,
            evaluate: bool, positives: int, negatives: int, seed: int, timeout: float, max_retries: int,
            cache_dir: Path | None, run_dir: Path | None, store_url: str, database: str | None,
            username: str | None, password: str | None) -> None:
    """Caption each neuron group from its exemplar mosaic and explain how it forms from its children.

    Answers are cached on disk and stored as annotations (source mllm:<model name>); the run's
    identity never changes. Token usage is printed at the end.
    """
    from neurflow_graph.errors import Interrupted
    from neurflow_graph.labels.client import EndpointConfig, RequestFailed
    from neurflow_graph.labels.service import evaluate_run, label_run
    from neurflow_graph.store.url import open_store

    config = EndpointConfig.from_env(base_url=base_url, model=model_name, timeout=timeout, max_retries=max_retries)
    # the run must already be there: a wrong --store path is an error, never a new empty store
    store = open_store(store_url, database=database, username=username, password=password, create=False)
    common = dict(store=store, run=run, config=config, run_dir=run_dir, layers=list(layers) or None,
                  cache_dir=cache_dir, max_requests=max_requests, concurrency=concurrency,
                  dry_run_dir=dry_run_dir, dry_run=dry_run, progress=_progress())
    try:
        if evaluate:
            summary = evaluate_run(positives=positives, negatives=negatives, seed=seed, **common)
        else:
            summary = label_run(children=children, **common)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; every answer received is cached and stored: run the same command "
                          "again to continue (nothing is asked twice)") from None
    finally:
        store.close()
        if common["progress"] is not None:
            click.echo("", err=True)
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        raise RequestFailed(f"{len(summary.failed)} of {len(summary.outcomes)} requests failed after retries "
                            f"(first: {summary.failed[0].error}); the answers received are stored, run the same "
                            "command again to retry the rest")
