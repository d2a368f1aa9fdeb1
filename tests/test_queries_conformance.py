"""Every library query against an independent plain-Python/networkx oracle, on every backend.

The world: model ``synthnet`` with four classes (one with a name full of quotes, braces and
Cypher), model ``othernet`` with the class ``cat`` again, an older run of ``cat`` that is no
longer latest, and a newer run of ``dog`` whose ingestion died just before completing (its data
is in the store, its status is not complete).
Expected results are computed from the Circuit objects only, never from the store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx
import pytest

from neurflow_graph.circuit import Circuit
from neurflow_graph.errors import QueryError
from neurflow_graph.identity import neuron_group_uid
from neurflow_graph.queries.library import run_query
from neurflow_graph.queries.names import UnknownNameError
from neurflow_graph.store.ingest import COMPLETE_QUERY, FORCED_COMPLETE_QUERY, ingest_circuit
from neurflow_graph.synthetic import synthetic_circuit

NASTY = 'o\'hare "}) DETACH DELETE n // \\ {x}'
CLASSES = [(0, "cat"), (1, "dog"), (2, "bee"), (3, NASTY)]


class _Interrupted(Exception):
    pass


class _DiesAtCompletion:
    """Wraps a store; the first write that would mark a run 'complete' raises, like a crash just before."""

    def __init__(self, store):
        self._store = store
        self.backend = store.backend
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, query, params=None):
        # the queries that mark a run 'complete' (the claim query also names 'complete', in a condition)
        if query in (COMPLETE_QUERY, FORCED_COMPLETE_QUERY):
            raise _Interrupted()
        self.writes += 1
        return self._store.write(query, params)

    def write_rows(self, query, rows, **kw):
        from neurflow_graph.store.base import GraphStore
        return GraphStore.write_rows(self, query, rows, **kw)


@dataclass
class World:
    store: object
    latest: dict[tuple[str, str], Circuit] = field(default_factory=dict)   # (model, class) -> circuit
    run_uid: dict[int, str] = field(default_factory=dict)                  # id(circuit) -> run uid
    old: Circuit | None = None
    partial: Circuit | None = None

    def uid(self, c: Circuit) -> str:
        return self.run_uid[id(c)]

    def model_latest(self, model: str) -> list[Circuit]:
        return [c for (m, _), c in self.latest.items() if m == model]


def _circuit(model: str, index: int, name: str, *, seed: int = 0, created: str = "2026-02-01T00:00:00+00:00"):
    return synthetic_circuit(class_index=index, class_name=name, model_name=model, seed=seed,
                             created_at=created, widths=(10, 24, 24, 16))


def annotations_of(c: Circuit) -> list[tuple[str, int, str, object, str]]:
    """(layer, gid, key, value, source) for some groups, as ground-truth scoring and labelling write them:
    concepts from ground truth on even groups, a machine label on every third, a user label overriding
    it on every sixth (the default preference is user > mllm:* > ground_truth)."""
    out = []
    for g in c.neuron_groups:
        if g.id % 2 == 0:
            out += [(g.layer, g.id, "concept", f"texture:{g.layer}-{g.id}", "ground_truth"),
                    (g.layer, g.id, "purity", 0.5 + g.id / 100, "ground_truth")]
        if g.id % 3 == 0:
            out.append((g.layer, g.id, "label", f"{c.class_.name} {g.layer} {g.id}", "mllm:test"))
        if g.id % 6 == 0:
            out.append((g.layer, g.id, "label", f"user {g.layer} {g.id}", "user"))
    return out


def expected_annotation(c: Circuit, layer: str, gid: int, key: str, source: str | None = None):
    rank = {"user": 0, "ground_truth": 2}
    found = [(rank.get(src, 1), v) for lay, g, k, v, src in annotations_of(c)
             if (lay, g, k) == (layer, gid, key) and (source is None or src == source)]
    return min(found, key=lambda x: x[0])[1] if found else None


def expected_source(c: Circuit, layer: str, gid: int, key: str, source: str | None = None):
    """The source of the value expected_annotation picks (None when there is none)."""
    rank = {"user": 0, "ground_truth": 2}
    found = [(rank.get(src, 1), src) for lay, g, k, v, src in annotations_of(c)
             if (lay, g, k) == (layer, gid, key) and (source is None or src == source)]
    return min(found, key=lambda x: x[0])[1] if found else None


def _annotate(store, c: Circuit, uid: str) -> None:
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.store.annotations import write_annotations

    write_annotations(store=store, annotations=[
        make_annotation(target=neuron_group_uid(uid, layer, gid), target_label="NeuronGroup", key=key, value=value,
                        source=source) for layer, gid, key, value, source in annotations_of(c)])


def _build_world(store) -> World:
    w = World(store=store)
    old = _circuit("synthnet", 0, "cat", seed=99, created="2026-01-01T00:00:00+00:00")
    w.run_uid[id(old)] = ingest_circuit(store=store, circuit=old)
    _annotate(store, old, w.run_uid[id(old)])
    w.old = old
    for index, name in CLASSES:
        c = _circuit("synthnet", index, name)
        w.run_uid[id(c)] = ingest_circuit(store=store, circuit=c)
        _annotate(store, c, w.run_uid[id(c)])
        w.latest[("synthnet", name)] = c
    c = _circuit("othernet", 0, "cat")
    w.run_uid[id(c)] = ingest_circuit(store=store, circuit=c)
    _annotate(store, c, w.run_uid[id(c)])
    w.latest[("othernet", "cat")] = c
    # a newer run of dog whose ingestion dies just before it completes: it must stay invisible
    partial = _circuit("synthnet", 1, "dog", seed=7, created="2026-03-01T00:00:00+00:00")
    dying = _DiesAtCompletion(store)
    with pytest.raises(_Interrupted):
        ingest_circuit(store=dying, circuit=partial)
    rows = store.read("MATCH (r:Run) WHERE r.status <> 'complete' RETURN r.uid AS uid")
    assert len(rows) == 1 and dying.writes > 3, "the interrupted ingestion should leave one incomplete run"
    w.partial = partial
    w.run_uid[id(partial)] = rows[0]["uid"]
    return w


@pytest.fixture(scope="module")
def world(module_store):
    return _build_world(module_store)


# ---- oracles over Circuit objects -------------------------------------------------------------
def depth_of(c: Circuit) -> dict[str, int]:
    return {layer: i for i, layer in enumerate(c.model.layers)}


def neurons_at(c: Circuit) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for n in c.neurons:
        out[n.layer].add(n.index)
    return out


def group_neurons(c: Circuit) -> dict[tuple[str, int], set[int]]:
    return {(g.layer, g.id): {i for i, _ in g.members} for g in c.neuron_groups}


def group_patches(c: Circuit) -> dict[tuple[str, int], set[tuple]]:
    image = {i.id: i.sha256 for i in c.images}
    patch = {p.id: (image[p.image], tuple(p.box)) for p in c.patches}
    sg = {(n.layer, n.index, g.id): {patch[p] for p in g.patches} for n in c.neurons for g in n.semantic_groups}
    return {(g.layer, g.id): set().union(*(sg[(g.layer, i, j)] for i, j in g.members)) for g in c.neuron_groups}


def approx_rows(actual: list[dict], expected: list[dict]) -> None:
    """Row lists equal, floats to 1e-9 relative (FalkorDB sends doubles as 15-digit text)."""
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert set(a) == set(e), f"row {i}: columns {sorted(a)} vs {sorted(e)}"
        for k in e:
            assert _close(a[k], e[k]), f"row {i} column {k}: {a[k]!r} != {e[k]!r}\n{a}\n{e}"


def _close(a, b) -> bool:
    if isinstance(b, float) or isinstance(a, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(b, list) and isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


# ---- 1. class_circuit -----------------------------------------------------------------------
def flows_of(c: Circuit) -> dict[tuple, float]:
    """Normalised flow W / Σ|W| into the parent group, per (child layer, child gid, parent layer, parent gid)."""
    inflow: dict[tuple, float] = defaultdict(float)
    for e in c.group_edges:
        inflow[(e.parent_layer, e.parent_group)] += abs(e.weight)
    return {(e.child_layer, e.child_group, e.parent_layer, e.parent_group): e.weight / inflow[(e.parent_layer, e.parent_group)]
            for e in c.group_edges}


def oracle_class_circuit(c: Circuit, run: str, source: str | None = None) -> list[dict]:
    depth, members, flows = depth_of(c), group_neurons(c), flows_of(c)
    rows = []
    for g in c.neuron_groups:
        out = sorted((e for e in c.group_edges if (e.child_layer, e.child_group) == (g.layer, g.id)),
                     key=lambda e: e.parent_group)
        rows.append({"run": run, "depth": depth[g.layer], "layer": g.layer, "group_id": g.id,
                     "label": expected_annotation(c, g.layer, g.id, "label", source),
                     "label_source": expected_source(c, g.layer, g.id, "label", source),
                     "caption": expected_annotation(c, g.layer, g.id, "caption", source),
                     "concept": expected_annotation(c, g.layer, g.id, "concept", source),
                     "purity": expected_annotation(c, g.layer, g.id, "purity", source),
                     "n_members": len(g.members), "members": sorted(list(m) for m in g.members),
                     "neurons": sorted(members[(g.layer, g.id)]),
                     "parents": [f"{e.parent_layer}/{e.parent_group}" for e in out],
                     "weights": [e.weight for e in out],
                     "flows": [flows[(e.child_layer, e.child_group, e.parent_layer, e.parent_group)] for e in out]})
    return sorted(rows, key=lambda r: (r["depth"], r["group_id"]))


@pytest.mark.parametrize("model, cls", [("synthnet", "cat"), ("synthnet", NASTY), ("othernet", "cat")])
def test_class_circuit(world, model, cls):
    c = world.latest[(model, cls)]
    rows = run_query(store=world.store, name="class_circuit", params={"model": model, "class": cls})
    approx_rows(rows, oracle_class_circuit(c, world.uid(c)))


def test_class_circuit_reads_an_older_run_by_uid(world):
    uid = world.uid(world.old)
    rows = run_query(store=world.store, name="class_circuit", params={"model": "synthnet", "class": "cat", "run": uid})
    approx_rows(rows, oracle_class_circuit(world.old, uid))


def test_class_circuit_picks_an_annotation_source(world):
    c = world.latest[("synthnet", "cat")]
    for source in ("mllm:test", "ground_truth"):
        rows = run_query(store=world.store, name="class_circuit",
                         params={"model": "synthnet", "class": "cat", "source": source})
        approx_rows(rows, oracle_class_circuit(c, world.uid(c), source))
    assert any(r["label"] for r in rows) is False and any(r["concept"] for r in rows)


def test_incomplete_run_is_refused_even_by_uid(world):
    uid = world.uid(world.partial)
    held = world.store.read("MATCH (s:SemanticGroup {run: $run}) RETURN count(s) AS c", {"run": uid})
    assert held[0]["c"] > 0, "the interrupted run should have left data behind"
    with pytest.raises(UnknownNameError, match="not complete"):
        run_query(store=world.store, name="shared_neurons_by_layer",
                  params={"model": "synthnet", "class_a": "cat", "class_b": "dog", "run_b": uid})
    with pytest.raises(UnknownNameError, match="not complete"):
        run_query(store=world.store, name="class_circuit", params={"model": "synthnet", "class": "dog", "run": uid[:10]})
    rows = run_query(store=world.store, name="class_circuit", params={"model": "synthnet", "class": "dog"})
    dog = world.latest[("synthnet", "dog")]
    approx_rows(rows, oracle_class_circuit(dog, world.uid(dog)))


# ---- 2. shared_neurons_by_layer ---------------------------------------------------------------
def oracle_shared_neurons(a: Circuit, b: Circuit, ua: str, ub: str) -> list[dict]:
    na, nb = neurons_at(a), neurons_at(b)
    rows = []
    for d, layer in enumerate(a.model.layers):
        sa, sb = na.get(layer, set()), nb.get(layer, set())
        if sa or sb:
            union = len(sa | sb)
            rows.append({"depth": d, "layer": layer, "n_a": len(sa), "n_b": len(sb), "shared": len(sa & sb),
                         "n_union": union, "jaccard": len(sa & sb) / union, "run_a": ua, "run_b": ub})
    return rows


@pytest.mark.parametrize("pair", [("cat", "dog"), ("bee", NASTY), ("dog", "dog")])
def test_shared_neurons_by_layer(world, pair):
    a, b = (world.latest[("synthnet", x)] for x in pair)
    rows = run_query(store=world.store, name="shared_neurons_by_layer",
                     params={"model": "synthnet", "class_a": pair[0], "class_b": pair[1]})
    approx_rows(rows, oracle_shared_neurons(a, b, world.uid(a), world.uid(b)))


def test_shared_neurons_by_layer_with_old_run(world):
    dog = world.latest[("synthnet", "dog")]
    rows = run_query(store=world.store, name="shared_neurons_by_layer",
                     params={"model": "synthnet", "class_a": "cat", "class_b": "dog", "run_a": world.uid(world.old)})
    approx_rows(rows, oracle_shared_neurons(world.old, dog, world.uid(world.old), world.uid(dog)))


# ---- 3. shared_groups -----------------------------------------------------------------------
def _pairs_by_jaccard(ga: dict, gb: dict, *, same_layer: bool, min_shared: int) -> list[dict]:
    rows = []
    for (la, ia), sa in ga.items():
        for (lb, ib), sb in gb.items():
            if same_layer and la != lb:
                continue
            shared = len(sa & sb)
            if shared >= min_shared:
                rows.append({"la": la, "ia": ia, "lb": lb, "ib": ib, "na": len(sa), "nb": len(sb),
                             "shared": shared, "jaccard": shared / len(sa | sb)})
    return rows


def oracle_shared_groups(a: Circuit, b: Circuit, *, min_shared: int, limit: int) -> list[dict]:
    pairs = _pairs_by_jaccard(group_neurons(a), group_neurons(b), same_layer=True, min_shared=min_shared)
    pairs.sort(key=lambda p: (-p["jaccard"], -p["shared"], p["la"], p["ia"], p["ib"]))
    return [{"layer": p["la"], "group_a": p["ia"], "group_b": p["ib"],
             "label_a": expected_annotation(a, p["la"], p["ia"], "label"),
             "label_b": expected_annotation(b, p["lb"], p["ib"], "label"),
             "concept_a": expected_annotation(a, p["la"], p["ia"], "concept"),
             "concept_b": expected_annotation(b, p["lb"], p["ib"], "concept"), "size_a": p["na"], "size_b": p["nb"],
             "shared": p["shared"], "jaccard": p["jaccard"]} for p in pairs[:limit]]


@pytest.mark.parametrize("pair, min_shared, limit", [(("cat", "dog"), 1, 1000), (("cat", NASTY), 2, 5),
                                                     (("bee", "dog"), 1, 3)])
def test_shared_groups(world, pair, min_shared, limit):
    a, b = (world.latest[("synthnet", x)] for x in pair)
    rows = run_query(store=world.store, name="shared_groups",
                     params={"model": "synthnet", "class_a": pair[0], "class_b": pair[1],
                             "min_shared": min_shared, "limit": limit})
    expected = oracle_shared_groups(a, b, min_shared=min_shared, limit=limit)
    assert expected, "the world should give overlapping groups"
    approx_rows(rows, expected)


# ---- 4. concept_paths_to_logit -----------------------------------------------------------------
def oracle_paths(c: Circuit, layer: str, group: int | None) -> list[tuple[list[str], float]]:
    """Every path by networkx enumeration, strength = product of normalised flows (computed here)."""
    g = nx.DiGraph()
    inflow: dict[tuple, float] = defaultdict(float)
    for e in c.group_edges:
        inflow[(e.parent_layer, e.parent_group)] += abs(e.weight)
    for e in c.group_edges:
        parent = (e.parent_layer, e.parent_group)
        g.add_edge((e.child_layer, e.child_group), parent, flow=e.weight / inflow[parent])
    tops = [n for n in g if n[0] == c.model.layers[0]]
    starts = [(gr.layer, gr.id) for gr in c.neuron_groups if gr.layer == layer and (group is None or gr.id == group)]
    out = []
    for s in starts:
        for t in tops:
            if s not in g:
                continue
            for path in nx.all_simple_paths(g, s, t):
                strength = math.prod(g.edges[u, v]["flow"] for u, v in zip(path, path[1:]))
                out.append(([f"{lay}/{gid}" for lay, gid in path], strength))
    out.sort(key=lambda p: (-abs(p[1]), [int(x.rsplit("/", 1)[1]) for x in p[0]]))
    return out


@pytest.mark.parametrize("cls, layer, group, limit", [("cat", "block1", None, 32), ("dog", "block2", 0, 32),
                                                      (NASTY, "block1", 1, 5), ("bee", "block1", None, 7)])
def test_concept_paths_to_logit(world, cls, layer, group, limit):
    c = world.latest[("synthnet", cls)]
    expected = oracle_paths(c, layer, group)[:limit]
    assert len(expected) > 1
    rows = run_query(store=world.store, name="concept_paths_to_logit",
                     params={"model": "synthnet", "class": cls, "layer": layer, "group": group, "limit": limit})
    assert [r["path"] for r in rows] == [p for p, _ in expected]
    assert _close([r["strength"] for r in rows], [s for _, s in expected])
    flows = flows_of(c)
    for r in rows:
        assert r["run"] == world.uid(c)
        assert r["sign"] == (1 if r["strength"] > 0 else -1 if r["strength"] < 0 else 0)
        assert -1 <= r["strength"] <= 1 and math.isclose(r["abs_strength"], abs(r["strength"]), rel_tol=1e-12)
        nodes = [(p.rsplit("/", 1)[0], int(p.rsplit("/", 1)[1])) for p in r["path"]]
        assert r["start_group"] == nodes[0][1]
        assert _close(r["flows"], [flows[(a[0], a[1], b[0], b[1])] for a, b in zip(nodes, nodes[1:])])
        assert r["labels"] == [expected_annotation(c, lay, gid, "label") for lay, gid in nodes]
        assert r["concepts"] == [expected_annotation(c, lay, gid, "concept") for lay, gid in nodes]


def test_concept_paths_to_logit_refuses_more_than_stored(world):
    with pytest.raises(UnknownNameError, match="at most 32"):
        run_query(store=world.store, name="concept_paths_to_logit",
                  params={"model": "synthnet", "class": "cat", "layer": "block1", "limit": 33})


# ---- 5. top_groups_per_layer -------------------------------------------------------------------
def oracle_top_groups(c: Circuit, top: int) -> list[dict]:
    depth, rows = depth_of(c), []
    for layer in c.model.layers[1:]:
        stats = []
        for g in (g for g in c.neuron_groups if g.layer == layer):
            out = [e.weight for e in c.group_edges if (e.child_layer, e.child_group) == (layer, g.id)]
            stats.append((sum(abs(w) for w in out), sum(out), len(out), g))
        stats.sort(key=lambda s: (-s[0], s[3].id))
        rows += [{"depth": depth[layer], "layer": layer, "rank": i + 1, "group_id": g.id,
                  "label": expected_annotation(c, layer, g.id, "label"),
                  "concept": expected_annotation(c, layer, g.id, "concept"),
                  "out_abs_weight": a, "out_weight": w, "n_parents": n} for i, (a, w, n, g) in enumerate(stats[:top])]
    return rows


@pytest.mark.parametrize("cls, top", [("cat", 3), ("dog", 1), (NASTY, 100)])
def test_top_groups_per_layer(world, cls, top):
    c = world.latest[("synthnet", cls)]
    rows = run_query(store=world.store, name="top_groups_per_layer",
                     params={"model": "synthnet", "class": cls, "top": top})
    approx_rows(rows, oracle_top_groups(c, top))


# ---- 6. hub_neurons ------------------------------------------------------------------------------
def oracle_hub_neurons(circuits: list[Circuit], *, min_classes: int, limit: int) -> list[dict]:
    users: dict[tuple[str, int], set[str]] = defaultdict(set)
    for c in circuits:
        for n in c.neurons:
            users[(n.layer, n.index)].add(c.class_.name)
    depth = depth_of(circuits[0])
    rows = [{"depth": depth[layer], "layer": layer, "neuron": idx, "n_classes": len(cls), "classes": sorted(cls)}
            for (layer, idx), cls in users.items() if len(cls) >= min_classes]
    rows.sort(key=lambda r: (-r["n_classes"], r["depth"], r["neuron"]))
    return rows[:limit]


@pytest.mark.parametrize("min_classes, limit", [(1, 10000), (2, 15), (3, 5)])
def test_hub_neurons(world, min_classes, limit):
    rows = run_query(store=world.store, name="hub_neurons",
                     params={"model": "synthnet", "min_classes": min_classes, "limit": limit})
    expected = oracle_hub_neurons(world.model_latest("synthnet"), min_classes=min_classes, limit=limit)
    assert expected
    approx_rows(rows, expected)


# ---- 7. classes_sharing_group -----------------------------------------------------------------
def oracle_classes_sharing(world: World, cls: str, layer: str, gid: int, min_shared: int) -> list[dict]:
    mine = group_neurons(world.latest[("synthnet", cls)])[(layer, gid)]
    rows = []
    for other in world.model_latest("synthnet"):
        if other.class_.name == cls:
            continue
        for g in other.neuron_groups:
            if g.layer != layer:
                continue
            theirs = {i for i, _ in g.members}
            shared = len(mine & theirs)
            if shared >= min_shared:
                rows.append({"class_name": other.class_.name, "run": world.uid(other), "group_id": g.id,
                             "label": expected_annotation(other, layer, g.id, "label"),
                             "concept": expected_annotation(other, layer, g.id, "concept"),
                             "group_size": len(theirs), "shared": shared,
                             "jaccard": shared / len(mine | theirs)})
    rows.sort(key=lambda r: (-r["jaccard"], -r["shared"], r["class_name"], r["group_id"]))
    return rows


@pytest.mark.parametrize("cls, layer, gid, min_shared", [("cat", "block1", 0, 1), ("dog", "block2", 1, 1),
                                                         (NASTY, "block1", 2, 2)])
def test_classes_sharing_group(world, cls, layer, gid, min_shared):
    rows = run_query(store=world.store, name="classes_sharing_group",
                     params={"model": "synthnet", "class": cls, "layer": layer, "group": gid,
                             "min_shared": min_shared})
    expected = oracle_classes_sharing(world, cls, layer, gid, min_shared)
    assert expected
    approx_rows(rows, expected)


# ---- 8. compare_models ----------------------------------------------------------------------------
def oracle_compare_models(a: Circuit, b: Circuit, ua: str, ub: str, *, min_shared: int, limit: int) -> list[dict]:
    def metrics(c: Circuit, uid: str) -> dict:
        return {"run": uid, "layers": len({n.layer for n in c.neurons}), "neurons": len(c.neurons),
                "semantic_groups": sum(len(n.semantic_groups) for n in c.neurons),
                "neuron_groups": len(c.neuron_groups), "neuron_edges": len(c.edges),
                "group_edges": len(c.group_edges)}

    ma, mb = metrics(a, ua), metrics(b, ub)
    none = {"layer_a": None, "group_a": None, "layer_b": None, "group_b": None, "shared": None, "jaccard": None,
            "label_a": None, "label_b": None}
    rows = [{"section": "summary", "metric": k, **none, "value_a": ma[k], "value_b": mb[k]} for k in ma]
    pairs = _pairs_by_jaccard(group_patches(a), group_patches(b), same_layer=False, min_shared=min_shared)
    pairs.sort(key=lambda p: (-p["jaccard"], -p["shared"], p["la"], p["ia"], p["lb"], p["ib"]))
    rows += [{"section": "pair", "metric": "patch_overlap", "layer_a": p["la"], "group_a": p["ia"],
              "layer_b": p["lb"], "group_b": p["ib"], "value_a": p["na"], "value_b": p["nb"],
              "shared": p["shared"], "jaccard": p["jaccard"],
              "label_a": expected_annotation(a, p["la"], p["ia"], "label"),
              "label_b": expected_annotation(b, p["lb"], p["ib"], "label")} for p in pairs[:limit]]
    return rows


@pytest.mark.parametrize("min_shared, limit", [(1, 10000), (20, 7)])
def test_compare_models(world, min_shared, limit):
    a, b = world.latest[("synthnet", "cat")], world.latest[("othernet", "cat")]
    rows = run_query(store=world.store, name="compare_models",
                     params={"model_a": "synthnet", "model_b": "othernet", "class": "cat",
                             "min_shared": min_shared, "limit": limit})
    expected = oracle_compare_models(a, b, world.uid(a), world.uid(b), min_shared=min_shared, limit=limit)
    assert len(expected) > 7
    summary = [r for r in rows if r["section"] == "summary"]
    order = [r["metric"] for r in expected if r["section"] == "summary"]
    summary.sort(key=lambda r: order.index(r["metric"]))
    approx_rows(summary + [r for r in rows if r["section"] == "pair"], expected)


# ---- 9. polysemantic_neurons ----------------------------------------------------------------------
def oracle_polysemantic(circuits: list[Circuit], limit: int) -> list[dict]:
    per: dict[tuple[str, int], list[int]] = defaultdict(list)
    for c in circuits:
        for n in c.neurons:
            per[(n.layer, n.index)].append(len(n.semantic_groups))
    depth = depth_of(circuits[0])
    rows = [{"depth": depth[layer], "layer": layer, "neuron": idx, "semantic_groups": sum(ks),
             "n_classes": len(ks), "max_in_class": max(ks), "mean_per_class": sum(ks) / len(ks)}
            for (layer, idx), ks in per.items()]
    rows.sort(key=lambda r: (-r["semantic_groups"], r["depth"], r["neuron"]))
    return rows[:limit]


@pytest.mark.parametrize("limit", [10000, 6])
def test_polysemantic_neurons(world, limit):
    rows = run_query(store=world.store, name="polysemantic_neurons", params={"model": "synthnet", "limit": limit})
    approx_rows(rows, oracle_polysemantic(world.model_latest("synthnet"), limit))


# ---- 10. dashboard_summary -------------------------------------------------------------------------
def oracle_dashboard(world: World, model: str | None) -> list[dict]:
    rows = []
    for (m, cls), c in world.latest.items():
        if model is not None and m != model:
            continue
        sgs = defaultdict(int)
        for n in c.neurons:
            sgs[n.layer] += len(n.semantic_groups)
        at = neurons_at(c)
        for d, layer in enumerate(c.model.layers):
            if not sgs[layer]:
                continue
            rows.append({"model": m, "model_uid": f"{m}@random", "class_name": cls, "run": world.uid(c),
                         "depth": d, "layer": layer, "neurons": len(at[layer]), "semantic_groups": sgs[layer],
                         "neuron_groups": sum(g.layer == layer for g in c.neuron_groups),
                         "group_edges": sum(e.child_layer == layer for e in c.group_edges)})
    rows.sort(key=lambda r: (r["model"], r["model_uid"], r["class_name"], r["depth"]))
    return rows


@pytest.mark.parametrize("model", [None, "othernet", "synthnet@random"])
def test_dashboard_summary(world, model):
    rows = run_query(store=world.store, name="dashboard_summary", params={"model": model})
    # Model uids are name@weights-sha256[:16], or name@random without weights (docs/architecture.md)
    approx_rows(rows, oracle_dashboard(world, None if model is None else model.split("@")[0]))


# ---- injection and read-only ----------------------------------------------------------------------
def _counts(store) -> tuple[int, int]:
    n = store.read("MATCH (n) RETURN count(n) AS c")[0]["c"]
    r = store.read("MATCH ()-[e]->() RETURN count(e) AS c")[0]["c"]
    return n, r


@pytest.mark.parametrize("evil", ['x"}) DETACH DELETE n //', "x'}) DETACH DELETE n //", "\\' OR 1=1 //",
                                  "${model}", "cat\" OR true //", "}{)(][", "MATCH (n) DETACH DELETE n"])
def test_parameters_are_data_not_cypher(world, evil):
    before = _counts(world.store)
    for name, params in [("class_circuit", {"model": "synthnet", "class": evil}),
                         ("hub_neurons", {"model": evil}),
                         ("shared_groups", {"model": "synthnet", "class_a": evil, "class_b": "cat"}),
                         ("dashboard_summary", {"model": evil})]:
        with pytest.raises(UnknownNameError):
            run_query(store=world.store, name=name, params=params)
    assert _counts(world.store) == before


@pytest.mark.parametrize("name, params, needle", [
    ("top_groups_per_layer", {"model": "nope", "class": "cat"}, "unknown model 'nope'"),
    ("top_groups_per_layer", {"model": "synthnett", "class": "cat"}, "did you mean 'synthnet'"),
    ("class_circuit", {"model": "synthnet", "class": "Cat"}, "unknown class 'Cat' .*did you mean 'cat'"),
    ("class_circuit", {"model": "synthnet", "class": "7"}, "unknown class '7'"),
    ("concept_paths_to_logit", {"model": "synthnet", "class": "cat", "layer": "block9"}, "no layer 'block9'"),
    ("concept_paths_to_logit", {"model": "synthnet", "class": "cat", "layer": "block1", "group": 99},
     "no group 99: groups 0, 1"),
    ("classes_sharing_group", {"model": "synthnet", "class": "cat", "layer": "block1", "group": 0, "run": "zz"},
     "no run 'zz'"),
    ("compare_models", {"model_a": "synthnet", "model_b": "othernet", "class": "dog"},
     "unknown class 'dog' for model othernet"),
    ("class_circuit", {"model": "synthnet", "class": "cat", "source": "mlm:test"}, "did you mean 'mllm:test'"),
])
def test_unknown_names_are_errors_with_close_matches(world, name, params, needle):
    with pytest.raises(UnknownNameError, match=needle):
        run_query(store=world.store, name=name, params=params)


def test_class_by_index_and_run_by_prefix(world):
    c = world.latest[("synthnet", "bee")]
    rows = run_query(store=world.store, name="class_circuit", params={"model": "synthnet@random", "class": "2"})
    approx_rows(rows, oracle_class_circuit(c, world.uid(c)))
    old = world.uid(world.old)
    rows = run_query(store=world.store, name="class_circuit", params={"model": "synthnet", "class": "cat", "run": old[:6]})
    approx_rows(rows, oracle_class_circuit(world.old, old))
    with pytest.raises(UnknownNameError, match="explains class 'cat', not 'dog'"):
        run_query(store=world.store, name="class_circuit", params={"model": "synthnet", "class": "dog", "run": old})


def test_bad_parameters_fail_before_the_store(world):
    with pytest.raises(QueryError, match="needs parameter class"):
        run_query(store=world.store, name="class_circuit", params={"model": "synthnet"})
