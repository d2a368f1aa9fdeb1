// name: shared_groups
// purpose: Pairs of neuron groups (one per class) at the same layer that share member neurons, by Jaccard.
// param: model string            -- model name or Model uid
// param: class_a string          -- first class name
// param: class_b string          -- second class name
// param: run_a string = null     -- run uid (or unique prefix) for class_a; null: its latest complete run
// param: run_b string = null     -- run uid (or unique prefix) for class_b; null: its latest complete run
// param: min_shared int = 1      -- keep pairs sharing at least this many neurons
// param: limit int = 100         -- at most this many pairs
// param: source string = null    -- annotation source for labels/concepts; null: user > mllm:* > ground_truth
// columns: layer, group_a, group_b, label_a, label_b, concept_a, concept_b, size_a, size_b, shared, jaccard
// size_* and shared count distinct neurons; jaccard = shared / (size_a + size_b - shared).
// label_* / concept_* come from annotations (null where none).
// Strongest first: jaccard, then shared (both descending), then layer, group_a, group_b.
// Only pairs sharing a neuron are candidates (min_shared below 1 acts as 1). The neurons of a group are
// its NeuronGroup.neurons aggregate (written at ingest); the pairs come from grouping both runs'
// (layer, neuron) rows by neuron, so the cost follows the rows, not groups x groups x list scans.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (ra:Run)-[:OF_MODEL]->(m)
WHERE ra.status = 'complete' AND ra.class_name = $class_a
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (rb:Run)-[:OF_MODEL]->(m)
WHERE rb.status = 'complete' AND rb.class_name = $class_b
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
UNWIND [0, 1] AS side
WITH side, CASE side WHEN 0 THEN ra ELSE rb END AS r
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
UNWIND g.neurons AS i
WITH g.layer AS layer, i, collect(CASE WHEN side = 0 THEN g END) AS in_a, collect(CASE WHEN side = 1 THEN g END) AS in_b
UNWIND in_a AS ga
UNWIND in_b AS gb
WITH ga, gb, count(*) AS shared
WHERE shared >= $min_shared
WITH ga, gb, size(ga.neurons) AS size_a, size(gb.neurons) AS size_b, shared
WITH ga, gb, size_a, size_b, shared, toFloat(shared) / (size_a + size_b - shared) AS jaccard
ORDER BY jaccard DESC, shared DESC, ga.layer, ga.gid, gb.gid
LIMIT $limit
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(ga)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'concept'] AND ($source IS NULL OR a.source = $source)
WITH ga, gb, size_a, size_b, shared, jaccard, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH ga, gb, size_a, size_b, shared, jaccard,
     head(collect(CASE WHEN a.key = 'label' THEN a.value END)) AS label_a,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept_a
OPTIONAL MATCH (b:Annotation)-[:ANNOTATES]->(gb)
WHERE b.target_label = 'NeuronGroup' AND b.key IN ['label', 'concept'] AND ($source IS NULL OR b.source = $source)
WITH ga, gb, size_a, size_b, shared, jaccard, label_a, concept_a, b
ORDER BY CASE WHEN b.source = 'user' THEN 0 WHEN b.source STARTS WITH 'mllm:' THEN 1
              WHEN b.source = 'ground_truth' THEN 2 ELSE 3 END, b.created_at DESC
WITH ga, gb, size_a, size_b, shared, jaccard, label_a, concept_a,
     head(collect(CASE WHEN b.key = 'label' THEN b.value END)) AS label_b,
     head(collect(CASE WHEN b.key = 'concept' THEN b.value END)) AS concept_b
RETURN ga.layer AS layer, ga.gid AS group_a, gb.gid AS group_b, label_a, label_b, concept_a, concept_b,
       size_a, size_b, shared, jaccard
ORDER BY jaccard DESC, shared DESC, layer, group_a, group_b
