"""neurflow-graph: NeurFlow circuits of vision classifiers in a queryable graph store."""

__version__ = "0.1.0"
