// name: concept_paths_to_logit
// purpose: The strongest paths from a group (or every group) of a layer up to the class's logit group, on normalised flow.
// param: model string            -- model name or Model uid
// param: class string            -- class name (or class index)
// param: layer string            -- layer of the start group(s)
// param: group int = null        -- start group id at that layer; null: every group of the layer
// param: run string = null       -- a run uid or unique prefix; null: the latest complete run of (model, class)
// param: limit int = 25          -- at most this many paths (at most Run.paths_per_group per start group)
// param: source string = null    -- annotation source for labels/captions/concepts/evolutions; null: user > mllm:* > ground_truth
// columns: run, start_group, path, labels, label_sources, captions, concepts, evolutions, flows, strength, sign, abs_strength
// Path strength = product of the normalised flows f(C -> P) = W(C, P) / Σ|W| into P along the path: a
// signed number in [-1, 1], |strength| = the share of the logit's inflow through this chain. sign = the
// product of the hops' signs (+1: even number of inhibiting hops, -1: odd, 0: a zero hop). Ranked by
// abs_strength descending, ties by start_group and path. The k-best paths are computed at ingest
// (store/paths.py: dynamic programming over layers) and read here from each group's path_strength,
// path_gids and path_flows lists, so the cost is the layer's groups x N, not the number of paths.
// path lists the groups bottom -> top as 'layer/group_id'; labels (label_sources: whose), captions and
// concepts their annotations, each picked on its own by source (newest first), null where none;
// evolutions[j] the feature evolution text of hop path[j] -> path[j+1] (as flows: one per hop; from the
// upper group's formation answer, docs/labels.md), null where none.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer})
WHERE ($group IS NULL OR g.gid = $group) AND size(g.path_strength) > 0
WITH r, g, size(g.path_gids) / size(g.path_strength) AS stride
UNWIND range(0, size(g.path_strength) - 1) AS i
WITH r, g, stride, i, g.path_strength[i] AS strength
ORDER BY abs(strength) DESC, g.gid, i
LIMIT $limit
WITH r, g.gid AS start_group, stride, i, strength,
     g.path_gids[i * stride .. (i + 1) * stride] AS gids,
     g.path_flows[i * (stride - 1) .. (i + 1) * (stride - 1)] AS flows
UNWIND range(0, stride - 1) AS j
MATCH (x:NeuronGroup {run: r.uid, layer: r.layers[stride - 1 - j], gid: gids[j]})
OPTIONAL MATCH (x)-[f:FEEDS]->(y:NeuronGroup {run: r.uid})
WHERE j < stride - 1 AND y.layer = r.layers[stride - 2 - j] AND y.gid = gids[j + 1]
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(x)
WHERE ((a.target_label = 'NeuronGroup' AND a.key IN ['label', 'caption', 'concept'])
       OR (a.target_label = 'FEEDS' AND a.key = 'feature_evolution_text' AND a.target = f.uid))
  AND ($source IS NULL OR a.source = $source)
WITH r, start_group, i, strength, flows, j, x, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH r, start_group, i, strength, flows, j, x,
     head(collect(CASE WHEN a.key = 'label' THEN [a.value, a.source] END)) AS label,
     head(collect(CASE WHEN a.key = 'caption' THEN a.value END)) AS caption,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept,
     head(collect(CASE WHEN a.key = 'feature_evolution_text' THEN a.value END)) AS evolution
WITH r, start_group, i, strength, flows, j, x, evolution, label, caption, concept ORDER BY j
WITH r, start_group, i, strength, flows, collect(x.layer + '/' + toString(x.gid)) AS path,
     collect([label[0], label[1], caption, concept, evolution]) AS ann
RETURN r.uid AS run, start_group, path, [v IN ann | v[0]] AS labels, [v IN ann | v[1]] AS label_sources,
       [v IN ann | v[2]] AS captions, [v IN ann | v[3]] AS concepts,
       [v IN ann[0 .. size(ann) - 1] | v[4]] AS evolutions,
       flows, strength, sign(strength) AS sign, abs(strength) AS abs_strength
ORDER BY abs_strength DESC, start_group, i
