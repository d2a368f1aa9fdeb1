// name: group_members
// purpose: The member semantic groups of one neuron group of a run, with their size, activation and exemplar mosaic.
// param: run string              -- a run uid or unique prefix (complete runs only)
// param: layer string            -- the group's layer
// param: group int               -- the group id at that layer
// columns: neuron, j, size, mean_activation, mosaic, mosaic_sha256
// One row per member semantic group V_{neuron, j}: size = its exemplar patches, mean_activation its mean phi,
// mosaic / mosaic_sha256 its exemplar mosaic's path and hash (null without exemplars). Ordered by neuron, then j. The dashboard's
// group panel (docs/dashboard.md).
MATCH (r:Run {uid: $run})
WHERE r.status = 'complete'
MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup {layer: $layer, gid: $group})-[:HAS_MEMBER]->(s:SemanticGroup)
RETURN s.neuron_index AS neuron, s.j AS j, s.size AS size, s.mean_activation AS mean_activation,
       s.mosaic AS mosaic, s.mosaic_sha256 AS mosaic_sha256
ORDER BY neuron, j
