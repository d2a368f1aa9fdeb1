"""Best paths to the logit, computed at ingest time and stored on each NeuronGroup.

:mod:`neurflow_graph.analysis.best_paths` computes, for every neuron group of a run, its N
strongest paths to the logit group on normalised flow (k-best Viterbi over the layers). This
module stores them on the group node, flat so that Cypher reads them with list slicing and
no JSON:

* ``path_strength``: list<float>, the N strengths, strongest |strength| first;
* ``path_gids``: list<int>, N x (d + 1) group ids, path i = ``path_gids[i*(d+1) .. (i+1)*(d+1)]``
  from this group (depth d) up to the logit group; the layer of position j is ``Run.layers[d - j]``;
* ``path_flows``: list<float>, N x d normalised flows, hop j of path i = ``path_flows[i*d + j]``.

The Run gets ``paths_per_group`` (N). ``cypher/concept_paths_to_logit.cypher`` reads them; its cost
is the groups of one layer times N, whatever the circuit's number of paths. The properties are
derived from the circuit's content only (like every other property), so re-ingesting writes the
same values and the run uid does not depend on them.
"""

from __future__ import annotations

from typing import Any

from neurflow_graph.analysis.best_paths import DEFAULT_PATHS_PER_GROUP, best_paths
from neurflow_graph.circuit import Circuit
from neurflow_graph.identity import neuron_group_uid

PATHS_QUERY = ("UNWIND $rows AS row MATCH (g:NeuronGroup {uid: row.uid}) "
               "SET g.path_strength = row.strength, g.path_gids = row.gids, g.path_flows = row.flows")
RUN_PATHS_QUERY = "UNWIND $rows AS row MATCH (r:Run {uid: row.uid}) SET r.paths_per_group = row.n"


def best_path_rows(*, circuit: Circuit, run_uid: str, n: int = DEFAULT_PATHS_PER_GROUP) -> list[dict[str, Any]]:
    """One row per neuron group: ``uid`` plus the flat ``strength`` / ``gids`` / ``flows`` lists (module doc)."""
    rows = []
    for (layer, gid), paths in best_paths(circuit=circuit, n=n).items():
        rows.append({"uid": neuron_group_uid(run_uid, layer, gid),
                     "strength": [float(p.strength) for p in paths],
                     "gids": [int(g) for p in paths for _, g in p.groups],
                     "flows": [float(f) for p in paths for f in p.flows]})
    return rows


def write_best_paths(*, store: Any, circuit: Circuit, run_uid: str, n: int = DEFAULT_PATHS_PER_GROUP,
                     batch_size: int = 1000) -> int:
    """Compute and store every group's best paths of run ``run_uid`` (idempotent); return the groups written."""
    rows = best_path_rows(circuit=circuit, run_uid=run_uid, n=n)
    store.write_rows(PATHS_QUERY, rows, batch_size=batch_size)
    store.write_rows(RUN_PATHS_QUERY, [{"uid": run_uid, "n": n}], batch_size=1)
    return len(rows)
