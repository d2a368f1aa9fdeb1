// name: classes_sharing_group
// purpose: Other classes of the model whose circuits hold a neuron group sharing member neurons with a given group.
// param: model string            -- model name or Model uid
// param: class string            -- class name of the given group
// param: layer string            -- layer of the given group
// param: group int               -- group id of the given group at that layer
// param: run string = null       -- run uid (or unique prefix) of the given group; null: the latest complete run of (model, class)
// param: min_shared int = 1      -- keep groups sharing at least this many neurons
// param: source string = null    -- annotation source for label/concept; null: user > mllm:* > ground_truth
// columns: class_name, run, group_id, label, concept, group_size, shared, jaccard
// label / concept come from annotations (null where none). Other classes are read at their latest complete run. group_size and shared count distinct neurons;
// jaccard = shared / (|given group| + group_size - shared). Ordered by jaccard, shared (descending), class_name, group_id.
// A group's neurons are its NeuronGroup.neurons aggregate (distinct member neuron indices, written at
// ingest: docs/graph-model.md "Derived aggregates"), not its HAS_MEMBER/OF paths: collecting those
// per group of every other class took ~0.6 s at 10 ResNet50-shaped classes (now ~40 ms).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer, gid: $group})
WITH m, r, g.neurons AS mine
WHERE size(mine) > 0
MATCH (o:Run)-[:OF_MODEL]->(m)
WHERE o.status = 'complete' AND o.latest = true AND o.class_name <> r.class_name
MATCH (o)-[:HAS_GROUP]->(og:NeuronGroup {layer: $layer})
WHERE size(og.neurons) > 0
WITH o, og, size(mine) AS size_g, size(og.neurons) AS group_size, size([x IN og.neurons WHERE x IN mine]) AS shared
WHERE shared >= $min_shared
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(og)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'concept'] AND ($source IS NULL OR a.source = $source)
WITH o, og, size_g, group_size, shared, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH o, og, size_g, group_size, shared,
     head(collect(CASE WHEN a.key = 'label' THEN a.value END)) AS label,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept
RETURN o.class_name AS class_name, o.uid AS run, og.gid AS group_id, label, concept, group_size, shared,
       toFloat(shared) / (size_g + group_size - shared) AS jaccard
ORDER BY jaccard DESC, shared DESC, class_name, group_id
