// name: dashboard_summary
// purpose: Counts per model, class and layer over the latest complete runs, one row each, ready for a dashboard.
// param: model string = null     -- model name or Model uid; null: every model
// columns: model, model_uid, class_name, run, depth, layer, neurons, semantic_groups, neuron_groups, group_edges
// why: the portable text expands each run's HAS_GROUP edges once per (run, layer) row and then every
// group's FEEDS edges through OPTIONAL MATCH; on Neo4j's slotted runtime that is ~79k db hits at 100
// classes, the slowest library query there (p95 up to 216 ms under load). Here each run's groups are read
// once, in a CALL subquery, their FEEDS edges counted by Neo4j's degree lookup (COUNT { (g)-[:FEEDS]->() }:
// FEEDS always ends at a NeuronGroup, store/ingest.py), and each layer row picks its groups from that
// list: 14k db hits, p50 65.5 -> 52.6 ms (40 alternating runs, load 5.5). Same rows as
// dashboard_summary.cypher (tests/test_store_parity.py, tests/test_queries_conformance.py). The degree count
// sits in its own WITH, not inside the collected map: Neo4j's JavaScript semantic analysis
// (tests/test_cypher_neo4j_grammar.py) crashes on COUNT {} nested in a map in collect(); the server takes both.
MATCH (m:Model) WHERE $model IS NULL OR m.name = $model OR m.uid = $model
MATCH (r:Run)-[:OF_MODEL]->(m)
WHERE r.status = 'complete' AND r.latest = true
WITH m, r, r.layers AS layers, coalesce(r.neuron_layer, []) AS at, r.neuron_sgs AS sgs
UNWIND range(0, size(at) - 1) AS k
WITH m, r, layers[at[k]] AS layer_name, toInteger(sum(sgs[k])) AS semantic_groups, count(*) AS neurons
WITH m, r, collect({layer: layer_name, semantic_groups: semantic_groups, neurons: neurons}) AS per_layer
CALL (r) {
  MATCH (r)-[:HAS_GROUP]->(g:NeuronGroup)
  WITH g, COUNT { (g)-[:FEEDS]->() } AS edges
  RETURN collect({layer: g.layer, edges: edges}) AS groups
}
UNWIND per_layer AS pl
MATCH (m)-[:HAS_LAYER]->(l:Layer {name: pl.layer})
WITH m, r, l, pl, [x IN groups WHERE x.layer = pl.layer] AS mine
RETURN m.name AS model, m.uid AS model_uid, r.class_name AS class_name, r.uid AS run, l.depth AS depth,
       l.name AS layer, pl.neurons AS neurons, pl.semantic_groups AS semantic_groups, size(mine) AS neuron_groups,
       reduce(n = 0, x IN mine | n + x.edges) AS group_edges
ORDER BY model, model_uid, class_name, depth
