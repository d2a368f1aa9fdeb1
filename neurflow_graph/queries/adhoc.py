"""Ad-hoc Cypher for ``neurflow-graph cypher``: parameter typing and read-only enforcement.

Read-only is enforced twice: a query whose clauses write (outside string literals, comments
and escaped names) is refused before it reaches the store, and the store itself runs it in
a read-only transaction (``GRAPH.RO_QUERY`` / a Neo4j READ transaction), which rejects any
write the scan cannot see (e.g. a writing procedure).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from neurflow_graph.errors import NeurflowError, QueryError
from neurflow_graph.queries.library import coerce_value, one_line, parse_assignments, valid_type

if TYPE_CHECKING:
    from neurflow_graph.store.base import GraphStore

_WRITE_RE = re.compile(r"(?<![\w.$:`])(CREATE|MERGE|DELETE|DETACH|SET|REMOVE|DROP|FOREACH|LOAD\s+CSV)(?![\w`])(?!\s*:)",
                       re.IGNORECASE)
_MASK_RE = re.compile(
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`|//[^\n]*|/\*.*?\*/""",
    re.DOTALL,
)
_READ_ONLY_HINTS = ("read-only", "read only", "readonly", "access mode", "accessmode", "not allowed in read")


def infer_value(text: str) -> Any:
    """A CLI value as JSON when it is a number, true/false/null, a list or a map; else the string itself."""
    stripped = text.strip()
    if stripped and (stripped[0] in "[{-0123456789" or stripped in ("true", "false", "null")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
    return text


class RunRef(str):
    """A ``-p NAME:run=PREFIX`` value: a run uid or unique prefix, resolved against the store before the query runs."""


_PARAM_REF_RE = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|`([^`]+)`)")


def referenced_params(text: str) -> list[str]:
    """The ``$names`` ``text`` uses, outside string literals, comments and `escaped` names (sorted)."""
    masked = re.sub(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/""", " ", text, flags=re.DOTALL)
    return sorted({m.group(1) or m.group(2) for m in _PARAM_REF_RE.finditer(masked)})


def typed_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``-p NAME=VALUE`` (inferred) or ``-p NAME:TYPE=VALUE`` (typed) -> parameters.

    The type ``run`` takes a run uid or a unique prefix of one (a :class:`RunRef`, resolved by
    :func:`run_adhoc`)."""
    out: dict[str, Any] = {}
    for key, value in parse_assignments(items).items():
        name, sep, type_ = key.partition(":")
        name, type_ = name.strip(), type_.strip()
        if sep and type_ == "run":
            out[name] = RunRef(value.strip())
        elif sep:
            if not valid_type(type_):
                raise QueryError(f"parameter {name}: unknown type {type_!r} "
                                 "(use string, int, float, bool, run or list<...> of the first four)")
            try:
                out[name] = coerce_value(value, type_)
            except ValueError as e:
                raise QueryError(f"parameter {name} {e}") from None
        else:
            out[name] = infer_value(value)
    return out


def write_clauses(text: str) -> list[str]:
    """The writing clauses of ``text`` (upper-case), ignoring literals, comments and `escaped` names."""
    masked = _MASK_RE.sub(" ", text)
    return sorted({" ".join(m.group(1).upper().split()) for m in _WRITE_RE.finditer(masked)})


def run_adhoc(*, store: GraphStore, text: str, params: Mapping[str, Any], write: bool = False) -> list[dict[str, Any]]:
    """Run ``text`` with ``params``: read-only unless ``write``; errors become one-line QueryErrors."""
    if not text.strip():
        raise QueryError("the query is empty")
    missing = [n for n in referenced_params(text) if n not in params]
    if missing:
        raise QueryError("the query uses " + ", ".join(f"${n}" for n in missing) + " but no value was given; add "
                         + " ".join(f"-p {n}=VALUE" for n in missing))
    if any(isinstance(v, RunRef) for v in params.values()):
        from neurflow_graph.queries.names import resolve_run

        params = {k: resolve_run(store, v) if isinstance(v, RunRef) else v for k, v in params.items()}
    if not write:
        found = write_clauses(text)
        if found:
            raise QueryError(f"the query writes ({', '.join(found)}) but runs read-only; pass --write to allow it")
    try:
        return store.write(text, dict(params)) if write else store.read(text, dict(params))
    except Exception as e:
        if not write and any(h in str(e).lower() for h in _READ_ONLY_HINTS):
            raise QueryError(f"the query tried to write but runs read-only; pass --write to allow it ({one_line(str(e), 160)})") from e
        if isinstance(e, NeurflowError):
            raise
        raise QueryError(f"the store rejected the query: {one_line(str(e))}") from e
