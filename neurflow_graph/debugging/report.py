"""A :class:`~neurflow_graph.debugging.debug.DebugResult` as a table, plain sentences and annotations."""

from __future__ import annotations

from typing import Any

SOURCE = "debug"


def _c(concept: str | None) -> str:
    return (concept or "?").split(":", 1)[-1]


def debug_table(result: Any) -> str:
    """One line per group: concept, |S_G|, median M, top share, masking effects vs random, net effect."""
    import numpy as np

    head = (f"{'group':>5} {'concept':<12} {'|S|':>3} {'M med':>6} {'top':>5} {'dprob':>7} {'rnd dprob [99%]':>22} "
            f"{'back':>5} {'rnd back':>8} {'net':>6} {'verdict':<14}")
    lines = [head]
    for g in result.groups:
        r = g.random_delta_prob
        rnd = f"{r.mean:+.3f} [{r.low:+.2f},{r.high:+.2f}]" if r else "-"
        rb = f"{g.random_returned_rate.mean:.2f}" if g.random_returned_rate else "-"
        med = f"{np.median(g.metric):.2f}" if g.metric else "-"
        verdict = "spurious" if g.spurious else ("beyond random" if g.beyond_random else
                                                 ("within random" if g.beyond_random is not None else "-"))
        lines.append(f"{g.gid:>5} {_c(g.concept):<12} {len(g.neurons):>3} {med:>6} {g.top_share:>5.2f} "
                     f"{g.delta_prob:>+7.3f} {rnd:>22} {g.returned_rate:>5.2f} {rb:>8} {g.net_effect:>+6.2f} {verdict:<14}")
    return "\n".join(lines)


def debug_sentences(result: Any) -> list[str]:
    """The findings in plain words, each resting on a measured effect."""
    out = [f"{result.class_name}: {len(result.false_positives)} false positives among {result.n_images} images "
           f"({', '.join(sorted(set(result.false_positive_labels))) or 'none'}); layer {result.layer}, "
           f"{result.n_random} random sets per size"]
    for g in result.groups:
        sign = "raises" if g.net_effect > 0 else "lowers"
        line = f"group {result.layer}/{g.gid} ({_c(g.concept)}, {len(g.neurons)} neurons) {sign} the {result.class_name} logit (net {g.net_effect:+.2f})"
        if g.spurious:
            r = g.random_concept_delta_logit
            line += (f"; spurious: masking it changes the logit by {g.concept_delta_logit:+.2f} on the {g.concept_images} "
                     f"images with {_c(g.concept)}, beyond random sets of its size ({r.mean:+.2f}, 99% [{r.low:+.2f}, {r.high:+.2f}])")
        elif g.beyond_random is False:
            line += f"; masking it moves the logit on images with {_c(g.concept)} no more than random sets do"
        out.append(line)
    if result.combined is not None:
        c = result.combined
        out.append(f"masking the {len(c.groups)} {'/'.join(map(_c, c.concepts))} groups together ({c.size} neurons) returns "
                   f"{c.returned_rate:.0%} of the false positives to their true class; random sets of {c.size} neurons "
                   f"return {c.random_returned_rate.mean:.0%} (99% [{c.random_returned_rate.low:.0%}, "
                   f"{c.random_returned_rate.high:.0%}])")
    for m in getattr(result, "by_concept", []):
        line = f"masking all {_c(m.concept)} groups ({m.size} neurons) "
        if m.delta_true_logit == m.delta_true_logit:
            line += (f"returns {m.returned_rate:.0%} of the false positives (random sets: "
                     f"{m.random_returned_rate.mean:.0%}) and changes the {result.class_name} logit by "
                     f"{m.delta_logit:+.2f}, their true class's by {m.delta_true_logit:+.2f} (random: "
                     f"{m.random_delta_logit.mean:+.2f}, {m.random_delta_true_logit.mean:+.2f})")
        else:  # NaN: no false positive's folder is a class of the model
            line += (f"changes the {result.class_name} logit by {m.delta_logit:+.2f} (random: "
                     f"{m.random_delta_logit.mean:+.2f}); no false positive's folder names a class of the model, "
                     "so there is no true class to return to and no true-class logit to follow")
        out.append(line)
    if result.top_group_spurious_share is not None:
        out.append(f"the group with the highest M is a spurious-context group on {result.top_group_spurious_share:.0%} "
                   "of the false positives")
    return out


def debug_annotations(result: Any) -> list[Any]:
    """Annotations (source ``debug``) on the run and on each group, keyed by class-independent names."""
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.identity import neuron_group_uid

    meta = {"layer": result.layer, "n_random": result.n_random, "seed": result.seed,
            "n_false_positives": len(result.false_positives)}
    out = []
    for g in result.groups:
        uid = neuron_group_uid(result.run, g.layer, g.gid)
        values = {"debug.net_effect": g.net_effect, "debug.delta_prob": g.delta_prob, "debug.flip_rate": g.flip_rate,
                  "debug.returned_rate": g.returned_rate, "debug.top_metric_share": g.top_share,
                  "debug.beyond_random": g.beyond_random, "debug.spurious": g.spurious,
                  "debug.random_delta_prob": None if g.random_delta_prob is None else vars(g.random_delta_prob),
                  "debug.concept_delta_logit": g.concept_delta_logit}
        for key, value in values.items():
            if value is None or (isinstance(value, float) and value != value):
                continue
            out.append(make_annotation(target=uid, target_label="NeuronGroup", key=key, value=value, source=SOURCE,
                                       meta=meta))
    summary = {"layer": result.layer, "false_positives": len(result.false_positives),
               "top_group_spurious_share": result.top_group_spurious_share,
               "spurious_groups": [g.gid for g in result.groups if g.spurious]}
    if result.combined is not None:
        summary.update(combined_returned_rate=result.combined.returned_rate,
                       random_returned_rate=vars(result.combined.random_returned_rate))
    out.append(make_annotation(target=result.run, target_label="Run", key="debug.summary", value=summary,
                               source=SOURCE, meta=meta))
    return out
