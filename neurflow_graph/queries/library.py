"""The Cypher query library: find, parse and run ``cypher/*.cypher``.

Each library file starts with a header of ``//`` comment lines::

    // name: shared_groups
    // purpose: Pairs of neuron groups (one per class) at one layer that share member neurons.
    // param: model string                 -- model name or Model uid
    // param: min_shared int = 1           -- keep pairs sharing at least this many neurons
    // columns: layer, group_a, group_b, shared, jaccard

``param`` lines read ``NAME TYPE [= DEFAULT] [-- help]``; a parameter without a default is
required, ``= null`` makes it optional (passed as null). Types: ``string``, ``int``, ``float``,
``bool`` and ``list<T>`` of those. Other ``//`` lines in the header are free comments.

A per-backend variant ``NAME.<backend>.cypher`` (backend ``falkordb`` or ``neo4j``) replaces
the portable text on that backend; its header must repeat name, params and columns and give a
``// why:`` line. Queries always run read-only and take parameters only: values are never
spliced into query text.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurflow_graph.errors import NeurflowError, QueryError

if TYPE_CHECKING:
    from neurflow_graph.store.base import GraphStore

BACKENDS = ("falkordb", "neo4j")
SCALAR_TYPES = ("string", "int", "float", "bool")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM_RE = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<type>[a-z]+(?:<[a-z]+>)?)"
    r"(?:\s*=\s*(?P<default>.*?))?\s*(?:--\s*(?P<help>.*))?$"
)
_HEADER_KEYS = ("name", "purpose", "param", "columns", "why")


def default_directory() -> Path:
    """``$NEURFLOW_CYPHER_DIR`` if set, else the source tree's ``cypher/``, else the installed copy."""
    env = os.environ.get("NEURFLOW_CYPHER_DIR")
    if env:
        return Path(env)
    source_tree = Path(__file__).resolve().parents[2] / "cypher"
    if source_tree.is_dir():
        return source_tree
    # A non-editable install ships the library as data files (pyproject: tool.setuptools.data-files).
    import sysconfig

    return Path(sysconfig.get_path("data")) / "share" / "neurflow-graph" / "cypher"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    default: Any = None
    help: str = ""

    def describe(self) -> str:
        if self.required:
            return f"{self.name} {self.type}"
        return f"{self.name} {self.type} = {_show_default(self.default)}"


@dataclass(frozen=True)
class LibraryQuery:
    name: str
    purpose: str
    params: tuple[Param, ...]
    columns: tuple[str, ...]
    text: str
    path: Path
    variants: dict[str, str] = field(default_factory=dict)  # backend -> query text
    notes: tuple[str, ...] = ()
    why: str = ""  # a backend variant's reason to exist

    def text_for(self, backend: str) -> str:
        """The query text to run on ``backend`` (its variant file if one exists)."""
        return self.variants.get(backend, self.text)

    def param_summary(self) -> str:
        return ", ".join(p.describe() for p in self.params) or "(none)"

    def bind(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Type ``raw`` (CLI strings or Python values) by the header and apply defaults; QueryError."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise QueryError(f"query {self.name} has no parameter {', '.join(unknown)}; "
                             f"its parameters: {self.param_summary()}")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in raw and raw[p.name] is not None:
                try:
                    out[p.name] = coerce_value(raw[p.name], p.type)
                except ValueError as e:
                    raise QueryError(f"query {self.name}: parameter {p.name} {e}; "
                                     f"its parameters: {self.param_summary()}") from None
            elif p.required:
                raise QueryError(f"query {self.name} needs parameter {p.name} (-p {p.name}=VALUE); "
                                 f"its parameters: {self.param_summary()}")
            else:
                out[p.name] = p.default
        return out


# ---- value typing -----------------------------------------------------------------------
def _element_type(type_: str) -> str | None:
    m = re.fullmatch(r"list<([a-z]+)>", type_)
    return m.group(1) if m else None


def valid_type(type_: str) -> bool:
    return type_ in SCALAR_TYPES or _element_type(type_) in SCALAR_TYPES


def coerce_value(value: Any, type_: str) -> Any:
    """Convert ``value`` (a CLI string or a Python value) to ``type_``; ValueError says why."""
    elem = _element_type(type_)
    if elem is not None:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"must be a {type_} (a JSON list or comma-separated), got {value!r}") from None
                if not isinstance(items, list):
                    raise ValueError(f"must be a {type_}, got {value!r}")
            else:
                items = [x.strip() for x in text.split(",")] if text else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError(f"must be a {type_}, got {value!r}")
        return [coerce_value(x, elem) for x in items]
    if type_ == "string":
        if isinstance(value, str):
            return value
        raise ValueError(f"must be a string, got {value!r}")
    if type_ == "int":
        if isinstance(value, bool):
            raise ValueError(f"must be an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ValueError(f"must be an int, got {value!r}")
    if type_ == "float":
        if isinstance(value, bool):
            raise ValueError(f"must be a float, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                raise ValueError(f"must be a float, got {value!r}") from None
        else:
            raise ValueError(f"must be a float, got {value!r}")
        if not math.isfinite(out):
            raise ValueError(f"must be a finite float, got {value!r}")
        return out
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise ValueError(f"must be a bool (true/false), got {value!r}")
    raise ValueError(f"has an unknown type {type_!r}")


def _parse_default(text: str, type_: str) -> Any:
    if text == "null":
        return None
    if type_ == "string" and len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return coerce_value(text, type_)


def _show_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, str)):
        return json.dumps(value)
    return str(value)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` (repeated ``-p``) -> ``{"k": "v"}``; the value may hold any character."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QueryError(f"parameter {item!r} must look like NAME=VALUE (e.g. -p model=resnet50)")
        if key in out:
            raise QueryError(f"parameter {key} is given twice")
        out[key] = value
    return out


# ---- parsing files --------------------------------------------------------------------------
def _header(text: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("//"):
            break
        body = s[2:].strip()
        key, sep, value = body.partition(":")
        if sep and key.strip() in _HEADER_KEYS:
            entries.append((key.strip(), value.strip()))
        else:
            entries.append(("", body))
    return entries


def _parse_file(path: Path) -> LibraryQuery:
    try:
        text = path.read_text()
    except OSError as e:
        raise QueryError(f"cannot read query file {path}: {e.strerror}") from e
    name = purpose = why = ""
    params: list[Param] = []
    columns: tuple[str, ...] = ()
    notes: list[str] = []
    for key, value in _header(text):
        if key == "name":
            name = value
        elif key == "purpose":
            purpose = value
        elif key == "why":
            why = value
        elif key == "columns":
            columns = tuple(c.strip() for c in value.split(",") if c.strip())
        elif key == "param":
            m = _PARAM_RE.match(value)
            if not m or not valid_type(m["type"]):
                raise QueryError(f"{path.name}: bad header line 'param: {value}' "
                                 "(expected 'param: NAME TYPE [= DEFAULT] [-- help]')")
            default_text = m["default"]
            try:
                default = None if default_text is None else _parse_default(default_text, m["type"])
            except ValueError as e:
                raise QueryError(f"{path.name}: default of parameter {m['name']} {e}") from None
            params.append(Param(name=m["name"], type=m["type"], required=default_text is None,
                                default=default, help=(m["help"] or "").strip()))
        elif value:
            notes.append(value)
    if not _NAME_RE.match(name):
        raise QueryError(f"{path.name}: the header needs '// name: NAME' (lower_snake_case)")
    if not purpose or not columns:
        raise QueryError(f"{path.name}: the header needs '// purpose:' and '// columns:' lines")
    return LibraryQuery(name=name, purpose=purpose, params=tuple(params), columns=columns, text=text, path=path,
                        notes=tuple(notes), why=why)


def _load(directory: Path) -> dict[str, LibraryQuery]:
    if not directory.is_dir():
        raise QueryError(f"the query library {directory} does not exist (set NEURFLOW_CYPHER_DIR)")
    base: dict[str, LibraryQuery] = {}
    variants: dict[str, dict[str, LibraryQuery]] = {}
    for path in sorted(directory.glob("*.cypher")):
        stem = path.name[: -len(".cypher")]
        name, _, backend = stem.partition(".")
        parsed = _parse_file(path)
        if parsed.name != name:
            raise QueryError(f"{path.name}: header names {parsed.name!r}, the file name says {name!r}")
        if backend:
            if backend not in BACKENDS:
                raise QueryError(f"{path.name}: unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")
            if not parsed.why:
                raise QueryError(f"{path.name}: a backend variant must say why it exists ('// why: ...')")
            variants.setdefault(name, {})[backend] = parsed
        else:
            base[name] = parsed
    out: dict[str, LibraryQuery] = {}
    for name, p in base.items():
        texts: dict[str, str] = {}
        for backend, v in variants.pop(name, {}).items():
            if v.params != p.params or v.columns != p.columns:
                raise QueryError(f"{v.path.name}: params and columns must match {p.path.name}")
            texts[backend] = v.text
        out[name] = replace(p, variants=texts)
    if variants:
        orphan = sorted(variants)[0]
        raise QueryError(f"backend variant of {orphan!r} has no portable {orphan}.cypher")
    return out


def list_queries(*, directory: str | os.PathLike[str] | None = None) -> list[LibraryQuery]:
    """Every library query, sorted by name."""
    lib = _load(Path(directory) if directory is not None else default_directory())
    return [lib[k] for k in sorted(lib)]


def get_query(name: str, *, directory: str | os.PathLike[str] | None = None) -> LibraryQuery:
    """The library query ``name``; QueryError listing the available names when there is none."""
    lib = _load(Path(directory) if directory is not None else default_directory())
    if name not in lib:
        raise QueryError(f"unknown query {name!r}; available: {', '.join(sorted(lib))}")
    return lib[name]


def run_query(*, store: GraphStore, name: str, params: Mapping[str, Any] | None = None,
              directory: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Run library query ``name`` read-only with ``params`` (typed by its header); rows keyed by its columns."""
    query = get_query(name, directory=directory)
    return execute(store=store, query=query, params=query.bind(params or {}))


def execute(*, store: GraphStore, query: LibraryQuery, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run an already bound ``query`` read-only after checking its names (:mod:`~neurflow_graph.queries.names`);
    QueryError when its rows do not match its header's columns."""
    from neurflow_graph.queries.names import check_aggregates, check_params, check_paths_limit

    params = check_params(store, params)
    if query.name == "concept_paths_to_logit":
        check_paths_limit(store, params)
    check_aggregates(store, query.name, params)
    rows = run_read(store=store, text=query.text_for(store.backend), params=params)
    if rows and list(rows[0]) != list(query.columns):
        raise QueryError(f"query {query.name} returned columns {', '.join(rows[0])} but its header declares "
                         f"{', '.join(query.columns)}; fix the '// columns:' line of {query.path.name}")
    return rows


_GC_LOCK = threading.Lock()
_gc_pauses = 0           # reads in progress, all threads together
_gc_restore = False      # whether the first of them found the collector enabled


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while any thread is inside the block; the state the first
    entrant found is restored when the last one leaves (also on error).

    A ResNet50-sized answer (class_circuit: ~19k ``[i, j]`` member pairs) is ~100k new lists and
    ints; allocating them triggered several full collections per call, about half of the call's
    time. Decoded rows hold no reference cycles, so nothing waits for the collector meanwhile. The
    count under a lock keeps concurrent reads (the web server's threads) from leaving it off."""
    global _gc_pauses, _gc_restore
    with _GC_LOCK:
        if _gc_pauses == 0:
            _gc_restore = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_restore:
                gc.enable()


def run_read(*, store: GraphStore, text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``store.read`` with any non-project error turned into a one-line QueryError."""
    try:
        with _collector_paused():
            return store.read(text, dict(params))
    except NeurflowError:
        raise
    except Exception as e:  # driver errors: keep the cause attached
        raise QueryError(f"the store rejected the query: {one_line(str(e))}") from e


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
