// name: polysemantic_neurons
// purpose: Neurons of a model with the most semantic groups, summed over the latest complete run of every class.
// param: model string            -- model name or Model uid
// param: limit int = 20          -- at most this many neurons
// columns: depth, layer, neuron, semantic_groups, n_classes, max_in_class, mean_per_class
// semantic_groups = Σ over classes of the neuron's semantic groups in that class's run; n_classes =
// runs using the neuron; max_in_class / mean_per_class per using run. Ordered by semantic_groups
// descending, then depth and neuron index. A neuron is (layer, index) of the model, read from each
// run's per-neuron aggregates (Run.neuron_layer / neuron_index / neuron_sgs, written at ingest:
// docs/graph-model.md "Derived aggregates"), not from its SemanticGroup nodes. Runs ingested before
// those aggregates existed contribute nothing until re-ingested with --force.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (m)-[:HAS_LAYER]->(l:Layer)
WITH m, collect(l.name) AS names, collect(l.depth) AS depths
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
WITH names, depths, r, coalesce(r.neuron_index, []) AS idx
UNWIND range(0, size(idx) - 1) AS i
WITH names, depths, r.layers[r.neuron_layer[i]] AS layer, idx[i] AS neuron, r.neuron_sgs[i] AS k
WITH names, depths, layer, neuron, toInteger(sum(k)) AS semantic_groups, count(*) AS n_classes, max(k) AS max_in_class
WITH layer, neuron, semantic_groups, n_classes, max_in_class,
     [i IN range(0, size(names) - 1) WHERE names[i] = layer | depths[i]][0] AS depth
RETURN depth, layer, neuron, semantic_groups, n_classes, max_in_class,
       toFloat(semantic_groups) / n_classes AS mean_per_class
ORDER BY semantic_groups DESC, depth, neuron
LIMIT $limit
