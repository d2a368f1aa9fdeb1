"""Runs ingested before the derived aggregates existed are refused by the queries that read them.

Such a run answers silently incompletely (hub_neurons, polysemantic_neurons, dashboard_summary,
shared_neurons_by_layer, classes_sharing_group... read aggregates written at ingest), so every
aggregate-reading library query stops with one line naming the run and the command that repairs it
(``ingest --force``), exit 2. The old run is made here by stripping one run of a real store (both
backends) of what an older version did not write: ``Run.aggregates`` and the aggregates themselves.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from neurflow_graph.cli import cli
from neurflow_graph.queries.library import run_query
from neurflow_graph.queries.names import AGGREGATES_MODEL_WIDE, AGGREGATES_SELECTED, OutdatedRunError
from neurflow_graph.store.ingest import ingest_run_dir
from neurflow_graph.synthetic import synthetic_circuit

# every aggregate-reading library query, with parameters reading runs of both classes (or of one: "cat" / "dog")
PARAMS = {
    "hub_neurons": {"model": "synthnet"},
    "polysemantic_neurons": {"model": "synthnet"},
    "dashboard_summary": {},
    "classes_sharing_group": {"model": "synthnet", "class": "dog", "layer": "block3", "group": 0},
    "shared_neurons_by_layer": {"model": "synthnet", "class_a": "cat", "class_b": "dog"},
    "shared_groups": {"model": "synthnet", "class_a": "cat", "class_b": "dog"},
    "compare_models": {"model_a": "synthnet", "model_b": "synthnet", "class": "cat"},
    "class_circuit": {"model": "synthnet", "class": "cat"},
}


def _strip_aggregates(store, uid: str) -> None:
    """What a run ingested before the derived aggregates existed looks like (docs/graph-model.md)."""
    store.write("MATCH (r:Run {uid: $uid}) REMOVE r.aggregates, r.n_layers, r.neuron_layer, r.neuron_index, "
                "r.neuron_sgs", {"uid": uid})
    store.write("MATCH (g:NeuronGroup {run: $uid}) REMOVE g.neurons, g.members_i, g.members_j, g.n_patches",
                {"uid": uid})
    store.write("MATCH (g:NeuronGroup {run: $uid})-[s:SHARES_PATCHES]-() DELETE s", {"uid": uid})


def _cli_store(store) -> list[str]:
    if store.backend == "falkordb":
        return ["--store", f"embedded:{store.data_dir}", "--database", store._graph_name]
    db = os.environ.get("NEO4J_DATABASE")
    return ["--store", os.environ["NEO4J_URI"], *(["--database", db] if db else [])]


def test_queries_refuse_runs_without_aggregates_until_force_reingested(store, tmp_path):
    assert set(PARAMS) == AGGREGATES_MODEL_WIDE | AGGREGATES_SELECTED
    dirs = {}
    for i, name in enumerate(["cat", "dog"]):
        dirs[name] = tmp_path / name
        synthetic_circuit(class_index=i, class_name=name, widths=(10, 24, 24, 16)).save(dirs[name])
    uids = {name: ingest_run_dir(store=store, run_dir=d).uid for name, d in dirs.items()}
    fresh = {name: run_query(store=store, name=name, params=p) for name, p in PARAMS.items()}
    dog_only = {"model": "synthnet", "class": "dog"}
    fresh_dog = run_query(store=store, name="class_circuit", params=dog_only)
    assert all(fresh[n] for n in ("hub_neurons", "polysemantic_neurons", "dashboard_summary", "class_circuit"))

    _strip_aggregates(store, uids["cat"])
    for name, p in PARAMS.items():
        with pytest.raises(OutdatedRunError) as info:
            run_query(store=store, name=name, params=p)
        msg = str(info.value)
        assert uids["cat"] in msg and uids["dog"] not in msg and "'cat'" in msg, msg
        assert f"neurflow-graph ingest --force {dirs['cat'].resolve()}" in msg and name in msg, msg
        assert "\n" not in msg
    # a query reading only the other class's run still answers, as before
    assert fresh_dog and run_query(store=store, name="class_circuit", params=dog_only) == fresh_dog
    # the command line: one line, exit 2 (docs/errors.md)
    r = CliRunner().invoke(cli, ["query", "hub_neurons", "-p", "model=synthnet", *_cli_store(store)])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1 and "--force" in r.output, r.output

    # a plain re-ingest skips the complete run and leaves it refused; --force repairs it
    assert ingest_run_dir(store=store, run_dir=dirs["cat"]).skipped
    with pytest.raises(OutdatedRunError):
        run_query(store=store, name="hub_neurons", params=PARAMS["hub_neurons"])
    r = CliRunner().invoke(cli, ["ingest", "--force", str(dirs["cat"]), *_cli_store(store)])
    assert r.exit_code == 0, r.output
    assert {name: run_query(store=store, name=name, params=p) for name, p in PARAMS.items()} == fresh
