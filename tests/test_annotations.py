"""The annotation layer (issue 8 item 2): plain data and the run directory's file, the graph on both
backends, and `neurflow-graph annotate` through CliRunner. Expected values come from the inputs
the test writes, never from the code under test."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from conftest import graph_dump
from neurflow_graph.annotations import (
    ANNOTATIONS_FILE, append_run_annotations, load_user_labels, make_annotation, preferred, read_run_annotations,
)
from neurflow_graph.cli import cli
from neurflow_graph.errors import InputError, RunFormatError
from neurflow_graph.identity import feeds_uid, neuron_group_uid, neuron_uid, run_uid
from neurflow_graph.store.annotations import read_annotations, write_annotations
from neurflow_graph.store.ingest import ingest, ingest_run_dir
from neurflow_graph.store.runs import delete_run, list_runs
from neurflow_graph.synthetic import synthetic_circuit


def small(index: int = 1, name: str = "cat", **kw):
    return synthetic_circuit(class_index=index, class_name=name, widths=(10, 24, 24, 16), **kw)


def group_note(c, layer_pos: int, gid: int, value, *, key="label", source="user", **kw):
    layer = c.model.layers[layer_pos]
    return make_annotation(target=neuron_group_uid(run_uid(c), layer, gid), target_label="NeuronGroup", key=key,
                           value=value, source=source, **kw)


# ---- plain data ---------------------------------------------------------------------------------------

def test_make_annotation_checks_its_fields():
    a = make_annotation(target="r/x/0", target_label="NeuronGroup", key="label", value="fur", source="user")
    assert a.created_at.endswith("+00:00") and a.meta == {}
    for bad in (dict(target_label="Edge"), dict(value=float("nan")), dict(value=None), dict(source=" user"),
                dict(key=""), dict(value={1: "x"}), dict(value=object())):
        with pytest.raises(InputError):
            make_annotation(**{**dict(target="r/x/0", target_label="NeuronGroup", key="label", value="fur",
                                      source="user"), **bad})


def test_run_dir_file_round_trips_and_the_newest_per_target_key_source_wins(tmp_path):
    old = make_annotation(target="t1", target_label="Run", key="label", value="old", source="user",
                          created_at="2026-01-01T00:00:00+00:00")
    new = make_annotation(target="t1", target_label="Run", key="label", value="new", source="user",
                          created_at="2026-02-01T00:00:00+00:00")
    other = make_annotation(target="t1", target_label="Run", key="label", value="bot", source="mllm:x",
                            meta={"prompt": 3, "images": ["ab", "cd"]})
    append_run_annotations(tmp_path, [old, other])
    append_run_annotations(tmp_path, [new])
    append_run_annotations(tmp_path, [old])  # an older value never replaces a newer one
    got = read_run_annotations(tmp_path)
    assert sorted((a.source, a.value) for a in got) == [("mllm:x", "bot"), ("user", "new")]
    assert next(a for a in got if a.source == "mllm:x") == other
    assert [p.name for p in tmp_path.iterdir()] == [ANNOTATIONS_FILE]  # no temp file left
    (tmp_path / ANNOTATIONS_FILE).write_text((tmp_path / ANNOTATIONS_FILE).read_text() + "{not json\n")
    with pytest.raises(RunFormatError, match="line 3"):
        read_run_annotations(tmp_path)


def test_preferred_source_is_user_then_mllm_then_ground_truth():
    def a(src, value, when):
        return make_annotation(target="g", target_label="NeuronGroup", key="concept", value=value, source=src,
                               created_at=when)
    notes = [a("ground_truth", "gt", "2026-03-01"), a("mllm:gpt-4o", "m1", "2026-01-01"),
             a("mllm:llava", "m2", "2026-02-01"), a("debug", "d", "2026-04-01")]
    assert preferred(notes, key="concept")["g"].value == "m2"  # mllm beats ground truth; newest mllm
    assert preferred(notes, key="concept", source="ground_truth")["g"].value == "gt"
    assert preferred(notes, key="concept", source="mllm:*")["g"].value == "m2"
    assert preferred([*notes, a("user", "u", "2020-01-01")], key="concept")["g"].value == "u"
    assert preferred(notes, key="label") == {}


# ---- the graph, both backends ---------------------------------------------------------------------------

def _core(store):
    """The graph without Annotation nodes and ANNOTATES edges."""
    nodes, rels = graph_dump(store)
    return ([n for n in nodes if '"Annotation"' not in n], [r for r in rels if '"ANNOTATES"' not in r])


def test_annotations_attach_by_uid_and_never_touch_the_run(store):
    c = small()
    uid = ingest(store=store, circuit=c).uid
    core = _core(store)
    layer = c.model.layers[2]
    e = next(e for e in c.group_edges if e.child_layer == layer)
    notes = [group_note(c, 2, 0, "whiskers"), group_note(c, 2, 0, "fur", source="mllm:gpt-4o"),
             group_note(c, 2, 0, "texture:fur", key="concept", source="ground_truth"),
             group_note(c, 2, 0, 0.75, key="purity", source="ground_truth"),
             make_annotation(target=uid, target_label="Run", key="evaluation.optimality", value={"M": 0.5, "n": [1, 2]},
                             source="evaluation:optimality"),
             make_annotation(target=neuron_uid("synthnet@random", c.neurons[1].layer, c.neurons[1].index),
                             target_label="Neuron", key="debug.flip_rate", value=0.25, source="debug"),
             make_annotation(target=feeds_uid(uid, e.child_layer, e.child_group, e.parent_layer, e.parent_group),
                             target_label="FEEDS", key="caption", value="fur makes the face", source="mllm:gpt-4o")]
    assert write_annotations(store=store, annotations=notes) == len(notes)
    assert _core(store) == core  # nothing of the run changed
    assert [r.uid for r in list_runs(store=store)] == [uid] == [run_uid(c)]
    got = {(a.target, a.key, a.source): a for a in read_annotations(store=store)}
    assert got == {(a.target, a.key, a.source): a for a in notes}
    # each points at its node; the FEEDS one at the edge's child group, whose edge has the uid
    pointed = store.read("MATCH (a:Annotation)-[:ANNOTATES]->(t) RETURN a.key AS k, a.source AS s, t.uid AS t, "
                         "a.value AS v")
    assert sorted((r["k"], r["s"], r["t"]) for r in pointed) == sorted(
        (a.key, a.source, a.target if a.target_label != "FEEDS" else neuron_group_uid(uid, e.child_layer, e.child_group))
        for a in notes)
    assert {r["v"] for r in pointed if r["k"] == "evaluation.optimality"} == {None}  # a dict: value_json only
    feeds = store.read("MATCH (a:Annotation {target_label: 'FEEDS'})-[:ANNOTATES]->(:NeuronGroup)-[f:FEEDS]->(p) "
                       "WHERE f.uid = a.target RETURN p.gid AS pg, f.weight AS w")
    assert feeds == [{"pg": e.parent_group, "w": pytest.approx(e.weight, rel=1e-14)}]
    # sources coexist; writing the same (target, key, source) again replaces the value
    write_annotations(store=store, annotations=[group_note(c, 2, 0, "long whiskers")])
    labels = read_annotations(store=store, target=notes[0].target, key="label")
    assert sorted((a.source, a.value) for a in labels) == [("mllm:gpt-4o", "fur"), ("user", "long whiskers")]
    assert store.read("MATCH (a:Annotation) RETURN count(a) AS n") == [{"n": len(notes)}]


def test_unknown_targets_are_refused_before_anything_is_written(store):
    c = small()
    ingest(store=store, circuit=c)
    good = group_note(c, 1, 0, "ok")
    bad = make_annotation(target=neuron_group_uid(run_uid(c), c.model.layers[1], 99), target_label="NeuronGroup",
                          key="label", value="x", source="user")
    with pytest.raises(InputError, match="not in"):
        write_annotations(store=store, annotations=[good, bad])
    assert read_annotations(store=store) == []
    assert write_annotations(store=store, annotations=[good, bad], skip_missing=True) == 1


def test_run_dir_annotations_survive_a_reingest_and_a_delete(store, tmp_path):
    c = small()
    c.save(tmp_path)
    append_run_annotations(tmp_path, [group_note(c, 1, 0, "stripes")])
    first = ingest_run_dir(store=store, run_dir=tmp_path)
    assert (first.annotations, first.annotations_skipped) == (1, 0)
    assert store.read("MATCH (r:Run) RETURN r.run_dir AS d") == [{"d": str(tmp_path.resolve())}]
    # a label added later is written by the next ingest, although the run itself is skipped
    append_run_annotations(tmp_path, [group_note(c, 1, 1, "spots"),
                                      group_note(small(seed=5), 1, 0, "stale")])  # another run's group
    again = ingest_run_dir(store=store, run_dir=tmp_path)
    assert again.skipped and again.uid == first.uid and (again.annotations, again.annotations_skipped) == (2, 1)
    assert "1 skipped" in again.summary()
    assert sorted(a.value for a in read_annotations(store=store)) == ["spots", "stripes"]
    delete_run(store=store, uid=first.uid)
    assert store.read("MATCH (n) RETURN count(n) AS n") == [{"n": 0}]
    ingest_run_dir(store=store, run_dir=tmp_path)
    assert sorted(a.value for a in read_annotations(store=store)) == ["spots", "stripes"]


# ---- neurflow-graph annotate ------------------------------------------------------------------------------

def _store_args(store) -> list[str]:
    if store.backend == "falkordb":
        return ["--store", f"embedded:{store.data_dir}", "--database", store._graph_name]
    return ["--store", os.environ["NEO4J_URI"]] + (["--database", os.environ["NEO4J_DATABASE"]]
                                                   if os.environ.get("NEO4J_DATABASE") else [])


def test_annotate_loads_json_and_csv_into_the_store_and_the_run_dir(store, tmp_path):
    c = small()
    run_dir = tmp_path / "run"
    c.save(run_dir)
    uid = ingest_run_dir(store=store, run_dir=run_dir).uid
    l1, l2 = c.model.layers[1], c.model.layers[2]
    (tmp_path / "labels.json").write_text(json.dumps(
        [{"uid": neuron_group_uid(uid, l1, 0), "label": "stripes"}, {"layer": l2, "group": 1, "label": "fur",
                                                                     "caption": "soft fur"}]))
    (tmp_path / "labels.csv").write_text(f"layer,group,label\n{l1},1,spots\n{l2},1,whiskers\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["annotate", "--run", uid[:6], str(tmp_path / "labels.json"), *_store_args(store)])
    assert r.exit_code == 0, r.output
    assert f"run {uid}: 3 annotations on 2 groups" in r.output
    r = runner.invoke(cli, ["annotate", "--run", uid, str(tmp_path / "labels.csv"), *_store_args(store)])
    assert r.exit_code == 0, r.output
    want = {(neuron_group_uid(uid, l1, 0), "label"): "stripes", (neuron_group_uid(uid, l2, 1), "label"): "whiskers",
            (neuron_group_uid(uid, l2, 1), "caption"): "soft fur", (neuron_group_uid(uid, l1, 1), "label"): "spots"}
    assert {(a.target, a.key): a.value for a in read_annotations(store=store, source="user")} == want
    assert {(a.target, a.key): a.value for a in read_run_annotations(run_dir)} == want  # the run dir recorded at ingest
    assert [x.uid for x in list_runs(store=store)] == [uid] == [run_uid(c)]


@pytest.mark.parametrize("content, message", [
    ("layer,group,label\n{l1},99,x\n", "has no group 99 (its groups: 0, 1"),
    ("layer,group,label\n{l1}x,0,x\n", "has no layer '{l1}x'; did you mean '{l1}'"),
    ('[{{"uid": "{uid}/nope/0", "label": "x"}}]', "has no neuron group '{uid}/nope/0'"),
    ("layer,group,label\n{l1},zero,x\n", "is not a group id"),
    ("layer,group\n{l1},0\n", "needs a header"),
    ('[{{"layer": "{l1}", "group": 0}}]', "no label"),
    ("[1, 2", "not valid JSON"),
])
def test_annotate_refuses_unknown_groups_in_one_line(store, tmp_path, content, message):
    c = small()
    uid = ingest(store=store, circuit=c).uid
    l1 = c.model.layers[1]
    path = tmp_path / ("labels.json" if content.lstrip().startswith("[") else "labels.csv")
    path.write_text(f"layer,group,label\n{l1},0,fine\n" + content.format(l1=l1, uid=uid).split("\n", 1)[1]
                    if content.startswith("layer,group,label") else content.format(l1=l1, uid=uid))
    r = CliRunner().invoke(cli, ["annotate", "--run", uid, str(path), *_store_args(store)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message.format(l1=l1, uid=uid) in lines[0]
    assert read_annotations(store=store) == []  # nothing written, not even the good first line


def test_annotate_names_an_unknown_run(store, tmp_path):
    ingest(store=store, circuit=small())
    (tmp_path / "l.csv").write_text("uid,label\nx/y/0,z\n")
    r = CliRunner().invoke(cli, ["annotate", "--run", "ffffzzzz", str(tmp_path / "l.csv"), *_store_args(store)])
    assert r.exit_code == 2 and "no run 'ffffzzzz'" in r.output


def test_user_label_files_parse_both_ways(tmp_path):
    (tmp_path / "a.csv").write_text("uid,label\nr/l/0, fur \n")
    [x] = load_user_labels(tmp_path / "a.csv")
    assert (x.uid, x.values) == ("r/l/0", {"label": "fur"})
    (tmp_path / "b.json").write_text(json.dumps({"labels": [{"layer": "conv", "group": "2", "label": "eye"}]}))
    [y] = load_user_labels(tmp_path / "b.json")
    assert (y.layer, y.gid, y.values) == ("conv", 2, {"label": "eye"})
    with pytest.raises(InputError, match="does not exist"):
        load_user_labels(tmp_path / "none.csv")


def test_a_version_1_run_dir_keeps_its_inline_concepts_as_ground_truth_annotations(store, tmp_path):
    c = small()
    d = c.to_dict()  # version 1: concept/purity inline on the groups
    g = c.neuron_groups[2]
    d["neuron_groups"][2].update(concept="object:flower", purity=0.8)
    (tmp_path / "circuit.json").write_text(json.dumps(d))
    res = ingest_run_dir(store=store, run_dir=tmp_path)
    assert res.uid == run_uid(c) and res.annotations == 2
    got = {(a.target, a.key, a.source): a.value for a in read_annotations(store=store)}
    target = neuron_group_uid(res.uid, g.layer, g.id)
    assert got == {(target, "concept", "ground_truth"): "object:flower", (target, "purity", "ground_truth"): 0.8}
