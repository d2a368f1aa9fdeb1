// name: class_circuit
// purpose: A class's circuit: its layers, neuron groups (member neurons) and weighted FEEDS edges to parent groups.
// param: model string            -- model name or Model uid
// param: class string            -- class name
// param: run string = null       -- a run uid; null: the latest complete run of (model, class)
// columns: run, depth, layer, group_id, label, concept, n_members, neurons, parent_layer, parent_group, weight
// One row per (group, parent group) edge, weight = W(child, parent) of Section 3.5 (signed). The
// logit group, which feeds nothing, has one row with null parent columns. n_members counts member
// semantic groups; neurons lists the distinct member neuron indices.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)-[:HAS_MEMBER]->(s:SemanticGroup)-[:OF]->(n:Neuron)
WITH m, r, g, s, n ORDER BY n.index
WITH m, r, g, count(DISTINCT s) AS n_members, collect(DISTINCT n.index) AS neurons
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
OPTIONAL MATCH (g)-[f:FEEDS]->(p:NeuronGroup)
RETURN r.uid AS run, l.depth AS depth, l.name AS layer, g.gid AS group_id, g.label AS label,
       g.concept AS concept, n_members, neurons, p.layer AS parent_layer, p.gid AS parent_group,
       f.weight AS weight
ORDER BY depth, group_id, parent_group
