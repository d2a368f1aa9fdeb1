// name: circuit_groups
// purpose: Every neuron group of one run with its exemplar mosaic reference, and the run's model and class.
// param: run string              -- a run uid (complete runs only)
// columns: run, model, class_name, depth, layer, group_id, mosaic, mosaic_sha256
// mosaic is the absolute path of the group's exemplar mosaic PNG recorded at ingest (in RUN_DIR/exemplars/;
// the image bytes never enter the store) and mosaic_sha256 its content hash; both null when the run has no
// exemplars. model is the Model uid. Ordered by depth, then group_id. Used with class_circuit by `draw`,
// `serve` and `report` (docs/dashboard.md).
MATCH (r:Run {uid: $run})-[:OF_MODEL]->(m:Model)
WHERE r.status = 'complete'
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: g.layer})
RETURN r.uid AS run, m.uid AS model, r.class_name AS class_name, l.depth AS depth, l.name AS layer,
       g.gid AS group_id, g.mosaic AS mosaic, g.mosaic_sha256 AS mosaic_sha256
ORDER BY depth, group_id
