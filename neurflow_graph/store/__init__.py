"""Graph stores: the :class:`~neurflow_graph.store.base.GraphStore` interface, the embedded
FalkorDB and Neo4j backends, ingestion of circuits and run management.

``open_store(url, ...)`` (in :mod:`neurflow_graph.store.url`) is the entry point; the backend
modules are imported only when a URL of their kind is opened.
"""
