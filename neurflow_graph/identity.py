"""Content identity: every uid the graph uses, computed from plain data (no store involved).

Rules (docs/graph-model.md, "Identity"):

* A **run** is identified by what defines it and what it found: the model (name and full weights
  hash), the analysed layers, the class, the extraction parameters, the image set (sha256 of each
  image, in order) and the circuit's results (neurons with their semantic groups, edges, neuron
  groups with their members, group edges, patches). Of the results, only the discrete ones enter it
  (which neurons, semantic groups, patches, edges and members were found); the measured values
  (weights, scores, mean activations) are determined by the inputs up to floating-point noise,
  which differs between thread counts and devices, so they stay out. Timings, dates, software
  versions, image paths and annotations (concept, purity, label, caption, ...) never enter it:
  re-extracting the same thing, on any machine, gives the same uid, and labelling a run later does
  not change it.
* Shared nodes (Model, Layer, Neuron, Class, Patch, Image) are named by their own content, so every
  run that names them finds the same node.
* Run-owned nodes (SemanticGroup, NeuronGroup) and FEEDS edges are prefixed by the run uid.
* An annotation's uid hashes (target, key, source): writing it again replaces its value.

Never build uid strings by hand elsewhere; call these functions.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from neurflow_graph.errors import RunFormatError

if TYPE_CHECKING:  # pragma: no cover
    from neurflow_graph.circuit import Circuit

IDENTITY_VERSION = 3  # bump when the rule below changes (every run uid changes with it)

_UID_UNSAFE = re.compile(r"[%\x00-\x1f\x7f]|^ +| +$")


@lru_cache(maxsize=65536)
def _escaped(text: str) -> str:
    return _UID_UNSAFE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), text)


def uid_part(text: str, *, what: str) -> str:
    """``text`` made safe inside a uid: ``%``, control characters and leading/trailing spaces are
    percent-encoded (FalkorDB's string indexes trim edge whitespace and crash on it under a unique
    constraint). Empty text is refused (RunFormatError)."""
    if not isinstance(text, str) or not text:
        raise RunFormatError(f"circuit.json: {what} must be a non-empty string, got {text!r}")
    return _escaped(text)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=vars, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def identity_payload(circuit: "Circuit") -> dict[str, Any]:
    """What the run uid hashes, as plain data (everything of the circuit except timing, software,
    created_at, image paths and annotations)."""
    return {
        "identity_version": IDENTITY_VERSION,
        "model": {"name": circuit.model.name, "weights_sha256": circuit.model.weights_sha256},
        "layers": list(circuit.model.layers),
        "class": {"index": int(circuit.class_.index), "name": circuit.class_.name},
        "params": circuit.params,
        "images": [[int(im.id), im.sha256] for im in circuit.images],
    }


def run_uid(circuit: "Circuit") -> str:
    """sha256 of the run's identity (see the module doc), first 16 hex digits.

    The hash covers the canonical JSON (sorted keys, no whitespace, UTF-8) of
    :func:`identity_payload`, then every result array of :func:`neurflow_graph.circuit.circuit_arrays`
    (neurons, semantic groups with their patches and mean activations, edges, neuron groups with
    their members, group edges, patches; in the circuit's order), by name, as little-endian int64
    bytes, whatever file version the circuit was read from. Float arrays (weights, scores, mean
    activations) are left out: they are measurements of what the discrete results and the inputs
    already fix, and their last bits change with the thread count or device (a Ray task on one
    thread vs the sequential path on two gave weights 3e-9 apart)."""
    from neurflow_graph.circuit import circuit_arrays

    h = hashlib.sha256(_dumps(identity_payload(circuit)))
    for name, a in sorted(circuit_arrays(circuit).items()):
        if a.dtype.kind == "f":
            continue
        canonical = np.ascontiguousarray(a, dtype="<i8")
        h.update(f"\n{name}{list(canonical.shape)}=".encode())
        h.update(canonical.tobytes())
    return h.hexdigest()[:16]


def model_uid(circuit: "Circuit") -> str:
    """``{name}@{weights_sha256[:16]}``, or ``{name}@random`` without weights."""
    sha = circuit.model.weights_sha256
    return f"{uid_part(circuit.model.name, what='model.name')}@{sha[:16] if sha else 'random'}"


def layer_uid(model_uid: str, layer: str) -> str:
    return f"{model_uid}/{uid_part(layer, what='layer name')}"


def neuron_uid(model_uid: str, layer: str, index: int) -> str:
    return f"{layer_uid(model_uid, layer)}/{int(index)}"


def class_uid(class_name: str) -> str:
    return uid_part(class_name, what="class.name")


def image_uid(sha256: str) -> str:
    return uid_part(sha256, what="image sha256")


def patch_uid(image_sha256: str, box: Any) -> str:
    x0, y0, x1, y1 = (int(v) for v in box)
    return f"{image_uid(image_sha256)}:{x0},{y0},{x1},{y1}"


def semantic_group_uid(run_uid: str, layer: str, neuron_index: int, j: int) -> str:
    return f"{run_uid}/{uid_part(layer, what='layer name')}/{int(neuron_index)}/{int(j)}"


def neuron_group_uid(run_uid: str, layer: str, gid: int) -> str:
    return f"{run_uid}/{uid_part(layer, what='layer name')}/{int(gid)}"


def feeds_uid(run_uid: str, child_layer: str, child_gid: int, parent_layer: str, parent_gid: int) -> str:
    """uid of the FEEDS edge child group -> parent group (stored as the edge's ``uid`` property)."""
    return f"{neuron_group_uid(run_uid, child_layer, child_gid)}>{uid_part(parent_layer, what='layer name')}/{int(parent_gid)}"


def annotation_uid(target: str, key: str, source: str) -> str:
    """sha256 of (target, key, source), 24 hex digits: one annotation per target, key and source."""
    return hashlib.sha256(_dumps([target, key, source])).hexdigest()[:24]


# ---- directions (engineer F, issue 12) ------------------------------------------------------

def model_uid_for(name: str, weights_sha256: str | None) -> str:
    """:func:`model_uid` from a model's name and weights hash (for results that are not circuits)."""
    return f"{uid_part(name, what='model name')}@{weights_sha256[:16] if weights_sha256 else 'random'}"


def basis_uid(model_uid: str, layer: str, site: str) -> str:
    """uid of the PCA basis of one site (``pre``/``post``/``out``) of a layer: one per (model, layer, site)."""
    return f"{layer_uid(model_uid, layer)}|{uid_part(site, what='site')}"


def direction_uid(model_uid: str, layer: str, site: str, index: int) -> str:
    """uid of principal direction ``index`` (0 = highest variance) of a layer site."""
    return f"{basis_uid(model_uid, layer, site)}|pc{int(index)}"
