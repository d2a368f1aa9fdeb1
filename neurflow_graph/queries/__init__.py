"""Querying stored circuits.

* :mod:`~neurflow_graph.queries.library` finds, parses and runs the Cypher library in ``cypher/``
  (``run_query``, ``list_queries``, ``get_query``); headers type the parameters.
* :mod:`~neurflow_graph.queries.adhoc` runs ad-hoc Cypher for ``neurflow-graph cypher`` (read-only unless asked).
* :mod:`~neurflow_graph.queries.export` reads a run's circuit back as a networkx graph (GraphML / JSON).
* :mod:`~neurflow_graph.queries.format` renders rows as a table, JSON or CSV.

See ``docs/queries.md``.
"""
