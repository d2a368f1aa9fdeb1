"""The query library's files and loader: headers, parameter typing, errors (no store needed)."""

import re

import pytest

from neurflow_graph.errors import QueryError
from neurflow_graph.queries.adhoc import infer_value, typed_assignments, write_clauses
from neurflow_graph.queries.format import format_rows
from neurflow_graph.queries.library import (
    coerce_value, get_query, list_queries, parse_assignments,
)

REQUIRED = {
    "class_circuit", "shared_neurons_by_layer", "shared_groups", "concept_paths_to_logit",
    "top_groups_per_layer", "hub_neurons", "classes_sharing_group", "compare_models",
    "polysemantic_neurons", "dashboard_summary",
}
WRITE_WORDS = re.compile(r"\b(CREATE|MERGE|DELETE|SET|REMOVE|DROP|DETACH)\b", re.IGNORECASE)


def _body(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def test_library_has_every_required_query():
    names = {q.name for q in list_queries()}
    assert REQUIRED <= names


@pytest.mark.parametrize("query", list_queries(), ids=lambda q: q.name)
def test_every_query_declares_what_it_uses(query):
    assert query.purpose and query.columns
    for text in [query.text, *query.variants.values()]:
        body = _body(text)
        used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", body))
        declared = {p.name for p in query.params}
        assert used == declared, f"{query.name}: uses {sorted(used)}, declares {sorted(declared)}"
        assert not WRITE_WORDS.search(body), f"{query.name} must only read"
        # every declared column is returned under that alias
        for col in query.columns:
            assert re.search(rf"\bAS {col}\b|[,\s]{col}\s*(,|$)", body, re.MULTILINE), f"{query.name}: {col}"


@pytest.mark.parametrize("query", list_queries(), ids=lambda q: q.name)
def test_every_query_reads_complete_runs_only(query):
    body = _body(query.text)
    n_runs = len(re.findall(r"\(\w+:Run[ )]", body))
    assert n_runs >= 1
    assert body.count("status = 'complete'") == n_runs
    # about a (model, class): latest unless a run uid parameter picks the run; never when the run is required
    names = {p.name for p in query.params}
    if any(p.name == "run" and p.required for p in query.params):
        assert body.count("latest = true") == 0
    elif names & {"class", "class_a", "class_b"}:
        assert body.count("latest = true") >= n_runs


def test_unknown_query_lists_the_available_names():
    with pytest.raises(QueryError) as e:
        get_query("no_such_query")
    msg = str(e.value)
    assert "\n" not in msg and "no_such_query" in msg
    assert all(name in msg for name in REQUIRED)


def test_parameters_are_typed_and_defaulted_from_the_header():
    q = get_query("shared_groups")
    bound = q.bind({"model": "m", "class_a": "a", "class_b": "b", "min_shared": "3"})
    assert bound == {"model": "m", "class_a": "a", "class_b": "b", "run_a": None, "run_b": None,
                     "min_shared": 3, "limit": 100, "source": None}


@pytest.mark.parametrize("raw, missing", [({"model": "m", "class_a": "a"}, "class_b"), ({}, "model")])
def test_missing_parameter_names_it_and_lists_all_with_types(raw, missing):
    with pytest.raises(QueryError) as e:
        get_query("shared_groups").bind(raw)
    msg = str(e.value)
    assert "\n" not in msg and f"parameter {missing}" in msg
    assert "min_shared int = 1" in msg and "class_a string" in msg


@pytest.mark.parametrize("raw", [{"min_shared": "two"}, {"min_shared": "1.5"}, {"limit": "true"}])
def test_mistyped_parameter_is_rejected_with_the_parameter_list(raw):
    params = {"model": "m", "class_a": "a", "class_b": "b", **raw}
    with pytest.raises(QueryError) as e:
        get_query("shared_groups").bind(params)
    msg = str(e.value)
    assert "\n" not in msg and "must be an int" in msg and "run_a string = null" in msg


def test_unknown_parameter_is_rejected():
    with pytest.raises(QueryError, match="has no parameter bogus"):
        get_query("hub_neurons").bind({"model": "m", "bogus": "1"})


@pytest.mark.parametrize("value, type_, expected", [
    ("12", "int", 12), ("-3", "int", -3), ("2.5", "float", 2.5), ("3", "float", 3.0),
    ("TRUE", "bool", True), ("no", "bool", False), ("a,b , c", "list<string>", ["a", "b", "c"]),
    ('["x,y", "z"]', "list<string>", ["x,y", "z"]), ("1,2", "list<int>", [1, 2]), ("", "list<int>", []),
    ('x"}) DETACH DELETE n //', "string", 'x"}) DETACH DELETE n //'),
    (7, "float", 7.0), ([1, 2], "list<float>", [1.0, 2.0]),
])
def test_coerce_value(value, type_, expected):
    out = coerce_value(value, type_)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, type_", [("x", "int"), (True, "int"), ("nan", "float"), ("maybe", "bool"),
                                          ("1,x", "list<int>"), (3, "string"), ('{"a": 1}', "list<int>")])
def test_coerce_value_rejects(value, type_):
    with pytest.raises(ValueError):
        coerce_value(value, type_)


def test_assignments_keep_everything_after_the_first_equals():
    assert parse_assignments(["q=a=b", "e="]) == {"q": "a=b", "e": ""}
    with pytest.raises(QueryError):
        parse_assignments(["novalue"])
    with pytest.raises(QueryError):
        parse_assignments(["a=1", "a=2"])


def test_adhoc_values_are_inferred_or_typed():
    out = typed_assignments(["n=3", "f=2.5", "b=true", "l=[1,2]", "s=hello", "t:string=3",
                             "i:list<int>=4,5", 'inj=x"}) DETACH DELETE n //'])
    assert out == {"n": 3, "f": 2.5, "b": True, "l": [1, 2], "s": "hello", "t": "3", "i": [4, 5],
                   "inj": 'x"}) DETACH DELETE n //'}
    assert infer_value("-") == "-" and infer_value("[oops") == "[oops"
    with pytest.raises(QueryError):
        typed_assignments(["x:decimal=1"])


@pytest.mark.parametrize("text, found", [
    ("MATCH (n) RETURN n", []),
    ("MATCH (n) WHERE n.name = 'CREATE (x)' RETURN n.set AS s", []),
    ("MATCH (n:Set) RETURN {set: 1, merge: 2} AS m // DELETE everything", []),
    ("MATCH (n) RETURN n.`create` /* MERGE */", []),
    ("MATCH (n) DETACH DELETE n", ["DELETE", "DETACH"]),
    ("match (n) set n.x = 1", ["SET"]),
    ("CREATE (:X)", ["CREATE"]),
    ("LOAD  CSV FROM 'f' AS row RETURN row", ["LOAD CSV"]),
])
def test_write_clauses(text, found):
    assert write_clauses(text) == found


def test_format_rows_renders_all_formats():
    rows = [{"a": 1, "b": "x,y", "c": [1, 2], "d": None}, {"a": 22, "b": 'q"', "c": [], "d": 0.5}]
    table = format_rows(rows=rows, fmt="table").splitlines()
    assert table[0].split() == ["a", "b", "c", "d"] and table[-1] == "(2 rows)"
    csv_text = format_rows(rows=rows, fmt="csv")
    import csv
    import io
    import json
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert parsed[0] == {"a": "1", "b": "x,y", "c": "[1,2]", "d": ""} and parsed[1]["b"] == 'q"'
    assert json.loads(format_rows(rows=rows, fmt="json")) == rows
    assert format_rows(rows=[], fmt="table") == "(no rows)"


HEADER = """// name: {name}
// purpose: A test query.
// param: model string
// param: n int = 2               -- how many
// columns: x
{extra}RETURN $model AS x LIMIT $n
"""


def test_backend_variant_replaces_the_text_on_its_backend(tmp_path):
    (tmp_path / "q.cypher").write_text(HEADER.format(name="q", extra=""))
    (tmp_path / "q.neo4j.cypher").write_text(HEADER.format(name="q", extra="// why: testing\n") + "// neo4j\n")
    (q,) = list_queries(directory=tmp_path)
    assert "// neo4j" in q.text_for("neo4j") and "// neo4j" not in q.text_for("falkordb")
    assert q.params[1].default == 2 and q.params[1].help == "how many"


@pytest.mark.parametrize("files, needle", [
    ({"q.cypher": HEADER.format(name="other", extra="")}, "file name says"),
    ({"q.cypher": "// name: q\nRETURN 1 AS x\n"}, "purpose"),
    ({"q.cypher": HEADER.format(name="q", extra="").replace("param: n int = 2", "param: n integer = 2")}, "bad header"),
    ({"q.cypher": HEADER.format(name="q", extra="").replace("= 2", "= two")}, "default of parameter n"),
    ({"q.cypher": HEADER.format(name="q", extra=""), "q.neo4j.cypher": HEADER.format(name="q", extra="")}, "why"),
    ({"q.cypher": HEADER.format(name="q", extra=""), "q.oracle.cypher": HEADER.format(name="q", extra="// why: x\n")},
     "unknown backend"),
    ({"q.neo4j.cypher": HEADER.format(name="q", extra="// why: x\n")}, "no portable"),
])
def test_malformed_library_files_are_reported(tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(QueryError, match=needle):
        list_queries(directory=tmp_path)


def test_rows_must_match_the_header_columns(tmp_path):
    from neurflow_graph.queries.library import run_query

    class FakeStore:
        backend = "falkordb"

        display_url = "fake"

        def read(self, query, params=None):
            if query.startswith("MATCH (m:Model)"):  # the name check (queries/names.py) finds the model
                return [{"uid": "m", "name": "m"}]
            if query.startswith("MATCH (:Model"):  # ... and its layers
                return []
            return [{"y": params["model"]}]

    (tmp_path / "q.cypher").write_text(HEADER.format(name="q", extra=""))
    with pytest.raises(QueryError, match="declares x"):
        run_query(store=FakeStore(), name="q", params={"model": "m"}, directory=tmp_path)


def test_reads_pause_the_garbage_collector_and_restore_it():
    """run_read turns the cyclic collector off only while the store decodes (a fake store: only it can
    observe the state from inside the read), and restores it after an answer and after an error."""
    import gc

    from neurflow_graph.queries.library import run_read

    seen = []

    class Store:
        backend = "falkordb"

        def read(self, query, params=None):
            seen.append(gc.isenabled())
            if query == "fail":
                raise RuntimeError("driver says no")
            return [{"x": 1}]

    assert gc.isenabled()
    assert run_read(store=Store(), text="ok", params={}) == [{"x": 1}]
    assert gc.isenabled()
    with pytest.raises(QueryError, match="driver says no"):
        run_read(store=Store(), text="fail", params={})
    assert gc.isenabled() and seen == [False, False]
    gc.disable()
    try:
        run_read(store=Store(), text="ok", params={})
        assert not gc.isenabled()  # a caller's own setting is kept
    finally:
        gc.enable()


def test_nested_lists_decode_exactly(store):
    """Lists of [i, j] pairs (class_circuit's members) and mixed nested lists come back as sent."""
    from neurflow_graph.queries.library import run_read

    pairs = [[i, (i * 7) % 5] for i in range(3000)]
    mixed = [[1, [2, [-3, []]]], [], [2 ** 62, "x", None, 1.5, True, False], ["a", [0.25, -0.0]]]
    rows = run_read(store=store, text="RETURN $pairs AS pairs, $mixed AS mixed, [k IN range(0, 2) | [k, -k]] AS built",
                    params={"pairs": pairs, "mixed": mixed})
    assert rows[0]["pairs"] == pairs
    assert rows[0]["mixed"] == mixed and type(rows[0]["mixed"][2][0]) is int and rows[0]["mixed"][2][4] is True
    assert rows[0]["built"] == [[0, 0], [1, -1], [2, -2]]


def test_concurrent_reads_leave_the_garbage_collector_on():
    """Reads overlapping in several threads (the web server's) never leave the collector off: the last
    one out restores it. Thread switches forced every microsecond to make interleavings likely."""
    import gc
    import sys
    import threading

    from neurflow_graph.queries.library import run_read

    class Store:
        backend = "falkordb"

        def read(self, query, params=None):
            return [{"x": 1}]

    def work():
        for _ in range(300):
            run_read(store=Store(), text="ok", params={})

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(40):
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert gc.isenabled()
    finally:
        sys.setswitchinterval(old)
        gc.enable()
