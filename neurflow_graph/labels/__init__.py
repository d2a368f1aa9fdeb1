"""Concept labels from a multimodal LLM (NeurFlow Sec. 5.2, App. G); see docs/labels.md.

Modules, in data-flow order: :mod:`prompts` (the App. G texts, versioned), :mod:`mosaics` (the
images sent), :mod:`requests` and :mod:`plan` (what is asked), :mod:`cache`, :mod:`client` (the
``openai`` client) and :mod:`runner` (asking, within budget and concurrency), :mod:`parsing`
(answers), :mod:`annotate` (answers -> annotations), :mod:`evaluate` (label quality) and
:mod:`service` (the ``label`` command's library functions).
"""
