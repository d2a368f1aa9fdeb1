// name: concept_paths_to_logit
// purpose: FEEDS paths from a group (or every group) of a layer up to the class's logit group, ranked by |path strength|.
// param: model string            -- model name or Model uid
// param: class string            -- class name
// param: layer string            -- layer of the start group(s)
// param: group int = null        -- start group id at that layer; null: every group of the layer
// param: run string = null       -- a run uid; null: the latest complete run of (model, class)
// param: limit int = 25          -- at most this many paths
// columns: run, start_group, path, labels, concepts, weights, strength, sign, abs_strength
// Path strength = product of the FEEDS weights W along the path (signed). Paths are ranked by
// |strength| (abs_strength, descending; ties by start_group) because a strongly inhibiting chain is as
// important as an exciting one; strength keeps the sign and sign = sign(strength): +1 when the
// path has an even number of negative edges (net excitatory), -1 when odd (net inhibitory).
// path lists the groups bottom -> top as 'layer/group_id'; labels their labels (null if unlabelled), concepts
// their ground-truth concepts (null when not scored).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (m)-[:HAS_LAYER]->(top:Layer {depth: 0})
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer})
WHERE $group IS NULL OR g.gid = $group
MATCH p = (g)-[:FEEDS*]->(t:NeuronGroup {layer: top.name})
WITH r, g, p, reduce(acc = 1.0, e IN relationships(p) | acc * e.weight) AS strength
RETURN r.uid AS run, g.gid AS start_group,
       [x IN nodes(p) | x.layer + '/' + toString(x.gid)] AS path,
       [x IN nodes(p) | x.label] AS labels,
       [x IN nodes(p) | x.concept] AS concepts,
       [e IN relationships(p) | e.weight] AS weights,
       strength, sign(strength) AS sign, abs(strength) AS abs_strength
ORDER BY abs_strength DESC, start_group
LIMIT $limit
