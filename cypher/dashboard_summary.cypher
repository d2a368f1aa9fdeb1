// name: dashboard_summary
// purpose: Counts per model, class and layer over the latest complete runs, one row each, ready for a dashboard.
// param: model string = null     -- model name or Model uid; null: every model
// columns: model, model_uid, class_name, run, depth, layer, neurons, semantic_groups, neuron_groups, group_edges
// neurons / semantic_groups: of the run at that layer (neurons = distinct neuron indices of its
// semantic groups); neuron_groups: groups at that layer; group_edges: FEEDS edges out of the layer's
// groups (to the layer above). Layers where the run has no semantic group are left out.
// Neuron-level edge counts are not here on purpose: counting ~1k CONTRIBUTES edges per run for every
// run doubled the cost at 100 classes; compare_models reports them per run. neurons / semantic_groups
// are read from each run's per-neuron aggregates (Run.neuron_layer / neuron_sgs, written at ingest:
// docs/graph-model.md "Derived aggregates"), not from its ~19k SemanticGroup nodes (284 -> 67 ms at
// 10 ResNet50-shaped classes under load); the library refuses
// runs ingested before those existed (OutdatedRunError, exit 2: re-ingest them with --force).
MATCH (m:Model) WHERE $model IS NULL OR m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
WITH m, r, r.layers AS layers, coalesce(r.neuron_layer, []) AS at, r.neuron_sgs AS sgs
UNWIND range(0, size(at) - 1) AS k
WITH m, r, layers[at[k]] AS layer_name, toInteger(sum(sgs[k])) AS semantic_groups, count(*) AS neurons
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: layer_name})
OPTIONAL MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: layer_name})
OPTIONAL MATCH (g)-[f:FEEDS]->(:NeuronGroup)
WITH m, r, l, semantic_groups, neurons, count(DISTINCT g) AS neuron_groups, count(f) AS group_edges
RETURN m.name AS model, m.uid AS model_uid, r.class_name AS class_name, r.uid AS run, l.depth AS depth,
       l.name AS layer, neurons, semantic_groups, neuron_groups, group_edges
ORDER BY model, model_uid, class_name, depth
