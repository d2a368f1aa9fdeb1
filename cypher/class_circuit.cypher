// name: class_circuit
// purpose: A class's circuit, one row per neuron group: its members, annotations and weighted parent groups.
// param: model string            -- model name or Model uid
// param: class string            -- class name (or class index)
// param: run string = null       -- a run uid or unique prefix; null: the latest complete run of (model, class)
// param: source string = null    -- annotation source for label/caption/concept/purity; null: user > mllm:* > ground_truth
// columns: run, depth, layer, group_id, label, label_source, caption, concept, purity, n_members, members, neurons, parents, weights, flows
// members lists the group's semantic groups as [neuron index, j] (by neuron, then j); n_members = their
// number; neurons the distinct member neuron indices. parents lists the groups it FEEDS as 'layer/group_id'
// (by group id); weights their W(child, parent) of Section 3.5 (signed, as stored) and flows the normalised
// flow W / Σ|W| into that parent (each parent's incoming |flow| sums to 1). The logit group feeds nothing:
// empty lists. label, caption (the MLLM's captioning answer, docs/labels.md), concept and purity come from
// annotations (null where none), each picked on its own; label_source names the label's source.
// members and neurons are read from the group's aggregates written at ingest (NeuronGroup.members_i,
// members_j, neurons: docs/graph-model.md "Derived aggregates") instead of sorting its HAS_MEMBER
// edges per call (~19k members per ResNet50-shaped circuit).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
OPTIONAL MATCH (g)-[f:FEEDS]->(p:NeuronGroup)
OPTIONAL MATCH (p)<-[fp:FEEDS]-(:NeuronGroup)
WITH m, r, g, p, f, sum(abs(fp.weight)) AS inflow
WITH m, r, g, p, f, inflow ORDER BY p.gid
WITH m, r, g,
     collect(CASE WHEN p IS NULL THEN null
                  ELSE [p.layer + '/' + toString(p.gid), f.weight,
                        CASE WHEN inflow > 0 THEN f.weight / inflow ELSE 0.0 END] END) AS ps
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(g)
WHERE a.target_label = 'NeuronGroup' AND a.key IN ['label', 'caption', 'concept', 'purity'] AND ($source IS NULL OR a.source = $source)
WITH m, r, g, ps, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH m, r, g, ps,
     head(collect(CASE WHEN a.key = 'label' THEN [a.value, a.source] END)) AS label,
     head(collect(CASE WHEN a.key = 'caption' THEN a.value END)) AS caption,
     head(collect(CASE WHEN a.key = 'concept' THEN a.value END)) AS concept,
     head(collect(CASE WHEN a.key = 'purity' THEN a.value END)) AS purity
WITH m, r, g, ps, label, caption, concept, purity, g.neurons AS neurons,
     [k IN range(0, size(g.members_i) - 1) | [g.members_i[k], g.members_j[k]]] AS members
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
RETURN r.uid AS run, l.depth AS depth, l.name AS layer, g.gid AS group_id, label[0] AS label,
       label[1] AS label_source, caption, concept, purity,
       size(members) AS n_members, members, neurons,
       [x IN ps | x[0]] AS parents, [x IN ps | x[1]] AS weights, [x IN ps | x[2]] AS flows
ORDER BY depth, group_id
