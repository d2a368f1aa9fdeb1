"""Label quality: can the model tell a group's held-out exemplars from random patches by the caption?

For each captioned neuron group G the model gets the caption and a shuffled mix of

* ``positives`` *held-out* exemplars: patches of V_G (the union of G's semantic groups) that are
  not in the mosaic the caption was written from, best first;
* ``negatives`` random patches of the same run that are not in V_G,

each cropped from its source image and sent as its own PNG, and is asked which images match.
Accuracy = share of images judged correctly (a positive named, a negative not named); precision
and recall of "matching" are kept too. Mixes and order are drawn from a generator seeded by the
run, group and ``seed``, so a re-run asks the same question and is answered from the cache.

On the concept world, :func:`ground_truth_agreement` also checks whether a group's label or
caption names its ground-truth concept (``annotate_groups``' ``concept``), lexically, with the
few synonyms in :data:`CONCEPT_WORDS`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurflow_graph.circuit import Circuit
from neurflow_graph.labels.parsing import parse_matching
from neurflow_graph.labels.requests import ChatRequest, Image, evaluation_request

DEFAULT_POSITIVES = 4
DEFAULT_NEGATIVES = 4


def group_patch_ids(circuit: Circuit, layer: str, gid: int) -> list[int]:
    """V_G's patch ids: the group's members' semantic-group patches, in stored order, without repeats."""
    group = next(g for g in circuit.neuron_groups if g.layer == layer and g.id == gid)
    sgs = {(n.index, s.id): s.patches for n in circuit.layer_neurons(layer) for s in n.semantic_groups}
    out: dict[int, None] = {}
    for idx, j in group.members:
        for pid in sgs[(idx, j)]:
            out.setdefault(pid, None)
    return list(out)


@dataclass(frozen=True)
class EvalMix:
    layer: str
    gid: int
    patches: list[int]        # in the order shown
    positives: list[bool]     # True: a held-out exemplar of the group


def _rng(run_uid: str, layer: str, gid: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{run_uid}/{layer}/{gid}/{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def evaluation_mix(*, circuit: Circuit, run_uid: str, layer: str, gid: int, shown: Sequence[int],
                   positives: int = DEFAULT_POSITIVES, negatives: int = DEFAULT_NEGATIVES,
                   seed: int = 0) -> EvalMix | None:
    """The images of one group's check (None when it has no held-out exemplar or no random patch)."""
    own = group_patch_ids(circuit, layer, gid)
    held_out = [p for p in own if p not in set(shown)][:positives]
    pool = sorted({p.id for p in circuit.patches} - set(own))
    rng = _rng(run_uid, layer, gid, seed)
    if not held_out or not pool:
        return None
    others = [int(x) for x in rng.choice(pool, size=min(negatives, len(pool)), replace=False)]
    items = [(p, True) for p in held_out] + [(p, False) for p in others]
    order = rng.permutation(len(items))
    return EvalMix(layer=layer, gid=gid, patches=[items[i][0] for i in order],
                   positives=[items[i][1] for i in order])


def evaluation_requests(*, model: str, mixes: Sequence[EvalMix], captions: Mapping[tuple[str, int], str],
                        crop: Callable[[int], Image]) -> list[ChatRequest]:
    """One request per mix; ``crop(patch_id)`` gives a patch's PNG."""
    return [evaluation_request(model=model, layer=m.layer, gid=m.gid, caption=captions[(m.layer, m.gid)],
                               images=[crop(p) for p in m.patches], positives=m.positives) for m in mixes]


@dataclass(frozen=True)
class EvalScore:
    ok: bool
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    counts: dict[str, int] | None = None
    error: str | None = None


def score_answer(text: str, positives: Sequence[bool]) -> EvalScore:
    """Score the model's ``Matching images:`` answer against which images were the group's own."""
    parsed = parse_matching(text, n=len(positives))
    if not parsed.ok:
        return EvalScore(ok=False, error=parsed.error)
    said = [k + 1 in parsed.matching for k in range(len(positives))]
    tp = sum(s and p for s, p in zip(said, positives))
    fp = sum(s and not p for s, p in zip(said, positives))
    fn = sum(p and not s for s, p in zip(said, positives))
    tn = sum(not s and not p for s, p in zip(said, positives))
    return EvalScore(ok=True, accuracy=(tp + tn) / len(positives),
                     precision=tp / (tp + fp) if tp + fp else None, recall=tp / (tp + fn) if tp + fn else None,
                     counts={"tp": tp, "fp": fp, "fn": fn, "tn": tn})


# ---- ground truth (concept world) -----------------------------------------------------------

# concept name -> word stems that count as naming it (matched at a word start, case-insensitive)
CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circular", "round", "disc", "disk"),
    "ellipse": ("ellipse", "elliptic", "oval"),
    "square": ("square",),
    "bar": ("bar", "rectang", "elongated"),
    "triangle": ("triang",),
    "red": ("red",), "yellow": ("yellow",), "blue": ("blue",), "white": ("white",), "black": ("black",),
    "stripes": ("stripe", "striped", "band"),
    "dots": ("dot", "spot", "speck", "polka"),
    "checker": ("checker", "chequer", "chess", "grid"),
    "grass": ("grass", "lawn", "turf", "meadow"),
    "sky": ("sky",),
    "sand": ("sand",),
    "gray": ("gray", "grey"),
    "flower": ("flower", "petal", "blossom"),
    "pebble": ("pebble", "stone", "rock"),
}


def concept_terms(concept: str) -> tuple[str, ...]:
    """``"texture:stripes"`` -> its word stems (the bare name when it has no entry)."""
    name = concept.split(":", 1)[-1].strip().lower()
    return CONCEPT_WORDS.get(name, (name,))


def names_concept(text: str, concept: str) -> list[str]:
    """The stems of ``concept`` that ``text`` uses (empty: it does not name it)."""
    low = text.lower()
    return [t for t in concept_terms(concept) if re.search(r"\b" + re.escape(t), low)]


@dataclass(frozen=True)
class Agreement:
    layer: str
    gid: int
    concept: str
    matched: list[str]

    @property
    def agrees(self) -> bool:
        return bool(self.matched)


def ground_truth_agreement(*, concepts: Mapping[tuple[str, int], str],
                           texts: Mapping[tuple[str, int], str]) -> list[Agreement]:
    """For each group with both a ground-truth concept and a label text: does the text name the concept?"""
    return [Agreement(layer=k[0], gid=k[1], concept=c, matched=names_concept(texts[k], c))
            for k, c in sorted(concepts.items()) if c and k in texts]


def summarise(values: Mapping[tuple[str, int], float], layers: Sequence[str]) -> list[tuple[str, int, float]]:
    """``(layer, n, mean)`` per layer (circuit order) plus ``("all", n, mean)``."""
    rows: list[tuple[str, int, float]] = []
    for layer in layers:
        v = [x for (lay, _), x in values.items() if lay == layer]
        if v:
            rows.append((layer, len(v), float(np.mean(v))))
    if values:
        rows.append(("all", len(values), float(np.mean(list(values.values())))))
    return rows


def as_meta(score: EvalScore, mix: EvalMix) -> dict[str, Any]:
    return {"counts": score.counts, "precision": score.precision, "recall": score.recall,
            "patches": mix.patches, "positives": mix.positives}
