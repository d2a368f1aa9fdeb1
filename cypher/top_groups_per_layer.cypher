// name: top_groups_per_layer
// purpose: The strongest contributing neuron groups of each layer of a class's circuit, by total |W| of outgoing FEEDS.
// param: model string            -- model name or Model uid
// param: class string            -- class name
// param: run string = null       -- a run uid; null: the latest complete run of (model, class)
// param: top int = 3             -- groups kept per layer
// columns: depth, layer, rank, group_id, label, out_abs_weight, out_weight, n_parents
// out_abs_weight = Σ|W| over the group's FEEDS edges to parent groups; out_weight = Σ W (signed).
// Ranked per layer by out_abs_weight descending, ties by group_id. The logit layer (depth 0) feeds
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
WITH l, collect({gid: g.gid, label: g.label, a: out_abs_weight, w: out_weight, n: n_parents}) AS ranked
WITH l, ranked[..$top] AS kept
UNWIND range(0, size(kept) - 1) AS i
RETURN l.depth AS depth, l.name AS layer, i + 1 AS rank, kept[i].gid AS group_id,
       kept[i].label AS label, kept[i].a AS out_abs_weight, kept[i].w AS out_weight,
       kept[i].n AS n_parents
ORDER BY depth, rank
