// name: hub_neurons
// purpose: Neurons used by the most class circuits of a model (latest complete run of each class).
// param: model string            -- model name or Model uid
// param: min_classes int = 1     -- keep neurons used by at least this many classes
// param: limit int = 20          -- at most this many neurons
// columns: depth, layer, neuron, n_classes, classes
// A circuit uses a neuron when the run holds a semantic group of it. classes is sorted by name.
// Runs are ordered by class before their neurons are unwound (one entry per neuron and run, and one
// latest run per class), so classes comes out sorted without sorting every row.
// Ordered by n_classes descending, then depth and neuron index. A neuron is (layer, index) of the
// model: read from each run's per-neuron aggregates (Run.neuron_layer / neuron_index, written at
// ingest: docs/graph-model.md "Derived aggregates"), not from its SemanticGroup nodes; depth from the
// model's Layer nodes. The library refuses runs ingested before those aggregates existed
// (OutdatedRunError, exit 2: re-ingest them with --force). Each run's layer list is mapped to depths once (ds, aligned with
// Run.layers), so the ~8,000 rows per run are grouped by (depth, layer, neuron) alone: carrying the
// model's layer lists as grouping keys cost 2.5x at 10 ResNet50-shaped classes.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (m)-[:HAS_LAYER]->(l:Layer)
WITH m, collect(l.name) AS names, collect(l.depth) AS depths
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
WITH names, depths, r ORDER BY r.class_name
WITH r.class_name AS cls, r.layers AS layers, r.neuron_layer AS at, coalesce(r.neuron_index, []) AS idx,
     [x IN coalesce(r.layers, []) | [k IN range(0, size(names) - 1) WHERE names[k] = x | depths[k]][0]] AS ds
UNWIND range(0, size(idx) - 1) AS k
WITH ds[at[k]] AS depth, layers[at[k]] AS layer, idx[k] AS neuron, collect(cls) AS classes
WHERE size(classes) >= $min_classes
RETURN depth, layer, neuron, size(classes) AS n_classes, classes
ORDER BY n_classes DESC, depth, neuron
LIMIT $limit
