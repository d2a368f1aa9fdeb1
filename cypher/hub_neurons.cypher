// name: hub_neurons
// purpose: Neurons used by the most class circuits of a model (latest complete run of each class).
// param: model string            -- model name or Model uid
// param: min_classes int = 1     -- keep neurons used by at least this many classes
// param: limit int = 20          -- at most this many neurons
// columns: depth, layer, neuron, n_classes, classes
// A circuit uses a neuron when the run holds a semantic group of it. classes is sorted by name.
// Ordered by n_classes descending, then depth and neuron index.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
MATCH (:SemanticGroup {run: r.uid})-[:OF]->(n:Neuron)
WITH DISTINCT n, r.class_name AS cls
WITH n, cls ORDER BY cls
WITH n, collect(cls) AS classes
WHERE size(classes) >= $min_classes
MATCH (l:Layer)-[:HAS_NEURON]->(n)
RETURN l.depth AS depth, l.name AS layer, n.index AS neuron, size(classes) AS n_classes, classes
ORDER BY n_classes DESC, depth, neuron
LIMIT $limit
