// name: shared_neurons_by_layer
// purpose: Two classes of one model: per layer |A|, |B|, |A∩B|, |A∪B| and Jaccard of their circuits' neurons.
// param: model string            -- model name or Model uid
// param: class_a string          -- first class name
// param: class_b string          -- second class name
// param: run_a string = null     -- run uid for class_a; null: its latest complete run
// param: run_b string = null     -- run uid for class_b; null: its latest complete run
// columns: depth, layer, n_a, n_b, shared, n_union, jaccard, run_a, run_b
// A (B) is the set of neurons at that layer holding a semantic group of class_a's (class_b's) run.
// Layers where neither circuit has a neuron are left out.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (ra:Run)-[:OF_MODEL]->(m)
WHERE ra.status = 'complete' AND ra.class_name = $class_a
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (rb:Run)-[:OF_MODEL]->(m)
WHERE rb.status = 'complete' AND rb.class_name = $class_b
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
MATCH (m)-[:HAS_LAYER]->(l:Layer)
OPTIONAL MATCH (:SemanticGroup {run: ra.uid, layer: l.name})-[:OF]->(na:Neuron)
WITH ra, rb, l, collect(DISTINCT na.index) AS a
OPTIONAL MATCH (:SemanticGroup {run: rb.uid, layer: l.name})-[:OF]->(nb:Neuron)
WITH ra, rb, l, a, collect(DISTINCT nb.index) AS b
WITH ra, rb, l, a, b, size([x IN a WHERE x IN b]) AS shared
WHERE size(a) > 0 OR size(b) > 0
RETURN l.depth AS depth, l.name AS layer, size(a) AS n_a, size(b) AS n_b, shared,
       size(a) + size(b) - shared AS n_union,
       toFloat(shared) / (size(a) + size(b) - shared) AS jaccard, ra.uid AS run_a, rb.uid AS run_b
ORDER BY depth
