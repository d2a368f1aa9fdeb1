// name: top_groups_per_layer
// purpose: The strongest contributing neuron groups of each layer of a class's circuit, by total |W| of outgoing FEEDS.
// param: model string            -- model name or Model uid
// param: class string            -- class name
// param: run string = null       -- a run uid or unique prefix; null: the latest complete run of (model, class)
// param: top int = 3             -- groups kept per layer
// param: source string = null    -- annotation source for label/concept; null: user > mllm:* > ground_truth
// columns: depth, layer, rank, group_id, label, concept, out_abs_weight, out_weight, n_parents
// out_abs_weight = Σ|W| over the group's FEEDS edges to parent groups; out_weight = Σ W (signed).
// label / concept come from annotations (null where none). Ranked per layer by out_abs_weight descending, ties by group_id. The logit layer (depth 0) feeds
// nothing and is left out.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
WHERE l.depth > 0
OPTIONAL MATCH (g)-[f:FEEDS]->(:NeuronGroup)
WITH l, g, sum(abs(coalesce(f.weight, 0.0))) AS out_abs_weight,
     sum(coalesce(f.weight, 0.0)) AS out_weight, count(f) AS n_parents
WITH l, g, out_abs_weight, out_weight, n_parents ORDER BY out_abs_weight DESC, g.gid
WITH l, collect({g: g, a: out_abs_weight, w: out_weight, n: n_parents}) AS ranked
WITH l, ranked[..$top] AS kept
UNWIND range(0, size(kept) - 1) AS i
WITH l, i, kept[i] AS k, kept[i].g AS g
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(g)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'concept'] AND ($source IS NULL OR a.source = $source)
WITH l, i, k, g, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH l, i, k, g,
     head(collect(CASE WHEN a.key = 'label' THEN a.value END)) AS label,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept
RETURN l.depth AS depth, l.name AS layer, i + 1 AS rank, g.gid AS group_id, label, concept,
       k.a AS out_abs_weight, k.w AS out_weight, k.n AS n_parents
ORDER BY depth, rank
