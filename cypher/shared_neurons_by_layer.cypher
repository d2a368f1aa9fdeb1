// name: shared_neurons_by_layer
// purpose: Two classes of one model: per layer |A|, |B|, |A∩B|, |A∪B| and Jaccard of their circuits' neurons.
// param: model string            -- model name or Model uid
// param: class_a string          -- first class name
// param: class_b string          -- second class name
// param: run_a string = null     -- run uid for class_a; null: its latest complete run
// param: run_b string = null     -- run uid for class_b; null: its latest complete run
// columns: depth, layer, n_a, n_b, shared, n_union, jaccard, run_a, run_b
// A (B) is the set of neurons at that layer holding a semantic group of class_a's (class_b's) run.
// Layers where neither circuit has a neuron are left out. One pass over both runs' per-neuron
// aggregates (Run.neuron_layer / neuron_index, one entry per neuron holding a semantic group, written
// at ingest: docs/graph-model.md "Derived aggregates"), grouped by (layer, neuron): no SemanticGroup
// scan (~19k nodes per ResNet50-shaped run) and no per-layer list scans. The library refuses runs ingested
// before those aggregates existed (OutdatedRunError, exit 2: re-ingest them with --force).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (ra:Run)-[:OF_MODEL]->(m)
WHERE ra.status = 'complete' AND ra.class_name = $class_a
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (rb:Run)-[:OF_MODEL]->(m)
WHERE rb.status = 'complete' AND rb.class_name = $class_b
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
UNWIND [0, 1] AS side
WITH m, ra, rb, side, CASE side WHEN 0 THEN ra ELSE rb END AS r
WITH m, ra, rb, side, r.layers AS layers, coalesce(r.neuron_layer, []) AS at, r.neuron_index AS idx
UNWIND range(0, size(at) - 1) AS k
WITH m, ra, rb, layers[at[k]] AS layer, idx[k] AS i, min(side) AS lo, max(side) AS hi
WITH m, ra, rb, layer, count(CASE WHEN lo = 0 THEN 1 END) AS n_a, count(CASE WHEN hi = 1 THEN 1 END) AS n_b,
     count(CASE WHEN lo = 0 AND hi = 1 THEN 1 END) AS shared, count(*) AS n_union
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: layer})
RETURN l.depth AS depth, l.name AS layer, n_a, n_b, shared, n_union, toFloat(shared) / n_union AS jaccard,
       ra.uid AS run_a, rb.uid AS run_b
ORDER BY depth
