// name: polysemantic_neurons
// purpose: Neurons of a model with the most semantic groups, summed over the latest complete run of every class.
// param: model string            -- model name or Model uid
// param: limit int = 20          -- at most this many neurons
// columns: depth, layer, neuron, semantic_groups, n_classes, max_in_class, mean_per_class
// semantic_groups = Σ over classes of the neuron's semantic groups in that class's run; n_classes =
// runs using the neuron; max_in_class / mean_per_class per using run. Ordered by semantic_groups
// descending, then depth and neuron index.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
MATCH (s:SemanticGroup {run: r.uid})-[:OF]->(n:Neuron)
WITH n, r, count(s) AS k
WITH n, toInteger(sum(k)) AS semantic_groups, count(r) AS n_classes, max(k) AS max_in_class
MATCH (l:Layer)-[:HAS_NEURON]->(n)
RETURN l.depth AS depth, l.name AS layer, n.index AS neuron, semantic_groups, n_classes, max_in_class,
       toFloat(semantic_groups) / n_classes AS mean_per_class
ORDER BY semantic_groups DESC, depth, neuron
LIMIT $limit
