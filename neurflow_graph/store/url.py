"""``--store`` URLs: parsing, redaction and :func:`open_store`.

Accepted forms::

    embedded:PATH                     embedded FalkorDB in the data directory PATH (default ./neurflow-data)
    neo4j://host[:7687]               Neo4j with routing (a server or a cluster)
    neo4j+s://xxxx.databases.neo4j.io Neo4j Aura / TLS (neo4j+ssc: TLS with a self-signed certificate)
    bolt://host[:7687]                one Neo4j server, no routing (also bolt+s, bolt+ssc)

Credentials come from the arguments, else from ``user:password@`` in the URL, else from the
environment (``NEO4J_USERNAME``/``NEO4J_PASSWORD``). The password never appears in any message:
:func:`redact_url` strips it and every store's ``display_url`` is redacted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from neurflow_graph.errors import StoreURLError
from neurflow_graph.store.base import GraphStore

DEFAULT_EMBEDDED_PATH = "./neurflow-data"
NEO4J_SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")


@dataclass(frozen=True)
class StoreURL:
    """A parsed ``--store`` URL. ``uri`` (Neo4j) carries no credentials; ``password`` is kept out of ``repr``."""

    kind: str                      # "embedded" or "neo4j"
    path: str | None = None        # embedded data directory
    uri: str | None = None         # Neo4j URI without user info
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        if self.kind == "embedded":
            return f"embedded:{self.path}"
        return self.uri or ""


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` reduced to ``user@``; safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_store_url(url: str) -> StoreURL:
    """Parse a ``--store`` value; StoreURLError (naming the redacted URL) when it is not understood."""
    if not isinstance(url, str) or not url.strip():
        raise StoreURLError("empty --store URL: use embedded:PATH or neo4j://host:7687")
    url = url.strip()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if sep and scheme == "embedded":
        path = rest[2:] if rest.startswith("//") else rest
        return StoreURL(kind="embedded", path=path or DEFAULT_EMBEDDED_PATH)
    if sep and scheme in NEO4J_SCHEMES:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise StoreURLError(f"--store {redact_url(url)}: bad host or port ({e})") from e
        host = parts.hostname
        if not host:
            raise StoreURLError(f"--store {redact_url(url)} names no host: use e.g. {scheme}://localhost:7687")
        netloc = parts.netloc.rpartition("@")[2]
        uri = urlunsplit((parts.scheme.lower(), netloc, "", parts.query, ""))
        if parts.path not in ("", "/"):
            raise StoreURLError(f"--store {redact_url(url)}: a Neo4j URL has no path; name the database with --database")
        del port
        return StoreURL(kind="neo4j", uri=uri,
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password is not None else None)
    raise StoreURLError(f"--store {redact_url(url)} is not understood: use embedded:PATH, neo4j://host:7687, "
                        "neo4j+s://host (Aura) or bolt://host:7687")


def open_store(url: str, *, database: str | None = None, username: str | None = None,
               password: str | None = None, connection_timeout: float = 10.0, create: bool = True) -> GraphStore:
    """Open the store named by ``url`` (see the module doc); raise StoreURLError / StoreConnectionError.

    ``database`` is the Neo4j database (default ``neo4j``) or the embedded graph name (default ``neurflow``).
    ``create=False`` (every read command): an embedded store that does not exist yet -- no folder,
    no data, or no such graph -- is a StoreNotFoundError naming the path and how to make one,
    and nothing is created. Neo4j databases are never created either way.
    """
    parsed = parse_store_url(url)
    if parsed.kind == "embedded":
        from neurflow_graph.store.falkor import FalkorStore

        return FalkorStore(parsed.path or DEFAULT_EMBEDDED_PATH, graph=database, create=create)
    from neurflow_graph.store.neo4j_store import Neo4jStore

    user = username or parsed.username or os.environ.get("NEO4J_USERNAME") or None
    pw = password if password is not None else parsed.password
    if pw is None:
        pw = os.environ.get("NEO4J_PASSWORD")
    return Neo4jStore(parsed.uri or "", database=database, username=user, password=pw,
                      connection_timeout=connection_timeout)
