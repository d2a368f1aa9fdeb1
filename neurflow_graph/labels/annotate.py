"""Answers -> annotations (source ``mllm:<model name>``), on neuron groups and on FEEDS edges.

Per neuron group (target: the NeuronGroup uid):

==================  =================================================================================
``caption_answer``  ``{"raw", "parsed", "error"}``: the model's captioning answer as received, always
                    kept, ``parsed = false`` when it did not follow the answer form
``label``           the common features, joined by ``"; "`` (only when parsed)
``caption``         the caption (only when parsed)
``features``        the common features, a list (only when parsed)
``formation_answer`` ``{"raw", "parsed", "error"}`` of the formation answer, always kept
``formation``       ``{"caption", "group_features": {"1": [...], ...}, "evolution": [{"group", "child_layer",
                    "child_gid", "weight", "text", "matched"}]}`` (only when parsed)
``formation_caption`` the formation answer's caption (only when parsed)
==================  =================================================================================

Per FEEDS edge child -> group (target: :func:`identity.feeds_uid`), from the group's formation
answer: ``feature_evolution`` = ``{"group": k, "text", "matched", "caption"}``, and
``feature_evolution_text`` = its ``text`` alone (a plain string, so the library queries
``circuit_groups`` and ``concept_paths_to_logit`` can return it and the full-text index can find it).

Every annotation's ``meta`` holds ``prompt_version``, ``images`` (sha256 of every image sent,
in order), ``request`` (the cache key), ``response_model`` and ``parse_ok``. Annotations target
existing uids only: the run's identity is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from neurflow_graph.labels.parsing import parse_caption, parse_formation
from neurflow_graph.labels.runner import Outcome


def source_for(model: str) -> str:
    return f"mllm:{model}"


def _meta(o: Outcome, parse_ok: bool) -> dict[str, Any]:
    r = o.request
    return {"prompt_version": r.prompt_version, "images": r.image_hashes, "request": r.key, "kind": r.kind,
            "response_model": o.reply.response_model if o.reply else None, "parse_ok": parse_ok}


def outcome_annotations(*, run_uid: str, outcomes: Sequence[Outcome]) -> list[Any]:
    """The annotations of every answered caption/formation outcome (failed and unsent ones give none)."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.identity import feeds_uid, neuron_group_uid

    out: list[Any] = []
    for o in outcomes:
        if o.reply is None or o.request.kind not in ("caption", "formation"):
            continue
        r = o.request
        layer, gid = r.subject["layer"], int(r.subject["gid"])
        target = neuron_group_uid(run_uid, layer, gid)
        source = source_for(r.model)

        def add(key: str, value: Any, meta: dict[str, Any], *, on: str = target, label: str = "NeuronGroup") -> None:
            out.append(make_annotation(target=on, target_label=label, key=key, value=value, source=source, meta=meta))

        if r.kind == "caption":
            parsed = parse_caption(o.reply.text)
            meta = _meta(o, parsed.ok)
            add("caption_answer", {"raw": o.reply.text, "parsed": parsed.ok, "error": parsed.error}, meta)
            if parsed.ok:
                add("label", parsed.label, meta)
                add("caption", parsed.caption, meta)
                add("features", list(parsed.features), meta)
            continue
        children = [(str(c[0]), int(c[1]), float(c[2])) for c in r.subject["children"]]
        parsed_f = parse_formation(o.reply.text, n_groups=1 + len(children))
        meta = _meta(o, parsed_f.ok)
        add("formation_answer", {"raw": o.reply.text, "parsed": parsed_f.ok, "error": parsed_f.error}, meta)
        if not parsed_f.ok:
            continue
        evolution = []
        for k, (c_layer, c_gid, w) in enumerate(children, start=2):
            e = parsed_f.evolution_of(k)
            assert e is not None  # parse_formation is ok only with every group's evolution
            evolution.append({"group": k, "child_layer": c_layer, "child_gid": c_gid, "weight": w,
                              "text": e.text, "matched": e.matched})
            add("feature_evolution", {"group": k, "text": e.text, "matched": e.matched,
                                      "caption": parsed_f.caption},
                {**meta, "parent": target}, on=feeds_uid(run_uid, c_layer, c_gid, layer, gid), label="FEEDS")
            add("feature_evolution_text", e.text, {**meta, "parent": target},
                on=feeds_uid(run_uid, c_layer, c_gid, layer, gid), label="FEEDS")
        add("formation", {"caption": parsed_f.caption, "evolution": evolution,
                          "group_features": {str(k): v for k, v in sorted(parsed_f.group_features.items())}}, meta)
        add("formation_caption", parsed_f.caption, meta)
    return out
