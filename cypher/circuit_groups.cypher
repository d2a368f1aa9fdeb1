// name: circuit_groups
// purpose: One run's neuron groups for pictures: label, concept, purity, size, weighted parent groups and exemplar mosaic.
// param: run string              -- a run uid or unique prefix (complete runs only)
// param: source string = null    -- annotation source for label/concept/purity; null: user > mllm:* > ground_truth
// columns: run, model, class_name, depth, layer, group_id, label, concept, purity, n_members, parents, weights, mosaic, mosaic_sha256
// What `draw`, `serve` and `report` draw (docs/dashboard.md): class_circuit without the member lists (a
// ResNet50-sized group has thousands; group_members gives one group's), plus the mosaic. model is the Model
// uid; n_members its member semantic groups (the group's size). parents lists the groups it FEEDS as 'layer/group_id' (by group id), weights their W (signed). label,
// concept and purity: annotations, picked as class_circuit picks them. mosaic is the absolute path of the
// group's exemplar mosaic PNG recorded at ingest (in RUN_DIR/exemplars/; the image bytes never enter the
// store) and mosaic_sha256 its content hash; both null when the run has no exemplars. Ordered by depth, group_id.
MATCH (r:Run {uid: $run})-[:OF_MODEL]->(m:Model)
WHERE r.status = 'complete'
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
OPTIONAL MATCH (g)-[f:FEEDS]->(p:NeuronGroup)
WITH m, r, g, p, f ORDER BY p.gid
WITH m, r, g, collect(CASE WHEN p IS NULL THEN null ELSE [p.layer + '/' + toString(p.gid), f.weight] END) AS ps
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(g)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'concept', 'purity'] AND ($source IS NULL OR a.source = $source)
WITH m, r, g, ps, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH m, r, g, ps,
     head(collect(CASE WHEN a.key = 'label' THEN a.value END)) AS label,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept,
     head(collect(CASE WHEN a.key = 'purity' THEN a.value END)) AS purity
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
RETURN r.uid AS run, m.uid AS model, r.class_name AS class_name, l.depth AS depth, l.name AS layer,
       g.gid AS group_id, label, concept, purity, g.size AS n_members,
       [x IN ps | x[0]] AS parents, [x IN ps | x[1]] AS weights, g.mosaic AS mosaic, g.mosaic_sha256 AS mosaic_sha256
ORDER BY depth, group_id
