// name: layer_completeness
// purpose: Completeness curves per layer and site of a model (top-k PCs vs top-k neurons, 80%/99% counts, ablation curves), with a run's coverage.
// param: model string            -- model name or Model uid
// param: layer string = null     -- one layer; null: every layer with a PCA basis
// param: site string = null      -- pre, post or out; null: every site
// param: class string = null     -- a class: coverage by its latest complete run's neurons (when run is null)
// param: run string = null       -- a run uid or unique prefix: coverage of each layer by its circuit's neurons
// columns: model, layer, site, dim, n_samples, n_images, pca_80, pca_99, neuron_80, neuron_99, pca_curve, neuron_curve, ablation_metric, ablation_ks, ablation_json, coverage, n_neurons, pca_share
// pca_curve[k-1] / neuron_curve[k-1]: share of the layer's variance explained by the top-k PCs / the k
// highest-variance neurons. ablation_json: {"ks", "agreement", "accuracy", "n_images", "skipped"}, curves
// keyed "pca/descending", "neurons/ascending", ... coverage: share of the variance in the span of the
// run's neurons at that layer; pca_share: share of the same number of top PCs. Neither class nor run:
// the coverage columns are null.
MATCH (m:Model) WHERE m.name = $model OR m.uid = $model
MATCH (m)-[:HAS_LAYER]->(l:Layer)-[:HAS_BASIS]->(b:PCABasis)
WHERE ($layer IS NULL OR l.name = $layer) AND ($site IS NULL OR b.site = $site)
OPTIONAL MATCH (r:Run)-[c:COVERS]->(b)
WHERE r.status = 'complete'
  AND (($run IS NULL AND r.latest = true AND r.class_name = $class) OR r.uid = $run)
RETURN m.uid AS model, l.name AS layer, b.site AS site, b.dim AS dim, b.n_samples AS n_samples,
       b.n_images AS n_images, b.pca_80 AS pca_80, b.pca_99 AS pca_99, b.neuron_80 AS neuron_80,
       b.neuron_99 AS neuron_99, b.pca_curve AS pca_curve, b.neuron_curve AS neuron_curve,
       b.ablation_metric AS ablation_metric, b.ablation_ks AS ablation_ks, b.ablation_json AS ablation_json,
       c.coverage AS coverage, c.n_neurons AS n_neurons, c.pca_share AS pca_share
ORDER BY model, layer, site
