// name: compare_models
// purpose: One class in two models: circuit size and depth side by side, then cross-model group pairs sharing exemplar patches.
// param: model_a string          -- first model (name or Model uid)
// param: model_b string          -- second model (name or Model uid)
// param: class string            -- class name, explained in both models
// param: run_a string = null     -- run uid in model_a; null: its latest complete run
// param: run_b string = null     -- run uid in model_b; null: its latest complete run
// param: min_shared int = 1      -- keep group pairs sharing at least this many patches
// param: limit int = 50          -- at most this many group pairs
// param: source string = null    -- annotation source for label_a / label_b; null: user > mllm:* > ground_truth
// columns: section, metric, layer_a, group_a, layer_b, group_b, value_a, value_b, shared, jaccard, label_a, label_b
// section 'summary' rows (metric: run, layers, neurons, semantic_groups, neuron_groups, neuron_edges,
// group_edges) give value_a / value_b; layers (the circuit's depth) counts layers holding a neuron.
// section 'pair' rows (metric 'patch_overlap') give a group of each model, value_a / value_b = its
// distinct exemplar patches (Patch nodes of its members' semantic groups), shared = patches in both,
// jaccard = shared / (value_a + value_b - shared); any layers; by jaccard, shared (descending); label_a /
// label_b the two groups' labels (annotations, null where none; null on summary rows).
// The summary reads the run's counts written at ingest (Run.n_*); the pairs read the
// SHARES_PATCHES relationships and NeuronGroup.n_patches derived at ingest (store/overlaps.py,
// docs/graph-model.md "Derived aggregates") instead of joining every exemplar of both runs per call
// (~400k EXEMPLAR rows per ResNet50-shaped run: minutes).
MATCH (ma:Model) WHERE ma.name = $model_a OR ma.uid = $model_a
MATCH (ra:Run)-[:OF_MODEL]->(ma)
WHERE ra.status = 'complete' AND ra.class_name = $class
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (mb:Model) WHERE mb.name = $model_b OR mb.uid = $model_b
MATCH (rb:Run)-[:OF_MODEL]->(mb)
WHERE rb.status = 'complete' AND rb.class_name = $class
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
UNWIND [['run', ra.uid, rb.uid], ['layers', ra.n_layers, rb.n_layers], ['neurons', ra.n_neurons, rb.n_neurons],
        ['semantic_groups', ra.n_semantic_groups, rb.n_semantic_groups],
        ['neuron_groups', ra.n_neuron_groups, rb.n_neuron_groups], ['neuron_edges', ra.n_edges, rb.n_edges],
        ['group_edges', ra.n_group_edges, rb.n_group_edges]] AS row
RETURN 'summary' AS section, row[0] AS metric, null AS layer_a, null AS group_a, null AS layer_b,
       null AS group_b, row[1] AS value_a, row[2] AS value_b, null AS shared, null AS jaccard,
       null AS label_a, null AS label_b
UNION ALL
MATCH (ma:Model) WHERE ma.name = $model_a OR ma.uid = $model_a
MATCH (ra:Run)-[:OF_MODEL]->(ma)
WHERE ra.status = 'complete' AND ra.class_name = $class
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (mb:Model) WHERE mb.name = $model_b OR mb.uid = $model_b
MATCH (rb:Run)-[:OF_MODEL]->(mb)
WHERE rb.status = 'complete' AND rb.class_name = $class
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
WITH ra, rb
MATCH (ra)-[:HAS_GROUP]->(ga:NeuronGroup)-[s:SHARES_PATCHES]->(gb:NeuronGroup)
WHERE gb.run = rb.uid AND s.shared >= $min_shared
WITH ga, gb, s.shared AS shared, toFloat(s.shared) / (ga.n_patches + gb.n_patches - s.shared) AS jaccard
ORDER BY jaccard DESC, shared DESC, ga.layer, ga.gid, gb.layer, gb.gid
LIMIT $limit
OPTIONAL MATCH (x:Annotation {key: 'label'})-[:ANNOTATES]->(ga)
WHERE x.target_label = 'NeuronGroup' AND ($source IS NULL OR x.source = $source)
WITH ga, gb, shared, jaccard, x
ORDER BY CASE WHEN x.source = 'user' THEN 0 WHEN x.source STARTS WITH 'mllm:' THEN 1
              WHEN x.source = 'ground_truth' THEN 2 ELSE 3 END, x.created_at DESC
WITH ga, gb, shared, jaccard, head(collect(x.value)) AS label_a
OPTIONAL MATCH (y:Annotation {key: 'label'})-[:ANNOTATES]->(gb)
WHERE y.target_label = 'NeuronGroup' AND ($source IS NULL OR y.source = $source)
WITH ga, gb, shared, jaccard, label_a, y
ORDER BY CASE WHEN y.source = 'user' THEN 0 WHEN y.source STARTS WITH 'mllm:' THEN 1
              WHEN y.source = 'ground_truth' THEN 2 ELSE 3 END, y.created_at DESC
WITH ga, gb, shared, jaccard, label_a, head(collect(y.value)) AS label_b
RETURN 'pair' AS section, 'patch_overlap' AS metric, ga.layer AS layer_a, ga.gid AS group_a,
       gb.layer AS layer_b, gb.gid AS group_b, ga.n_patches AS value_a, gb.n_patches AS value_b, shared,
       jaccard, label_a, label_b
ORDER BY jaccard DESC, shared DESC, layer_a, group_a, layer_b, group_b
