// name: groups_by_label
// purpose: Neuron groups whose label or caption matches a full-text search, across classes, models and label sources.
// param: text string              -- search words (plain words work on both backends; see docs/labels.md)
// param: source string = null     -- one annotation source (e.g. mllm:gpt-4o, user); null: every source
// param: model string = null      -- model name or Model uid; null: every model
// param: class string = null      -- class name; null: every class
// param: latest bool = true       -- only the latest complete run of each (model, class)
// param: limit int = 50           -- at most this many rows
// columns: model, class, run, layer, group_id, label, caption, source, score
// Searches the full-text index over Annotation.value (neurflow_annotation_text, created by store setup
// and by `neurflow-graph label`) and keeps matches on the keys label, caption and formation_caption.
// One row per (group, source): label and caption are that source's, score is the best match's
// (Lucene's on Neo4j, RediSearch's TF-IDF on FalkorDB: compare scores within one backend only).
// why: FalkorDB has no db.index.fulltext procedures; its full-text indexes (RediSearch) are per label and
// are queried with db.idx.fulltext.queryNodes(label, query). Otherwise the same text as groups_by_label.cypher.
CALL db.idx.fulltext.queryNodes('Annotation', $text) YIELD node, score
WITH node AS a, score
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'caption', 'formation_caption']
  AND ($source IS NULL OR a.source = $source)
MATCH (a)-[:ANNOTATES]->(g:NeuronGroup)<-[:HAS_GROUP]-(r:Run)-[:OF_MODEL]->(m:Model)
WHERE r.status = 'complete' AND (NOT $latest OR r.latest = true)
  AND ($model IS NULL OR m.name = $model OR m.uid = $model)
  AND ($class IS NULL OR r.class_name = $class)
WITH m, r, g, a.source AS source, max(score) AS score
OPTIONAL MATCH (l:Annotation {key: 'label', source: source})-[:ANNOTATES]->(g)
OPTIONAL MATCH (c:Annotation {key: 'caption', source: source})-[:ANNOTATES]->(g)
RETURN m.uid AS model, r.class_name AS class, r.uid AS run, g.layer AS layer, g.gid AS group_id,
       l.value AS label, c.value AS caption, source, score
ORDER BY score DESC, model, class, layer, group_id, source
LIMIT $limit
