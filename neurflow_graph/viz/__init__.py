"""Pictures of circuits: exemplar mosaics (:mod:`.exemplars`), layered layout (:mod:`.layout`) and
drawings (:mod:`.draw`). Compute is kept apart from file I/O in each module."""
