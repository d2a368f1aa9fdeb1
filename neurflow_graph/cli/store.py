"""``neurflow-graph store start|stop|status``: the embedded FalkorDB server's lifecycle.

Commands start the embedded server on demand and stop it when they finish; ``store start``
keeps one running (faster repeated commands) until ``store stop``.
"""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


def _embedded_path(store_url: str) -> str:
    from neurflow_graph.errors import InputError
    from neurflow_graph.store.url import DEFAULT_EMBEDDED_PATH, parse_store_url

    parsed = parse_store_url(store_url)
    if parsed.kind != "embedded":
        raise InputError(f"{parsed.display} is a Neo4j server: it is started and stopped outside neurflow-graph "
                         "(see docker/README.md: `make neo4j-up` / `make neo4j-down`)")
    return parsed.path or DEFAULT_EMBEDDED_PATH


@click.group("store")
def command() -> None:
    """Start, stop or inspect the embedded store's server."""


@command.command("start")
@store_options
def start(store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Start the embedded server (or keep the running one) and leave it running until `store stop`."""
    from neurflow_graph.store.falkor import start_server

    st = start_server(_embedded_path(store_url), keep=True)
    click.echo(f"embedded store running: embedded:{st.data_dir} (pid {st.pid}, socket {st.socket}); "
               "stop it with `neurflow-graph store stop`")


@command.command("stop")
@store_options
def stop(store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Stop the embedded server, saving its data."""
    from neurflow_graph.store.falkor import stop_server

    path = _embedded_path(store_url)
    stopped = stop_server(path)
    click.echo(f"embedded store stopped: embedded:{path}" if stopped else f"no embedded server running for embedded:{path}")


@command.command("status")
@store_options
def status(store_url: str, database: str | None, username: str | None, password: str | None) -> None:
    """Say whether the store is reachable (embedded: whether its server runs; starts nothing)."""
    from neurflow_graph.store.url import open_store, parse_store_url

    if parse_store_url(store_url).kind == "neo4j":
        store = open_store(store_url, database=database, username=username, password=password)
        try:
            click.echo(f"reachable: {store.display_url}")
        finally:
            store.close()
        return
    from neurflow_graph.store.falkor import server_status

    st = server_status(_embedded_path(store_url))
    state = f"running (pid {st.pid}{', kept up by `store start`' if st.keep else ''})" if st.running else "stopped"
    click.echo(f"embedded:{st.data_dir}: {state}; data {st.rdb_bytes:,} bytes in {st.data_dir / 'dump.rdb'}")
