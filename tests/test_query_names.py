"""Name checking (queries/names.py) on a real store: ambiguous run prefixes and model names."""

from __future__ import annotations

import pytest

from neurflow_graph.identity import run_uid
from neurflow_graph.queries.library import run_query
from neurflow_graph.queries.names import UnknownNameError, resolve_model, resolve_run, suggest
from neurflow_graph.store.ingest import ingest_circuit
from neurflow_graph.synthetic import synthetic_circuit

WEIGHTS = ("a" * 64, "b" * 64)


def _tiny(i: int):
    """Circuit i of class c1, with weight set WEIGHTS[i % 2]: the same model name, two weight sets."""
    return synthetic_circuit(class_index=1, class_name="c1", widths=(3, 5, 5), layers=("fc", "b2", "b1"),
                             seed=i, weights_sha256=WEIGHTS[i % 2])


def _clashing_pair() -> tuple[int, int]:
    """Two circuits, one per weight set, whose run uids share their first hex digit (found without a store)."""
    seen: dict[tuple[int, str], int] = {}
    for i in range(64):
        digit = run_uid(_tiny(i))[0]
        other = seen.get((1 - i % 2, digit))
        if other is not None:
            return other, i
        seen.setdefault((i % 2, digit), i)
    raise AssertionError("no two circuits share a first digit")


def test_ambiguous_run_prefixes_and_model_names_are_errors_listing_the_candidates(store):
    uids = sorted(ingest_circuit(store=store, circuit=_tiny(i)) for i in _clashing_pair())
    prefix = uids[0][0]
    with pytest.raises(UnknownNameError, match=f"run prefix '{prefix}' matches 2 runs") as e:
        resolve_run(store, prefix)
    assert all(u in str(e.value) for u in uids) and "\n" not in str(e.value)
    for u in uids:
        assert resolve_run(store, u[:12]) == u == resolve_run(store, u)
    with pytest.raises(UnknownNameError, match="no run 'xyz'"):
        resolve_run(store, "xyz")
    # one model name, two weight sets: the name is ambiguous, the uids are not
    with pytest.raises(UnknownNameError, match="names 2 weight sets: synthnet@a{16}, synthnet@b{16}"):
        run_query(store=store, name="class_circuit", params={"model": "synthnet", "class": "c1"})
    for w in WEIGHTS:
        muid = f"synthnet@{w[:16]}"
        assert resolve_model(store, muid) == muid
        rows = run_query(store=store, name="class_circuit", params={"model": muid, "class": "1"})
        runs = {r["run"] for r in rows}
        assert len(runs) == 1 and runs <= set(uids)


def test_suggest_offers_close_matches_or_the_valid_values():
    assert suggest("Bee", ["bee", "cat"]) == "did you mean 'bee'?"
    assert suggest("mymodel", ["mymodel:build", "other"]) == "did you mean 'mymodel:build'?"
    assert suggest("zzz", ["bee", "cat"]) == "valid: bee, cat"
    assert suggest("x", []) == "there are none"
