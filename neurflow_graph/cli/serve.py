"""``neurflow-graph serve``: the read-only dashboard over a store (docs/dashboard.md)."""

from __future__ import annotations

import click

from neurflow_graph.cli.options import store_options


@click.command("serve")
@store_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it local).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="Port (0: any free port).")
def command(store_url: str, database: str | None, username: str | None, password: str | None, host: str,
            port: int) -> None:
    """Serve the dashboard: runs, class circuits, two classes, two models; every panel a library query."""
    from neurflow_graph.errors import InputError
    from neurflow_graph.store.url import open_store, redact_url
    from neurflow_graph.web.api import DashboardApi
    from neurflow_graph.web.server import DashboardServer

    store = open_store(store_url, database=database, username=username, password=password, create=False)
    try:
        try:
            server = DashboardServer(api=DashboardApi(store), host=host, port=port)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from e
        click.echo(f"dashboard of {redact_url(store_url)} at {server.url}  (Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopped")
        finally:
            server.httpd.server_close()
    finally:
        store.close()
