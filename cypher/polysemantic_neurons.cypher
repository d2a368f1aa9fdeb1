// name: polysemantic_neurons
// purpose: Neurons of a model with the most semantic groups, summed over the latest complete run of every class.
// param: model string            -- model name or Model uid
// param: limit int = 20          -- at most this many neurons
// columns: depth, layer, neuron, semantic_groups, n_classes, max_in_class, mean_per_class
// semantic_groups = Σ over classes of the neuron's semantic groups in that class's run; n_classes =
// runs using the neuron; max_in_class / mean_per_class per using run. Ordered by semantic_groups
// descending, then depth and neuron index. A neuron is (layer, index) of the model, read from each
// run's per-neuron aggregates (Run.neuron_layer / neuron_index / neuron_sgs, written at ingest:
// docs/graph-model.md "Derived aggregates"), not from its SemanticGroup nodes. The library refuses runs
// ingested before those aggregates existed (OutdatedRunError, exit 2: re-ingest them with --force). Each run's layer
// list is mapped to depths once (ds), so rows are grouped by (depth, layer, neuron) alone (as in
// hub_neurons).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (m)-[:HAS_LAYER]->(l:Layer)
WITH m, collect(l.name) AS names, collect(l.depth) AS depths
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
WITH r.layers AS layers, r.neuron_layer AS at, r.neuron_sgs AS sgs, coalesce(r.neuron_index, []) AS idx,
     [x IN coalesce(r.layers, []) | [k IN range(0, size(names) - 1) WHERE names[k] = x | depths[k]][0]] AS ds
UNWIND range(0, size(idx) - 1) AS i
WITH ds[at[i]] AS depth, layers[at[i]] AS layer, idx[i] AS neuron, toInteger(sum(sgs[i])) AS semantic_groups,
     count(*) AS n_classes, max(sgs[i]) AS max_in_class
RETURN depth, layer, neuron, semantic_groups, n_classes, max_in_class,
       toFloat(semantic_groups) / n_classes AS mean_per_class
ORDER BY semantic_groups DESC, depth, neuron
LIMIT $limit
