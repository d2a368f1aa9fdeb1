// name: circuit_groups
// purpose: One run's neuron groups for pictures: label, caption, concept and purity with their sources, size, weighted parent groups with feature evolution, and exemplar mosaic.
// param: run string              -- a run uid or unique prefix (complete runs only)
// param: source string = null    -- annotation source for every annotation column; null: user > mllm:* > ground_truth
// columns: run, model, class_name, depth, layer, group_id, label, label_source, caption, caption_source, formation_caption, formation_source, concept, concept_source, purity, n_members, parents, weights, evolutions, evolution_sources, mosaic, mosaic_sha256
// What `draw`, `serve` and `report` draw (docs/dashboard.md): class_circuit without the member lists (a
// ResNet50-sized group has thousands; group_members gives one group's), plus the mosaic. model is the Model
// uid; n_members its member semantic groups (the group's size). parents lists the groups it FEEDS as
// 'layer/group_id' (by group id), weights their W (signed); evolutions[i] / evolution_sources[i]: the
// feature evolution text of the edge to parents[i] (from the parent's formation answer, docs/labels.md)
// and its source, null where none. label, caption (the captioning answer's), formation_caption, concept and
// purity: annotations, each picked on its own by source (user > mllm:* > ground_truth > others, newest
// first); *_source (formation_source for formation_caption) names the pick's source (e.g. mllm:gpt-4o, user, ground_truth), null with no value.
// mosaic is the absolute path of the group's exemplar mosaic PNG recorded at ingest (in RUN_DIR/exemplars/;
// the image bytes never enter the store) and mosaic_sha256 its content hash; both null when the run has
// no exemplars. Ordered by depth, group_id.
MATCH (r:Run {uid: $run})-[:OF_MODEL]->(m:Model)
WHERE r.status = 'complete'
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
OPTIONAL MATCH (g)-[f:FEEDS]->(p:NeuronGroup)
OPTIONAL MATCH (e:Annotation {target_label: 'FEEDS', key: 'feature_evolution_text'})-[:ANNOTATES]->(g)
WHERE e.target = f.uid AND ($source IS NULL OR e.source = $source)
WITH m, r, g, p, f, e
ORDER BY CASE WHEN e.source = 'user' THEN 0 WHEN e.source STARTS WITH 'mllm:' THEN 1
              WHEN e.source = 'ground_truth' THEN 2 ELSE 3 END, e.created_at DESC
WITH m, r, g, p, f, head(collect([e.value, e.source])) AS evo
WITH m, r, g, p, f, evo ORDER BY p.gid
WITH m, r, g, collect(CASE WHEN p IS NULL THEN null
                           ELSE [p.layer + '/' + toString(p.gid), f.weight, evo[0], evo[1]] END) AS ps
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(g)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'caption', 'formation_caption', 'concept', 'purity']
  AND ($source IS NULL OR a.source = $source)
WITH m, r, g, ps, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH m, r, g, ps,
     head(collect(CASE WHEN a.key = 'label' THEN [a.value, a.source] END)) AS label,
     head(collect(CASE WHEN a.key = 'caption' THEN [a.value, a.source] END)) AS caption,
     head(collect(CASE WHEN a.key = 'formation_caption' THEN [a.value, a.source] END)) AS formation_caption,
     head(collect(CASE WHEN a.key = 'concept' THEN [a.value, a.source] END)) AS concept,
     head(collect(CASE WHEN a.key = 'purity' THEN a.value END)) AS purity
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
RETURN r.uid AS run, m.uid AS model, r.class_name AS class_name, l.depth AS depth, l.name AS layer,
       g.gid AS group_id, label[0] AS label, label[1] AS label_source, caption[0] AS caption,
       caption[1] AS caption_source, formation_caption[0] AS formation_caption,
       formation_caption[1] AS formation_source, concept[0] AS concept, concept[1] AS concept_source,
       purity, g.size AS n_members, [x IN ps | x[0]] AS parents, [x IN ps | x[1]] AS weights,
       [x IN ps | x[2]] AS evolutions, [x IN ps | x[3]] AS evolution_sources,
       g.mosaic AS mosaic, g.mosaic_sha256 AS mosaic_sha256
ORDER BY depth, group_id
