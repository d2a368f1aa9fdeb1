"""Parameters are data, never Cypher, on every backend; results come back as plain Python."""

from __future__ import annotations

import math

import pytest

from neurflow_graph.errors import QueryError
from neurflow_graph.store.falkor import encode_params

NASTY = [
    'a"b', "a'b", "back\\slash", "trail\\", "\\", '\\"', "{x}", "}{)(][", "line1\nline2", "tab\tx", "\r\n",
    "\\n", "\\u0041", "$rows", "`tick`", "é 漢字 🙂", "\x01\x02\x1f", "/* c */", "// c",
    '"}) MATCH (n) DETACH DELETE n //', "x' OR 1=1 //", "CYPHER rows=1 RETURN 1", "a\\\"}) DELETE n //",
]


def _counts(store):
    return (store.read("MATCH (n) RETURN count(n) AS c")[0]["c"],
            store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"])


@pytest.mark.parametrize("value", NASTY)
def test_string_round_trip_through_the_graph(module_store, value):
    module_store.write("CREATE (:Probe {uid: $uid, text: $text})", {"uid": "probe:" + value, "text": value})
    before = _counts(module_store)
    rows = module_store.read("MATCH (p:Probe) WHERE p.text = $text RETURN p.text AS text, p.uid AS uid", {"text": value})
    assert rows == [{"text": value, "uid": "probe:" + value}]
    module_store.write("MATCH (p:Probe {text: $text}) DELETE p", {"text": value})
    assert _counts(module_store)[0] == before[0] - 1


def test_nested_values_round_trip(module_store):
    value = {"s": NASTY, "n": [1, -2, 3.5, -0.0, 1e-300, 1.5e300, 2 ** 62], "b": [True, False, None],
             "m": {"k e y": "v\"al", "weird-key@x": {"deep": ['"', "\\"]}}}
    rows = module_store.read("RETURN $v AS v", {"v": value})
    got = rows[0]["v"]
    assert got["s"] == NASTY and got["b"] == [True, False, None] and got["m"] == value["m"]
    assert got["n"][:3] == [1, -2, 3.5] and math.copysign(1, got["n"][3]) == -1 and got["n"][4:] == value["n"][4:]
    assert type(got) is dict and type(got["m"]) is dict


def test_rows_with_nasty_strings_written_in_batches(module_store):
    rows = [{"uid": f"nasty-{i}", "text": s} for i, s in enumerate(NASTY)]
    before = _counts(module_store)
    n = module_store.write_rows("UNWIND $rows AS row MERGE (p:Probe {uid: row.uid}) SET p.text = row.text", rows,
                                batch_size=5)
    assert n == len(rows)
    got = {r["uid"]: r["text"] for r in module_store.read("MATCH (p:Probe) WHERE p.uid STARTS WITH 'nasty-' "
                                                          "RETURN p.uid AS uid, p.text AS text")}
    assert got == {r["uid"]: r["text"] for r in rows}
    assert _counts(module_store)[0] == before[0] + len(rows)
    module_store.write("MATCH (p:Probe) WHERE p.uid STARTS WITH 'nasty-' DELETE p")


def test_nodes_relationships_paths_are_plain(module_store):
    module_store.write("CREATE (:Probe:Extra {uid: 'pa', x: 1})-[:LINK {w: 0.5, tag: 'q\"'}]->(:Probe {uid: 'pb'})")
    row = module_store.read("MATCH p = (a:Probe {uid: 'pa'})-[e:LINK]->(b) RETURN a, e, b, p, [a.x, {k: b.uid}] AS mix")[0]
    assert row["a"] == {"_labels": ["Extra", "Probe"], "uid": "pa", "x": 1}
    assert row["e"] == {"_type": "LINK", "w": 0.5, "tag": 'q"'}
    assert row["p"] == {"nodes": [row["a"], row["b"]], "relationships": [row["e"]]}
    assert row["mix"] == [1, {"k": "pb"}]
    module_store.write("MATCH (p:Probe) WHERE p.uid IN ['pa', 'pb'] DETACH DELETE p")


# ---- FalkorDB's header encoding --------------------------------------------------------------------

def test_header_escapes_only_quote_and_backslash():
    assert encode_params({"s": 'a"b\\c\nd'}) == 'CYPHER s="a\\"b\\\\c\nd" '
    assert encode_params({"m": {"k": [1, 2.5, None, True]}}) == "CYPHER m={`k`:[1,2.5,null,true]} "
    assert encode_params({}) == "" and encode_params(None) == ""


@pytest.mark.parametrize("params, fragment", [
    ({"s": "a\0b"}, "NUL"), ({"x": float("nan")}, "finite"), ({"x": [float("inf")]}, "finite"),
    ({"x": 2 ** 64}, "64 bits"), ({"m": {"a`b": 1}}, "key"), ({"m": {"": 1}}, "key"), ({"o": object()}, "type"),
    ({"bad name": 1}, "identifier"), ({"x`": 1}, "identifier"),
])
def test_header_refuses_what_falkordb_cannot_carry(params, fragment):
    with pytest.raises(QueryError, match=fragment):
        encode_params(params)


def test_numpy_scalars_are_encoded_as_numbers():
    np = pytest.importorskip("numpy")
    assert encode_params({"v": [np.float32(0.5), np.int64(3), np.bool_(True)]}) == "CYPHER v=[0.5,3,true] "


def test_refused_values_reach_the_store_as_query_errors(embedded_store):
    with pytest.raises(QueryError):
        embedded_store.write("CREATE (:Probe {x: $x})", {"x": float("nan")})
    assert embedded_store.read("MATCH (n:Probe) RETURN count(n) AS c") == [{"c": 0}]
