"""Annotations: what is said *about* a circuit, kept apart from what the circuit found.

Labels and captions, ground-truth concept and purity, debugging and evaluation results attach to
existing things by uid (:mod:`neurflow_graph.identity`) and never change a run's identity. Each
annotation records its ``source`` (``ground_truth``, ``user``, ``mllm:<model>``,
``evaluation:<name>``, ``debug``, ...) and when it was made; several sources coexist on one target
and readers pick one (:func:`preferred`, or a ``source`` filter).

Plain data and files only; the store side is :mod:`neurflow_graph.store.annotations`.

Run directory file ``RUN_DIR/annotations.jsonl`` (beside ``circuit.json``), one JSON object per
line: ``{"target", "target_label", "key", "value", "source", "created_at", "meta"}``. It travels
with the run and is written into the store by every ``neurflow-graph ingest`` of the run
directory, after the run's core. Rewritten atomically; the newest annotation per (target, key,
source) wins.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from neurflow_graph.errors import InputError, RunFormatError
from neurflow_graph.fileio import atomic_write

ANNOTATIONS_FILE = "annotations.jsonl"

#: labels an annotation can target; "FEEDS" is the group -> group edge (target = identity.feeds_uid)
TARGET_LABELS: tuple[str, ...] = ("Run", "NeuronGroup", "SemanticGroup", "Neuron", "Direction", "FEEDS")

#: default source preference of readers: user > mllm:* > ground_truth > anything else
SOURCE_PREFERENCE: tuple[str, ...] = ("user", "mllm:*", "ground_truth")


@dataclass(frozen=True)
class Annotation:
    """One statement ``key = value`` about ``target`` (a uid of kind ``target_label``) by ``source``."""

    target: str
    target_label: str
    key: str
    value: Any
    source: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "target_label": self.target_label, "key": self.key, "value": self.value,
                "source": self.source, "created_at": self.created_at, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: Any) -> "Annotation":
        if not isinstance(d, dict):
            raise RunFormatError("an annotation must be a JSON object")
        try:
            return _checked(cls(target=d["target"], target_label=d["target_label"], key=d["key"], value=d["value"],
                                source=d["source"], created_at=d["created_at"], meta=dict(d.get("meta") or {})))
        except KeyError as e:
            raise RunFormatError(f"an annotation is missing the field {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise RunFormatError(f"a malformed annotation: {e}") from e


def _json_able(value: Any, what: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"annotation {what} is NaN or infinite; give a finite number")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _json_able(v, what)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"annotation {what} has a non-text key {k!r}")
            _json_able(v, what)
        return
    raise InputError(f"annotation {what} must be JSON-able (text, number, bool, list, dict), got {type(value).__name__}")


_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f]|^\s|\s$")


def _checked(a: Annotation) -> Annotation:
    for name in ("target", "key", "source", "created_at"):
        text = getattr(a, name)
        if not isinstance(text, str) or not text or _BAD_TEXT.search(text):
            raise InputError(f"annotation {name} must be non-empty text without control characters or "
                             f"edge whitespace, got {text!r}")
    if a.target_label not in TARGET_LABELS:
        raise InputError(f"annotation target_label {a.target_label!r} is not one of {', '.join(TARGET_LABELS)}")
    if a.value is None:
        raise InputError(f"annotation {a.key!r} of {a.target} has no value")
    _json_able(a.value, "value")
    _json_able(a.meta, "meta")
    return a


def now_utc() -> str:
    """ISO-8601 UTC time with microseconds (so that a newer annotation sorts after an older one)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def make_annotation(*, target: str, target_label: str, key: str, value: Any, source: str,
                    meta: dict[str, Any] | None = None, created_at: str | None = None) -> Annotation:
    """A checked :class:`Annotation` stamped with the current UTC time (InputError when malformed)."""
    if isinstance(value, tuple):
        value = list(value)
    return _checked(Annotation(target=target, target_label=target_label, key=key, value=value, source=source,
                               created_at=created_at or now_utc(), meta=dict(meta or {})))


def latest_per_key(annotations: Iterable[Annotation]) -> list[Annotation]:
    """One annotation per (target, key, source): the newest by ``created_at`` (later in input on ties)."""
    best: dict[tuple[str, str, str], Annotation] = {}
    for a in annotations:
        k = (a.target, a.key, a.source)
        if k not in best or a.created_at >= best[k].created_at:
            best[k] = a
    return list(best.values())


def source_rank(source: str, preference: Sequence[str] = SOURCE_PREFERENCE) -> int:
    """Position of ``source`` in ``preference`` (``prefix:*`` matches ``prefix:anything``); len() if absent."""
    for i, p in enumerate(preference):
        if source == p or (p.endswith(":*") and source.startswith(p[:-1])):
            return i
    return len(preference)


def preferred(annotations: Iterable[Annotation], *, key: str, source: str | None = None,
              preference: Sequence[str] = SOURCE_PREFERENCE) -> dict[str, Annotation]:
    """target -> the annotation of ``key`` readers should show: from ``source`` when given (``mllm:*``
    allowed), else the best source by ``preference``, the newest within one source."""
    out: dict[str, Annotation] = {}
    for a in latest_per_key(x for x in annotations if x.key == key):
        if source is not None and source_rank(a.source, (source,)) != 0:
            continue
        cur = out.get(a.target)
        if cur is None:
            out[a.target] = a
            continue
        rank, cur_rank = source_rank(a.source, preference), source_rank(cur.source, preference)
        if rank < cur_rank or (rank == cur_rank and a.created_at > cur.created_at):
            out[a.target] = a
    return out


# ---- the run directory's file ---------------------------------------------------------------------

def annotations_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / ANNOTATIONS_FILE


def read_run_annotations(run_dir: str | os.PathLike[str]) -> list[Annotation]:
    """The annotations of ``RUN_DIR/annotations.jsonl`` ([] when there is none); RunFormatError on a bad line."""
    path = annotations_path(run_dir)
    if not path.is_file():
        return []
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RunFormatError(f"cannot read {path}: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Annotation.from_dict(json.loads(line)))
        except (ValueError, InputError) as e:
            raise RunFormatError(f"{path} line {n}: {e}; fix or remove that line") from e
    return out


def append_run_annotations(run_dir: str | os.PathLike[str], annotations: Iterable[Annotation]) -> Path:
    """Add ``annotations`` to ``RUN_DIR/annotations.jsonl`` (atomic rewrite; the newest per (target,
    key, source) wins, in a stable order); return the file's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a run directory")
    merged = latest_per_key([*read_run_annotations(run_dir), *annotations])
    merged.sort(key=lambda a: (a.target_label, a.target, a.key, a.source))
    text = "".join(json.dumps(a.to_dict(), sort_keys=True, ensure_ascii=False) + "\n" for a in merged)
    return atomic_write(annotations_path(run_dir), lambda f: f.write(text), mode="w")


# ---- a user's own labels (``neurflow-graph annotate``) -------------------------------------------

USER_KEYS: tuple[str, ...] = ("label", "caption")


@dataclass(frozen=True)
class UserLabel:
    """One entry of a user's label file: a group named by ``uid``, or by ``layer`` and ``gid``."""

    where: str                     # "file:line" / "file[item]", for error messages
    uid: str | None
    layer: str | None
    gid: int | None
    values: dict[str, str]         # key ("label" / "caption") -> text


def _user_entry(where: str, raw: dict[str, Any]) -> UserLabel:
    def text(k: str) -> str | None:
        v = raw.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        return str(v).strip()

    values = {k: v for k in USER_KEYS if (v := text(k)) is not None}
    if not values:
        raise InputError(f"{where}: no label: give a non-empty 'label' (or 'caption')")
    uid, layer, group = text("uid"), text("layer"), text("group")
    if uid is None and layer is None and group is not None and "/" in group:
        uid, group = group, None  # a group uid in the group column
    if uid is not None:
        return UserLabel(where=where, uid=uid, layer=None, gid=None, values=values)
    if layer is None or group is None:
        raise InputError(f"{where}: name the group by 'uid' (a NeuronGroup uid) or by 'layer' and 'group' (its id)")
    try:
        gid = int(group)
    except ValueError:
        raise InputError(f"{where}: group {group!r} is not a group id (an integer) nor a group uid") from None
    return UserLabel(where=where, uid=None, layer=layer, gid=gid, values=values)


def load_user_labels(path: str | os.PathLike[str]) -> list[UserLabel]:
    """Parse a user's label file (InputError on anything malformed, naming the line).

    * JSON: a list of objects (or ``{"labels": [...]}``), each ``{"uid": G, "label": T}`` or
      ``{"layer": L, "group": ID, "label": T}``, optionally with ``"caption"``.
    * CSV (header row): columns ``uid,label`` or ``layer,group,label`` (``caption`` optional).
    """
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give a JSON or CSV file of labels") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from e
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InputError(f"{path} is not valid JSON ({e}); give a list of {{\"uid\"|\"layer\"+\"group\", \"label\"}}") from e
        items = doc.get("labels") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise InputError(f"{path}: expected a JSON list of label objects (or {{\"labels\": [...]}})")
        out = []
        for i, raw in enumerate(items):
            if not isinstance(raw, dict):
                raise InputError(f"{path}[{i}]: expected an object, got {type(raw).__name__}")
            out.append(_user_entry(f"{path}[{i}]", raw))
    else:
        reader = csv.DictReader(text.splitlines())
        fields = {(f or "").strip().lower() for f in (reader.fieldnames or [])}
        if not fields & set(USER_KEYS) or not ({"uid"} <= fields or {"layer", "group"} <= fields
                                                 or "group" in fields):
            raise InputError(f"{path}: a CSV needs a header with uid,label or layer,group,label "
                             f"(found {', '.join(sorted(fields)) or 'no header'})")
        out = []
        for n, row in enumerate(reader, 2):
            clean = {(k or "").strip().lower(): v for k, v in row.items()}
            out.append(_user_entry(f"{path}:{n}", clean))
    if not out:
        raise InputError(f"{path} holds no labels")
    return out
