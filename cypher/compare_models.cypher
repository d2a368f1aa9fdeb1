// name: compare_models
// purpose: One class in two models: circuit size and depth side by side, then cross-model group pairs sharing exemplar patches.
// param: model_a string          -- first model (name or Model uid)
// param: model_b string          -- second model (name or Model uid)
// param: class string            -- class name, explained in both models
// param: run_a string = null     -- run uid in model_a; null: its latest complete run
// param: run_b string = null     -- run uid in model_b; null: its latest complete run
// param: min_shared int = 1      -- keep group pairs sharing at least this many patches
// param: limit int = 50          -- at most this many group pairs
// columns: section, metric, layer_a, group_a, layer_b, group_b, value_a, value_b, shared, jaccard
// section 'summary' rows (metric: run, layers, neurons, semantic_groups, neuron_groups, neuron_edges,
// group_edges) give value_a / value_b; layers (the circuit's depth) counts layers holding a neuron.
// section 'pair' rows (metric 'patch_overlap') give a group of each model, value_a / value_b = its
// distinct exemplar patches (Patch nodes of its members' semantic groups), shared = patches in both,
// jaccard = shared / (value_a + value_b - shared); any layers; by jaccard, shared (descending).
// The pair part joins the two runs' (group, patch) rows on the patch uid (two disjoint patterns and
// an equality: a hash join on both backends) instead of walking from each patch to every semantic
// group that uses it, so its cost does not grow with how many other runs share the patches.
MATCH (ma:Model) WHERE ma.name = $model_a OR ma.uid = $model_a
MATCH (ra:Run)-[:OF_MODEL]->(ma)
WHERE ra.status = 'complete' AND ra.class_name = $class
  AND (($run_a IS NULL AND ra.latest = true) OR ra.uid = $run_a)
MATCH (mb:Model) WHERE mb.name = $model_b OR mb.uid = $model_b
MATCH (rb:Run)-[:OF_MODEL]->(mb)
WHERE rb.status = 'complete' AND rb.class_name = $class
  AND (($run_b IS NULL AND rb.latest = true) OR rb.uid = $run_b)
OPTIONAL MATCH (sa:SemanticGroup {run: ra.uid})-[:OF]->(na:Neuron)
WITH ra, rb, count(sa) AS sgs_a, count(DISTINCT na) AS neurons_a, count(DISTINCT na.layer) AS layers_a
OPTIONAL MATCH (sb:SemanticGroup {run: rb.uid})-[:OF]->(nb:Neuron)
WITH ra, rb, sgs_a, neurons_a, layers_a, count(sb) AS sgs_b, count(DISTINCT nb) AS neurons_b,
     count(DISTINCT nb.layer) AS layers_b
OPTIONAL MATCH (ra)-[:HAS_GROUP]->(ga:NeuronGroup)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, collect(ga) AS groups_a
OPTIONAL MATCH (rb)-[:HAS_GROUP]->(gb:NeuronGroup)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, groups_a, collect(gb) AS groups_b
OPTIONAL MATCH (:SemanticGroup {run: ra.uid})<-[ea:CONTRIBUTES]-(:Neuron)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, groups_a, groups_b, count(ea) AS edges_a
OPTIONAL MATCH (:SemanticGroup {run: rb.uid})<-[eb:CONTRIBUTES]-(:Neuron)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, groups_a, groups_b, edges_a,
     count(eb) AS edges_b
OPTIONAL MATCH (ra)-[:HAS_GROUP]->(:NeuronGroup)-[fa:FEEDS]->(:NeuronGroup)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, groups_a, groups_b, edges_a, edges_b,
     count(fa) AS feeds_a
OPTIONAL MATCH (rb)-[:HAS_GROUP]->(:NeuronGroup)-[fb:FEEDS]->(:NeuronGroup)
WITH ra, rb, sgs_a, neurons_a, layers_a, sgs_b, neurons_b, layers_b, groups_a, groups_b, edges_a, edges_b,
     feeds_a, count(fb) AS feeds_b
UNWIND [['run', ra.uid, rb.uid], ['layers', layers_a, layers_b], ['neurons', neurons_a, neurons_b],
        ['semantic_groups', sgs_a, sgs_b], ['neuron_groups', size(groups_a), size(groups_b)],
        ['neuron_edges', edges_a, edges_b], ['group_edges', feeds_a, feeds_b]] AS row
RETURN 'summary' AS section, row[0] AS metric, null AS layer_a, null AS group_a, null AS layer_b,
       null AS group_b, row[1] AS value_a, row[2] AS value_b, null AS shared, null AS jaccard
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
MATCH (ra)-[:HAS_GROUP]->(ga:NeuronGroup)-[:HAS_MEMBER]->(:SemanticGroup)-[:EXEMPLAR]->(pa:Patch),
      (rb)-[:HAS_GROUP]->(gb:NeuronGroup)-[:HAS_MEMBER]->(:SemanticGroup)-[:EXEMPLAR]->(pb:Patch)
WHERE pa.uid = pb.uid
WITH ga, gb, count(DISTINCT pa) AS shared
WHERE shared >= $min_shared
WITH gb, collect([ga, shared]) AS pairs
MATCH (gb)-[:HAS_MEMBER]->(:SemanticGroup)-[:EXEMPLAR]->(y:Patch)
WITH gb, pairs, count(DISTINCT y) AS nb
UNWIND pairs AS pair
WITH pair[0] AS ga, pair[1] AS shared, gb, nb
WITH ga, collect([gb, nb, shared]) AS pairs
MATCH (ga)-[:HAS_MEMBER]->(:SemanticGroup)-[:EXEMPLAR]->(x:Patch)
WITH ga, pairs, count(DISTINCT x) AS na
UNWIND pairs AS pair
WITH ga, na, pair[0] AS gb, pair[1] AS nb, pair[2] AS shared
RETURN 'pair' AS section, 'patch_overlap' AS metric, ga.layer AS layer_a, ga.gid AS group_a,
       gb.layer AS layer_b, gb.gid AS group_b, na AS value_a, nb AS value_b, shared,
       toFloat(shared) / (na + nb - shared) AS jaccard
ORDER BY jaccard DESC, shared DESC, layer_a, group_a, layer_b, group_b
LIMIT $limit
