"""Image debugging (paper sec. 5.1, app. F): metric M, masking neuron groups against random sets.

``metric`` (M and S'_G), ``debug`` (the analysis, plain data out), ``plots`` (PNGs), ``report``
(table, sentences, annotations), ``runs`` (finding a run and its model). See docs/applications.md.
"""
