// name: group_directions
// purpose: The principal directions each neuron group of a class's circuit aligns with (ALIGNED_WITH), strongest |cosine| first.
// param: model string            -- model name or Model uid
// param: class string            -- class name
// param: run string = null       -- a run uid or unique prefix; null: the latest complete run of (model, class)
// param: layer string = null     -- one layer; null: every layer that has directions
// param: gid int = null          -- one neuron group id; null: every group
// param: site string = null      -- pre, post or out; null: every site
// param: source string = null    -- annotation source for label; null: user > mllm:* > ground_truth
// columns: layer, group_id, label, site, direction, rank, cosine, abs_cosine, span_cosine, explained_variance_ratio, cumulative_ratio
// cosine: between the group's representative vector (normalised mean of its member semantic groups'
// one-hot neurons) and the PC, signed under the stored PC sign; span_cosine = |projection of the PC
// onto the span of the group's neurons| (sign-free). rank 1 = largest |cosine| (docs/directions.md).
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.class_name = $class
  AND (($run IS NULL AND r.latest = true) OR r.uid = $run)
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)-[e:ALIGNED_WITH]->(d:Direction)
WHERE ($layer IS NULL OR g.layer = $layer) AND ($gid IS NULL OR g.gid = $gid)
  AND ($site IS NULL OR d.site = $site)
OPTIONAL MATCH (a:Annotation)-[:ANNOTATES]->(g)
WHERE a.key = 'label' AND ($source IS NULL OR a.source = $source)
WITH g, e, d, a
ORDER BY CASE WHEN a.source = 'user' THEN 0 WHEN a.source STARTS WITH 'mllm:' THEN 1
              WHEN a.source = 'ground_truth' THEN 2 ELSE 3 END, a.created_at DESC
WITH g, e, d, head(collect(a.value)) AS label
RETURN g.layer AS layer, g.gid AS group_id, label, d.site AS site, d.index AS direction, e.rank AS rank,
       e.cosine AS cosine, e.abs_cosine AS abs_cosine, e.span_cosine AS span_cosine,
       d.explained_variance_ratio AS explained_variance_ratio, d.cumulative_ratio AS cumulative_ratio
ORDER BY layer, group_id, site, rank
