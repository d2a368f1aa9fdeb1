"""--store URLs, credentials and unreachable stores: one clear line, exit 2, never the password."""

from __future__ import annotations

import os
import time
import traceback

import pytest
from click.testing import CliRunner

from conftest import NEO4J_URI, requires_neo4j
from neurflow_graph.cli import cli
from neurflow_graph.errors import StoreConnectionError, StoreURLError
from neurflow_graph.store.url import open_store, parse_store_url, redact_url

SECRET = "pa55-Wörd:@/#s3cr3t"


def _all_text(e: BaseException) -> str:
    """Everything a user or a log could see of ``e``: message, repr, and the full chained traceback."""
    return "\n".join([str(e), repr(e), *traceback.format_exception(e)])


@pytest.mark.parametrize("url, path", [
    ("embedded:/tmp/x", "/tmp/x"), ("embedded:rel/dir", "rel/dir"), ("embedded://tmp/y", "tmp/y"),
    ("embedded:", "./neurflow-data"), ("EMBEDDED:data", "data"),
])
def test_embedded_urls(url, path):
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.path) == ("embedded", path)


@pytest.mark.parametrize("url, uri, user", [
    ("neo4j://localhost:7687", "neo4j://localhost:7687", None),
    ("bolt://db.example:7999", "bolt://db.example:7999", None),
    ("neo4j+s://abcd.databases.neo4j.io", "neo4j+s://abcd.databases.neo4j.io", None),
    ("neo4j+ssc://me@host:7687", "neo4j+ssc://host:7687", "me"),
    ("neo4j://me:pw@host:7687?policy=eu", "neo4j://host:7687?policy=eu", "me"),
])
def test_neo4j_urls_lose_their_credentials(url, uri, user):
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.uri, parsed.username) == ("neo4j", uri, user)
    assert "pw" not in repr(parsed) and "pw" not in parsed.display


@pytest.mark.parametrize("url", ["", "   ", "redis://localhost", "/just/a/path", "neo4j://", "neo4j://host:notaport",
                                 "neo4j://host:7687/somedb", "http://me:pw@host"])
def test_bad_urls(url):
    with pytest.raises(StoreURLError) as info:
        parse_store_url(url)
    assert "\n" not in str(info.value) and ":pw@" not in str(info.value)


def test_redact_url():
    assert redact_url(f"neo4j://neo4j:{SECRET.replace('/', '%2F').replace('#', '%23').replace('@', '%40')}@h:1") == "neo4j://neo4j@h:1"
    assert redact_url("bolt://h:1") == "bolt://h:1"


@pytest.mark.parametrize("how", ["argument", "url", "env"])
def test_unreachable_neo4j_fails_fast_without_the_password(how, monkeypatch):
    url, kwargs = "neo4j://127.0.0.1:1", {}
    if how == "argument":
        kwargs["password"] = SECRET
    elif how == "url":
        url = "neo4j://neo4j:" + SECRET.replace("/", "%2F").replace("#", "%23").replace("@", "%40").replace(":", "%3A") + "@127.0.0.1:1"
    else:
        monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError) as info:
        open_store(url, connection_timeout=1.0, **kwargs)
    assert time.monotonic() - start < 20
    text = _all_text(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert SECRET not in text and "s3cr3t" not in text
    assert "\n" not in str(info.value)


def test_cli_unreachable_store_is_one_line_exit_2(monkeypatch):
    monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    result = CliRunner().invoke(cli, ["runs", "--store", "bolt://127.0.0.1:1"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "bolt://127.0.0.1:1" in lines[0]
    assert "s3cr3t" not in result.output


def test_cli_password_flag_is_refused_and_never_printed():
    result = CliRunner().invoke(cli, ["ingest", "--store", "neo4j://127.0.0.1:1", "--password", SECRET, "."])
    assert result.exit_code == 2
    assert "--password is not accepted on the command line" in result.output
    assert "s3cr3t" not in result.output


def test_cli_bad_url_names_it_without_password():
    result = CliRunner().invoke(cli, ["runs", "--store", f"mongodb://u:{'s3cr3t'}@h"])
    assert result.exit_code == 2
    assert "mongodb://u@h" in result.output and "s3cr3t" not in result.output


@requires_neo4j
def test_wrong_neo4j_credentials_are_one_line_without_password():
    with pytest.raises(StoreConnectionError) as info:
        open_store(NEO4J_URI or "", username=os.environ.get("NEO4J_USERNAME", "neo4j"), password=SECRET)
    assert "credentials" in str(info.value)
    assert SECRET not in _all_text(info.value)
    result = CliRunner().invoke(cli, ["runs", "--store", NEO4J_URI or "", "--password", SECRET])
    assert result.exit_code == 2 and "s3cr3t" not in result.output
