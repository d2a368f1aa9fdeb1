"""`neurflow-graph query`, `cypher` and `export` through click's CliRunner, on every backend."""

from __future__ import annotations

import csv
import io
import json
import math

import networkx as nx
import pytest
from click.testing import CliRunner

from neurflow_graph.cli import cli
from neurflow_graph.queries.library import list_queries
from neurflow_graph.store.ingest import ingest_circuit
from neurflow_graph.synthetic import synthetic_circuit

NASTY = 'x"}) DETACH DELETE n // \\ \'{$model}'


@pytest.fixture(scope="module")
def cli_world(module_store):
    circuits = {}
    for index, name in [(0, "cat"), (1, "dog"), (2, NASTY)]:
        c = synthetic_circuit(class_index=index, class_name=name, model_name="synthnet", seed=1,
                              widths=(10, 24, 24, 16))
        circuits[name] = (c, ingest_circuit(store=module_store, circuit=c))
    return module_store, circuits


class _Borrowed:
    """The test's store handed to a CLI command; the command's close() leaves it open."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def close(self) -> None:
        pass


def _invoke(store, *args: str):
    """Run the CLI with ``open_store`` answering the test's store (any backend)."""
    import neurflow_graph.store.url as url

    real = url.open_store
    url.open_store = lambda *a, **k: _Borrowed(store)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        url.open_store = real


def _counts(store) -> tuple[int, int]:
    return (store.read("MATCH (n) RETURN count(n) AS c")[0]["c"],
            store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"])


def _expected_shared(a, b) -> list[dict]:
    rows = []
    for d, layer in enumerate(a.model.layers):
        sa = {n.index for n in a.neurons if n.layer == layer}
        sb = {n.index for n in b.neurons if n.layer == layer}
        if sa or sb:
            rows.append({"depth": d, "layer": layer, "n_a": len(sa), "n_b": len(sb), "shared": len(sa & sb),
                         "n_union": len(sa | sb), "jaccard": len(sa & sb) / len(sa | sb)})
    return rows


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# ---- query ------------------------------------------------------------------------------------------
def test_list_shows_every_query_with_purpose_and_typed_params():
    result = CliRunner().invoke(cli, ["query", "--list"])
    assert result.exit_code == 0
    for q in list_queries():
        assert f"{q.name}: {q.purpose}" in result.output
        for p in q.params:
            assert f"    {p.name} {p.type}" in result.output
    assert "min_shared int = 1" in result.output


def test_query_json_csv_and_table_agree_with_the_oracle(cli_world):
    store, circuits = cli_world
    args = ["query", "shared_neurons_by_layer", "-p", "model=synthnet", "-p", "class_a=cat", "-p", f"class_b={NASTY}"]
    expected = _expected_shared(circuits["cat"][0], circuits[NASTY][0])

    res = _invoke(store, *args, "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == len(expected)
    for r, e in zip(rows, expected):
        assert {k: r[k] for k in e if k != "jaccard"} == {k: v for k, v in e.items() if k != "jaccard"}
        assert math.isclose(r["jaccard"], e["jaccard"], rel_tol=1e-9)
    assert {r["run_b"] for r in rows} == {circuits[NASTY][1]}

    res = _invoke(store, *args, "--format", "csv")
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.output)))
    assert [int(r["shared"]) for r in parsed] == [r["shared"] for r in expected]
    assert all(math.isclose(float(r["jaccard"]), e["jaccard"], rel_tol=1e-9) for r, e in zip(parsed, expected))
    assert tuple(parsed[0]) == next(q.columns for q in list_queries() if q.name == "shared_neurons_by_layer")

    res = _invoke(store, *args)
    lines = res.output.splitlines()
    assert res.exit_code == 0 and lines[0].split()[:3] == ["depth", "layer", "n_a"]
    assert lines[-1] == f"({len(expected)} rows)"


def test_query_show_prints_the_cypher_without_a_store():
    res = CliRunner().invoke(cli, ["query", "hub_neurons", "-p", "model=m", "--show"])
    assert res.exit_code == 0 and "$model" in res.output and "MATCH" in res.output


@pytest.mark.parametrize("args, needle", [
    (["query", "no_such_query"], "available: "),
    (["query", "shared_groups", "-p", "model=synthnet"], "needs parameter class_a"),
    (["query", "shared_groups", "-p", "model=m", "-p", "class_a=a", "-p", "class_b=b", "-p", "limit=ten"],
     "limit must be an int"),
    (["query", "hub_neurons", "-p", "model"], "NAME=VALUE"),
    (["query", "hub_neurons", "-p", "model=m", "-p", "colour=red"], "has no parameter colour"),
    (["query"], "--list"),
])
def test_query_errors_exit_2_with_one_line(cli_world, args, needle):
    store, _ = cli_world
    line = _one_error_line(_invoke(store, *args))
    assert needle in line
    if "available" in needle:
        assert all(q.name in line for q in list_queries())
    if "needs parameter" in needle or "must be an int" in needle:
        assert "min_shared int = 1" in line and "class_b string" in line


def test_query_parameters_are_data(cli_world):
    store, circuits = cli_world
    before = _counts(store)
    res = _invoke(store, "query", "class_circuit", "-p", "model=synthnet", "-p", f"class={NASTY}", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    c = circuits[NASTY][0]
    assert rows and {r["run"] for r in rows} == {circuits[NASTY][1]}
    assert {(r["layer"], r["group_id"]) for r in rows} == {(g.layer, g.id) for g in c.neuron_groups}
    line = _one_error_line(_invoke(store, "query", "class_circuit", "-p", "model=synthnet",
                                   "-p", 'class=x"}) DETACH DELETE n //'))
    assert "unknown class 'x\"}) DETACH DELETE n //'" in line
    assert _counts(store) == before


# ---- cypher ------------------------------------------------------------------------------------------
def test_cypher_params_are_data_never_spliced(cli_world):
    store, _ = cli_world
    before = _counts(store)
    q = "MATCH (r:Run) WHERE r.class_name = $name RETURN r.class_name AS name, r.status AS status"
    res = _invoke(store, "cypher", q, "-p", f"name={NASTY}", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"name": NASTY, "status": "complete"}]
    for evil in ['x"}) DETACH DELETE n //', "x'}) DETACH DELETE n //", "\\", "{}", "[1,", "$name"]:
        res = _invoke(store, "cypher", q, "-p", f"name={evil}", "--format", "json")
        assert res.exit_code == 0 and json.loads(res.output) == [], (evil, res.output)
    assert _counts(store) == before


def test_cypher_typed_and_inferred_params(cli_world):
    store, _ = cli_world
    res = _invoke(store, "cypher", "RETURN $a + 1 AS a, $b AS b, size($l) AS n, $s AS s",
                  "-p", "a=41", "-p", "b:string=007", "-p", "l=[1,2,3]", "-p", "s=hello world", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"a": 42, "b": "007", "n": 3, "s": "hello world"}]


def test_cypher_nodes_come_back_as_property_maps(cli_world):
    store, circuits = cli_world
    res = _invoke(store, "cypher", "MATCH (r:Run {uid: $u}) RETURN r", "-p", f"u={circuits['cat'][1]}",
                  "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["r"]["uid"] == circuits["cat"][1] and row["r"]["class_name"] == "cat"


@pytest.mark.parametrize("query", ["CREATE (:Scratch {v: 1})", "MATCH (n:Run) DETACH DELETE n",
                                   "MATCH (r:Run) SET r.status = 'gone' RETURN r.uid AS u",
                                   "MERGE (s:Scratch {v: 2}) RETURN s"])
def test_cypher_writes_need_the_write_flag(cli_world, query):
    store, _ = cli_world
    before = _counts(store)
    line = _one_error_line(_invoke(store, "cypher", query))
    assert "--write" in line
    assert _counts(store) == before


def test_store_refuses_writes_the_scan_misses(cli_world, monkeypatch):
    import neurflow_graph.queries.adhoc as adhoc

    store, _ = cli_world
    before = _counts(store)
    monkeypatch.setattr(adhoc, "write_clauses", lambda text: [])
    line = _one_error_line(_invoke(store, "cypher", "CREATE (:Scratch {v: 3})"))
    assert "--write" in line and "read-only" in line
    assert _counts(store) == before


def test_cypher_write_flag_allows_writes(cli_world):
    store, _ = cli_world
    before = _counts(store)
    res = _invoke(store, "cypher", "CREATE (s:Scratch {v: $v}) RETURN s.v AS v", "-p", "v=5", "--write",
                  "--format", "json")
    assert res.exit_code == 0 and json.loads(res.output) == [{"v": 5}]
    assert _counts(store)[0] == before[0] + 1
    res = _invoke(store, "cypher", "MATCH (s:Scratch) DELETE s", "--write")
    assert res.exit_code == 0, res.output
    assert _counts(store) == before


def test_cypher_syntax_error_is_one_line(cli_world):
    store, _ = cli_world
    _one_error_line(_invoke(store, "cypher", "MATCH (n RETURN n"))


# ---- export -------------------------------------------------------------------------------------------
def _expected_graph(c) -> tuple[dict, dict]:
    nodes = {("Neuron", n.layer, n.index) for n in c.neurons}
    nodes |= {("SemanticGroup", n.layer, n.index, g.id) for n in c.neurons for g in n.semantic_groups}
    nodes |= {("NeuronGroup", g.layer, g.id) for g in c.neuron_groups}
    edges = {}
    for n in c.neurons:
        for g in n.semantic_groups:
            edges[("OF", ("SemanticGroup", n.layer, n.index, g.id), ("Neuron", n.layer, n.index))] = None
    for e in c.edges:
        edges[("CONTRIBUTES", ("Neuron", e.child_layer, e.child_index),
               ("SemanticGroup", e.parent_layer, e.parent_index, e.parent_group))] = e.weight
    for g in c.neuron_groups:
        for i, j in g.members:
            edges[("HAS_MEMBER", ("NeuronGroup", g.layer, g.id), ("SemanticGroup", g.layer, i, j))] = None
    for e in c.group_edges:
        edges[("FEEDS", ("NeuronGroup", e.child_layer, e.child_group),
               ("NeuronGroup", e.parent_layer, e.parent_group))] = e.weight
    return nodes, edges


def _key(attrs: dict) -> tuple:
    kind = attrs["kind"]
    if kind == "Neuron":
        return (kind, attrs["layer"], int(attrs["index"]))
    if kind == "SemanticGroup":
        return (kind, attrs["layer"], int(attrs["neuron_index"]), int(attrs["j"]))
    return (kind, attrs["layer"], int(attrs["gid"]))


@pytest.mark.parametrize("fmt", ["graphml", "json"])
def test_export_writes_the_runs_circuit(cli_world, tmp_path, fmt):
    store, circuits = cli_world
    c, uid = circuits["dog"]
    out = tmp_path / f"dog.{fmt}"
    res = _invoke(store, "export", "--run", uid, "--format", fmt, str(out))
    assert res.exit_code == 0, res.output
    if fmt == "graphml":
        g = nx.read_graphml(out)
    else:
        g = nx.node_link_graph(json.loads(out.read_text()), edges="edges")
    assert g.graph["run"] == uid and g.graph["class_name"] == "dog"
    keys = {n: _key(a) for n, a in g.nodes(data=True)}
    exp_nodes, exp_edges = _expected_graph(c)
    assert set(keys.values()) == exp_nodes and len(keys) == len(exp_nodes)
    got = {(a["kind"], keys[u], keys[v]): a.get("weight") for u, v, a in g.edges(data=True)}
    assert set(got) == set(exp_edges) and g.number_of_edges() == len(exp_edges)
    for k, w in exp_edges.items():
        assert (w is None) == (got[k] is None) and (w is None or math.isclose(float(got[k]), w, rel_tol=1e-9)), k
    scores = {(e.child_layer, e.child_index, e.parent_layer, e.parent_index, e.parent_group): e.score for e in c.edges}
    for u, v, a in g.edges(data=True):
        if a["kind"] == "CONTRIBUTES":
            ku, kv = keys[u], keys[v]
            assert math.isclose(float(a["score"]), scores[(ku[1], ku[2], kv[1], kv[2], kv[3])], rel_tol=1e-9)


def test_export_unknown_run_is_one_line(cli_world, tmp_path):
    store, _ = cli_world
    line = _one_error_line(_invoke(store, "export", "--run", "nope", "--format", "json", str(tmp_path / "x.json")))
    assert "nope" in line and not (tmp_path / "x.json").exists()


def test_commands_open_the_store_named_by_url(embedded_dir, tmp_path):
    from neurflow_graph.store.url import open_store

    c = synthetic_circuit(class_index=4, class_name="eel", model_name="solo", seed=2, widths=(10, 24, 24, 16))
    with open_store(f"embedded:{embedded_dir}") as s:
        uid = ingest_circuit(store=s, circuit=c)
    url = ["--store", f"embedded:{embedded_dir}"]
    res = CliRunner().invoke(cli, ["query", "top_groups_per_layer", "-p", "model=solo", "-p", "class=eel",
                                   "-p", "top=100", "--format", "json", *url])
    assert res.exit_code == 0, res.output
    got = {(r["layer"], r["group_id"]) for r in json.loads(res.output)}
    assert got == {(g.layer, g.id) for g in c.neuron_groups if g.layer != c.model.layers[0]}
    res = CliRunner().invoke(cli, ["cypher", "MATCH (r:Run) RETURN r.uid AS uid", "--format", "csv", *url])
    assert res.exit_code == 0 and res.output.split() == ["uid", uid]
    res = CliRunner().invoke(cli, ["export", "--run", uid, "--format", "json", str(tmp_path / "e.json"), *url])
    assert res.exit_code == 0, res.output
    g = nx.node_link_graph(json.loads((tmp_path / "e.json").read_text()), edges="edges")
    assert sum(a["kind"] == "NeuronGroup" for _, a in g.nodes(data=True)) == len(c.neuron_groups)


# ---- names: run prefixes, checked filters, missing parameters, export to stdout ------------------------
def test_cypher_missing_parameter_is_named(cli_world):
    store, _ = cli_world
    line = _one_error_line(_invoke(store, "cypher", "MATCH (n) WHERE n.a = $a AND n.c = $c RETURN n // $z",
                                   "-p", "a=1"))
    assert "$c" in line and "-p c=VALUE" in line and "$a" not in line and "$z" not in line


def test_cypher_run_typed_parameter_takes_a_prefix(cli_world):
    store, circuits = cli_world
    uid = circuits["dog"][1]
    res = _invoke(store, "cypher", "MATCH (r:Run {uid: $r}) RETURN r.class_name AS c", "-p", f"r:run={uid[:8]}",
                  "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"c": "dog"}]
    assert "no run 'zzzz'" in _one_error_line(_invoke(store, "cypher", "RETURN $r AS r", "-p", "r:run=zzzz"))


def test_query_takes_a_run_prefix_and_rejects_unknown_names(cli_world):
    store, circuits = cli_world
    c, uid = circuits["cat"]
    res = _invoke(store, "query", "class_circuit", "-p", "model=synthnet", "-p", "class=0", "-p", f"run={uid[:7]}",
                  "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["run"] for r in rows} == {uid} and len(rows) == len(c.neuron_groups)
    for args, needle in [(["-p", "model=synthnt", "-p", "class=cat"], "did you mean 'synthnet'"),
                         (["-p", "model=synthnet", "-p", "class=Bee"], "unknown class 'Bee'"),
                         (["-p", "model=synthnet", "-p", "class=cat", "-p", "run=0000000"], "no run '0000000'")]:
        assert needle in _one_error_line(_invoke(store, "query", "class_circuit", *args))


def test_csv_and_json_keep_full_precision(cli_world):
    store, circuits = cli_world
    c, _ = circuits["cat"]
    want = sorted(e.weight for e in c.group_edges)
    for fmt in ("csv", "json"):
        res = _invoke(store, "cypher", "MATCH (g:NeuronGroup {run: $r})-[f:FEEDS]->() RETURN f.weight AS w",
                      "-p", f"r={circuits['cat'][1]}", "--format", fmt)
        assert res.exit_code == 0, res.output
        got = ([float(x) for x in res.output.split()[1:]] if fmt == "csv"
               else [r["w"] for r in json.loads(res.output)])
        # FalkorDB sends doubles with 15 significant digits; the table would show 6
        assert all(math.isclose(a, b, rel_tol=1e-14) for a, b in zip(sorted(got), want)) and len(got) == len(want)


def test_runs_filters_are_checked(cli_world):
    store, circuits = cli_world
    uid = circuits["dog"][1]
    res = _invoke(store, "runs", "--run", uid[:6], "--format", "json")
    assert res.exit_code == 0, res.output
    assert [r["uid"] for r in json.loads(res.output)] == [uid]
    res = _invoke(store, "runs", "--model", "synthnet", "--class", "1", "--format", "json")
    assert [r["uid"] for r in json.loads(res.output)] == [uid]
    assert "did you mean 'dog'" in _one_error_line(_invoke(store, "runs", "--class", "dgo"))
    assert "unknown model 'nope'" in _one_error_line(_invoke(store, "runs", "--model", "nope"))


def test_export_to_standard_output_with_a_prefix(cli_world, tmp_path, monkeypatch):
    store, circuits = cli_world
    c, uid = circuits["dog"]
    monkeypatch.chdir(tmp_path)
    res = _invoke(store, "export", "--run", uid[:5], "--format", "json", "-")
    assert res.exit_code == 0, res.output
    g = nx.node_link_graph(json.loads(res.stdout), edges="edges")
    assert g.graph["run"] == uid and "standard output" in res.stderr
    assert sum(a["kind"] == "NeuronGroup" for _, a in g.nodes(data=True)) == len(c.neuron_groups)
    assert not (tmp_path / "-").exists()
    res = _invoke(store, "export", "--run", uid[:5], "--format", "graphml", "-")
    assert nx.read_graphml(io.BytesIO(res.stdout_bytes)).number_of_nodes() == g.number_of_nodes()


def test_delete_run_takes_a_unique_prefix(embedded_dir):
    from neurflow_graph.store.url import open_store

    c = synthetic_circuit(class_index=4, class_name="eel", model_name="solo", seed=2, widths=(10, 24, 24, 16))
    with open_store(f"embedded:{embedded_dir}") as s:
        uid = ingest_circuit(store=s, circuit=c)
    url = ["--store", f"embedded:{embedded_dir}"]
    line = _one_error_line(CliRunner().invoke(cli, ["delete-run", "f" if uid[0] != "f" else "0", *url]))
    assert "no run" in line
    res = CliRunner().invoke(cli, ["delete-run", uid[:4], *url])
    assert res.exit_code == 0 and f"deleted run {uid}" in res.output, res.output
    res = CliRunner().invoke(cli, ["cypher", "MATCH (r:Run) RETURN count(r) AS n", "--format", "csv", *url])
    assert res.output.split() == ["n", "0"]
