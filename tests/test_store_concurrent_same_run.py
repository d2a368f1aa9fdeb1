"""Concurrent ingests of the same run, on both backends: one writer at a time (the Run node's claim,
docs/graph-model.md "Concurrent ingests of one run"), nothing of a live writer deleted, never a
``complete`` run with less than all of it, and the store of a single ingest at the end.

Two ingests run in two threads with a connection each; hooks only choose the moment (the second
starts after the first's first committed SemanticGroups; the second is held until the first has
completed). A checker reads the store through a third connection after every write either makes
(every commit on Neo4j), so an interleaving that deletes a live writer's nodes or shows a complete
run short of groups is seen every time, not by a lucky poll. The stopped writer is a real process
SIGKILLed in the middle of its ingest. A claim held by another token (taken with the module's
CLAIM_QUERY, beaten from a thread) shows what a waiting ingest reports: the CLI's stderr lines and
the library's ``on_wait`` WaitInfo sequence.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import clear_graph, graph_dump
from neurflow_graph.cli import cli
from neurflow_graph.store import ingest as ing
from neurflow_graph.store.ingest import ingest, ingest_circuit
from neurflow_graph.store.runs import list_runs
from neurflow_graph.synthetic import synthetic_circuit

ROOT = Path(__file__).resolve().parents[1]


def _circuit():
    return synthetic_circuit(class_index=0, class_name="cat", widths=(10, 40, 40, 32), tau=8, k=16)


def _connect(store):
    if store.backend == "falkordb":
        from neurflow_graph.store.falkor import FalkorStore

        return FalkorStore(store.data_dir, graph=store._graph_name)
    from neurflow_graph.store.url import open_store

    return open_store(os.environ["NEO4J_URI"], database=os.environ.get("NEO4J_DATABASE"))


def _url(store) -> list[str]:
    if store.backend == "falkordb":
        return ["--store", f"embedded:{store.data_dir}", "--database", store._graph_name]
    db = os.environ.get("NEO4J_DATABASE")
    return ["--store", os.environ["NEO4J_URI"], *(["--database", db] if db else [])]


def _owned(s, uid: str) -> int:
    return s.read("MATCH (g:SemanticGroup {run: $u}) RETURN count(g) AS c", {"u": uid})[0]["c"]


def _reference(store, circuit):
    ingest_circuit(store=store, circuit=circuit)
    out = graph_dump(store)
    clear_graph(store)
    return out


class _Checker:
    """After every write (Neo4j: every commit), through its own connection: the run's SemanticGroups
    never decrease and a complete run holds all of them."""

    def __init__(self, store, uid: str, want: int, monkeypatch):
        self.obs, self.uid, self.want = _connect(store), uid, want
        self.lock, self.last, self.drops, self.complete_short = threading.Lock(), 0, [], []
        if store.backend == "falkordb":
            from neurflow_graph.store.falkor import FalkorStore

            self._wrap(monkeypatch, FalkorStore, "write")
        else:
            from neurflow_graph.store import neo4j_store

            self._wrap(monkeypatch, neo4j_store.Neo4jStore, "write")
            self._wrap(monkeypatch, neo4j_store.BulkWriter, "commit")

    def _wrap(self, monkeypatch, cls, name):
        plain = getattr(cls, name)

        def hooked(this, *a, **k):
            out = plain(this, *a, **k)
            if this is not self.obs:
                self.check()
            return out

        monkeypatch.setattr(cls, name, hooked)

    def check(self):
        with self.lock:
            st = self.obs.read("MATCH (r:Run {uid: $u}) RETURN r.status AS s", {"u": self.uid})
            n = _owned(self.obs, self.uid)
            if n < self.last:
                self.drops.append((self.last, n))
            self.last = n
            if st and st[0]["s"] == "complete" and n != self.want:
                self.complete_short.append(n)

    def close(self):
        self.obs.close()


def _setup(store):
    """The circuit, the store a single ingest of it makes (then emptied), its run uid and group count."""
    circuit = _circuit()
    expected = _reference(store, circuit)
    want = len({(n.layer, n.index, g.id) for n in circuit.neurons for g in n.semantic_groups})
    return circuit, expected, ing.run_uid(circuit), want


def _run_both(store, circuit, hold_first, hold_second, a_done=None, **kw):
    """Ingest ``circuit`` (``kw``: ingest's options) in thread A (``store``), then, once ``hold_first``
    is set, in thread B (a second connection); ``a_done`` is set when A ends; returns results, errors."""
    other = _connect(store)
    results, errors = {}, {}

    def run(name, s):
        try:
            results[name] = ingest(store=s, circuit=circuit, **kw)
        except BaseException as e:  # reported by the caller
            errors[name] = e
        finally:
            if name == "A" and a_done is not None:
                a_done.set()

    a = threading.Thread(target=run, args=("A", store), name="A")
    b = threading.Thread(target=run, args=("B", other), name="B")
    try:
        a.start()
        assert hold_first.wait(120)
        b.start()
        a.join(300)
        b.join(300)
    finally:
        hold_second.set()
        other.close()
    return results, errors


def test_a_second_ingest_started_after_the_first_committed_groups_waits_and_deletes_nothing(store, monkeypatch):
    circuit, expected, uid, want = _setup(store)
    a_wrote, b_waits = threading.Event(), threading.Event()
    write_ids, await_other = ing._write_ids, ing._await_other_ingest
    waited = []

    def a_pauses_after_its_groups(s, query, rows, batch_size, **kw):
        out = write_ids(s, query, rows, batch_size, **kw)
        if threading.current_thread().name == "A" and "CREATE (s:SemanticGroup" in query and not a_wrote.is_set():
            if hasattr(w := getattr(s, "_w", s), "commit"):
                w.commit()  # Neo4j: its groups committed, visible to B
            a_wrote.set()
            assert b_waits.wait(60)  # A goes on only once B is waiting for it
        return out

    def b_signals(*a, **k):
        waited.append(threading.current_thread().name)
        b_waits.set()
        return await_other(*a, **k)

    monkeypatch.setattr(ing, "_write_ids", a_pauses_after_its_groups)
    monkeypatch.setattr(ing, "_await_other_ingest", b_signals)
    checker = _Checker(store, uid, want, monkeypatch)
    try:
        results, errors = _run_both(store, circuit, a_wrote, b_waits)
    finally:
        checker.close()
    assert checker.drops == [] and checker.complete_short == []  # nothing of the live writer deleted
    assert errors == {}
    assert checker.last == want
    assert waited == ["B"]
    assert (results["A"].concurrent, results["B"].concurrent, results["B"].skipped) == (False, True, True)
    assert "written by another ingest at the same time, which completed it" in results["B"].summary()
    assert graph_dump(store) == expected  # no writer/beat left on the complete run either


def test_a_second_ingest_held_until_the_first_completed_leaves_the_complete_run_alone(store, monkeypatch):
    circuit, expected, uid, want = _setup(store)
    a_in_create, a_done = threading.Event(), threading.Event()
    rows_of, create_all = ing.circuit_rows, ing._create_all

    def b_rows_late(*a, **k):
        out = rows_of(*a, **k)
        if threading.current_thread().name == "B":
            assert a_done.wait(120)  # B read the run as 'ingesting'; A completes it while B builds rows
        return out

    def a_enters(s, rows, bs):
        if threading.current_thread().name == "A":
            a_in_create.set()
        return create_all(s, rows, bs)

    monkeypatch.setattr(ing, "circuit_rows", b_rows_late)
    monkeypatch.setattr(ing, "_create_all", a_enters)
    checker = _Checker(store, uid, want, monkeypatch)
    try:
        results, errors = _run_both(store, circuit, a_in_create, a_done, a_done=a_done)
    finally:
        checker.close()
    assert checker.complete_short == [] and checker.drops == []  # never a complete run short of groups
    assert errors == {}
    assert results["B"].concurrent and not results["A"].skipped
    assert graph_dump(store) == expected


def test_a_slow_writer_is_waited_for_not_taken_over(store, monkeypatch):
    """AWAIT_SECONDS = 1 and the writer sleeps 0.4 s per CONTRIBUTES chunk (many small chunks, several
    seconds in all, longer than AWAIT_SECONDS without a change in any group count): its heartbeat keeps
    the waiter waiting, and the waiter returns once the run is complete."""
    circuit = _circuit()
    expected = _reference(store, circuit)
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 1.0)
    started, sleeps = threading.Event(), []
    plain = ing._nested_batches

    def slow(rows, key, size):
        for chunk in plain(rows, key, size):
            if key == "c" and threading.current_thread().name == "A":
                started.set()
                sleeps.append(1)
                threading.Event().wait(0.4)
            yield chunk

    monkeypatch.setattr(ing, "_nested_batches", slow)
    results, errors = _run_both(store, circuit, started, threading.Event(), batch_size=60)
    assert errors == {}
    assert len(sleeps) * 0.4 > 3 * ing.AWAIT_SECONDS  # the writer took several stale thresholds
    assert results["B"].concurrent and not results["A"].took_over and not results["A"].skipped
    assert graph_dump(store) == expected


CHILD = textwrap.dedent("""
    import signal, sys, time
    from neurflow_graph.store import ingest as ing
    from neurflow_graph.store.url import open_store
    from neurflow_graph.circuit import load_circuit

    url, database, run_dir = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    store = open_store(url, database=database)
    write_ids = ing._write_ids

    def stop_after_groups(s, query, rows, batch_size, **kw):
        out = write_ids(s, query, rows, batch_size, **kw)
        if "CREATE (s:SemanticGroup" in query:
            if hasattr(w := getattr(s, "_w", s), "commit"):
                w.commit()  # Neo4j: its groups committed
            print("GROUPS WRITTEN", flush=True)
            time.sleep(600)  # the parent SIGKILLs this process here
        return out

    ing._write_ids = stop_after_groups
    ing.ingest(store=store, circuit=load_circuit(run_dir))
""")


def test_a_killed_writer_s_claim_goes_stale_and_the_next_ingest_takes_the_run_over(store, tmp_path, monkeypatch):
    circuit = _circuit()
    expected = _reference(store, circuit)
    uid = ing.run_uid(circuit)
    circuit.save(tmp_path / "cat")
    url = _url(store)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url[1], url[3] if len(url) > 3 else "",
                              str(tmp_path / "cat")], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "GROUPS WRITTEN"
        child.send_signal(signal.SIGKILL)  # a real writer, killed mid-run with its claim held
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    left = store.read("MATCH (r:Run {uid: $u}) RETURN r.status AS s, r.writer AS w", {"u": uid})
    assert left[0]["s"] == "ingesting" and left[0]["w"] is not None and _owned(store, uid) > 0
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 2.0)  # the claim goes stale 2 s after the kill
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "cat"), *url])
    assert r.exit_code == 0, r.output
    assert "taken over from another ingest of it that had stopped (no heartbeat for 2 s)" in r.output
    store.write("MATCH (r:Run {uid: $u}) REMOVE r.run_dir", {"u": uid})  # the reference had none
    assert graph_dump(store) == expected
    assert [(x.class_name, x.status) for x in list_runs(store=store)] == [("cat", "complete")]


class _Beater:
    """Beats run ``uid``'s claim of token ``writer`` every ``every`` s through a connection of its own, with
    the module's BEAT_QUERY, as a live holder does, until :meth:`stop` (``beats``: how many were sent)."""

    def __init__(self, store, uid: str, writer: str, every: float):
        self.conn, self.uid, self.writer, self.every = _connect(store), uid, writer, every
        self.stopped, self.beats, self.errors = threading.Event(), 0, []
        self.thread = threading.Thread(target=self._run, name="beater", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stopped.wait(self.every):
                self.conn.write(ing.BEAT_QUERY, {"rows": [{"uid": self.uid, "writer": self.writer}]})
                self.beats += 1
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def stop(self):
        self.stopped.set()
        self.thread.join(60)
        self.conn.close()


WAIT_LINE = re.compile(r"^waiting for another ingest of run (\w+) \(its heartbeat is (\d+) s old\): this one goes "
                       r"on when that one completes the run, or takes it over once that one sends no heartbeat "
                       r"for (\d+) s$")


def _waited(line: str) -> int:
    m = re.search(r"\(after (\d+) s of waiting\)$", line)
    assert m, line
    return int(m.group(1))


def test_the_cli_of_a_waiting_ingest_says_it_waits_then_prints_one_summary_line(store, tmp_path, monkeypatch):
    """A real ingest (thread A) holds the claim, paused after its groups while its token is beaten for
    longer than the stale threshold; the CLI's ingest of the same run says on stderr that it waits and
    that the other one completed it, and prints only the summary line on stdout."""
    circuit = _circuit()
    expected = _reference(store, circuit)
    uid = ing.run_uid(circuit)
    circuit.save(tmp_path / "cat")
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 2.0)
    a_wrote, b_waits, a_goes_on = threading.Event(), threading.Event(), threading.Event()
    write_ids, await_other = ing._write_ids, ing._await_other_ingest
    hold = 3 * ing.AWAIT_SECONDS  # A is held this long once B waits, beaten by another thread meanwhile

    def a_pauses(s, query, rows, batch_size, **kw):
        out = write_ids(s, query, rows, batch_size, **kw)
        if threading.current_thread().name == "A" and "CREATE (s:SemanticGroup" in query and not a_wrote.is_set():
            if hasattr(w := getattr(s, "_w", s), "commit"):
                w.commit()  # Neo4j: an open transaction holds the Run (its heartbeat): a claimant waits for it
            a_wrote.set()
            assert a_goes_on.wait(120)
        return out

    monkeypatch.setattr(ing, "_write_ids", a_pauses)
    monkeypatch.setattr(ing, "_await_other_ingest", lambda *a, **k: b_waits.set() or await_other(*a, **k))
    errors, beater = [], None

    def a():
        try:
            ingest(store=store, circuit=circuit)
        except BaseException as e:  # reported below
            errors.append(e)

    def release_a():
        if b_waits.wait(120):
            threading.Event().wait(hold)
        a_goes_on.set()

    t = threading.Thread(target=a, name="A")
    t.start()
    try:
        assert a_wrote.wait(120)
        [token] = [r["w"] for r in store.read("MATCH (r:Run {uid: $u}) RETURN r.writer AS w", {"u": uid})]
        beater = _Beater(store, uid, token, every=0.25)  # A's claim stays live while A is paused
        threading.Thread(target=release_a, name="release", daemon=True).start()
        r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "cat"), *_url(store)])
    finally:
        a_goes_on.set()
        t.join(300)
        if beater is not None:
            beater.stop()
    assert errors == [] and beater.errors == []
    assert r.exit_code == 0, r.output
    out = r.stdout.strip().splitlines()
    assert len(out) == 1 and "written by another ingest at the same time, which completed it" in out[0], r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 2, r.stderr
    m = WAIT_LINE.match(err[0])
    assert m, err[0]
    assert m.group(1) == uid and int(m.group(2)) <= 2 and m.group(3) == "2"
    assert err[1].startswith(f"run {uid}: the other ingest completed it (after "), err[1]
    assert _waited(err[1]) >= hold - 1  # it waited past the stale threshold: the beats kept it waiting
    assert beater.beats >= hold / 0.25 / 2
    store.write("MATCH (r:Run {uid: $u}) REMOVE r.run_dir", {"u": uid})  # the reference had none
    assert graph_dump(store) == expected


@pytest.mark.parametrize("end", ["stale", "released"])
def test_a_claim_held_then_dropped_is_waited_for_then_taken_over_with_a_line_for_each(store, tmp_path,
                                                                                    monkeypatch, end):
    """A second writer token takes the claim with the module's CLAIM_QUERY and beats it for twice the
    stale threshold, then stops (``stale``: the threshold passes) or releases it (``released``, as a
    failing holder does); the CLI's ingest waits all that time, says why, then writes the run itself."""
    circuit = _circuit()
    expected = _reference(store, circuit)
    uid = ing.run_uid(circuit)
    circuit.save(tmp_path / "cat")
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 1.0)
    holder, conn = ing._Claim(uid), _connect(store)
    try:
        assert holder.take(conn, ing.circuit_rows(circuit).run["created_at"]) is True  # Run node created, claimed
    finally:
        conn.close()
    hold = 2 * ing.AWAIT_SECONDS
    beater = _Beater(store, uid, holder.writer, every=0.2)

    def drop():
        threading.Event().wait(hold)
        beater.stop()
        if end == "released":
            c = _connect(store)
            holder.release(c)
            c.close()

    dropper = threading.Thread(target=drop, name="drop", daemon=True)
    dropper.start()
    try:
        r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "cat"), *_url(store)])
    finally:
        dropper.join(60)
    assert beater.errors == []
    assert r.exit_code == 0, r.output
    out = r.stdout.strip().splitlines()
    assert len(out) == 1 and "taken over from another ingest of it that had stopped (no heartbeat for 1 s)" in out[0], \
        r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 2, r.stderr
    m = WAIT_LINE.match(err[0])
    assert m and m.group(1) == uid and m.group(3) == "1", err[0]
    if end == "stale":
        assert err[1].startswith(f"run {uid}: the other ingest sent no heartbeat for 1 s (it stopped); taking it "
                                 "over (after "), err[1]
        assert _waited(err[1]) >= hold + ing.AWAIT_SECONDS - 1
    else:
        assert err[1].startswith(f"run {uid}: the other ingest gave it up (it failed); taking it over (after "), err[1]
        assert _waited(err[1]) >= hold - 1
    store.write("MATCH (r:Run {uid: $u}) REMOVE r.run_dir", {"u": uid})
    assert graph_dump(store) == expected


def test_on_wait_reports_start_at_most_every_wait_report_seconds_and_end(store, monkeypatch):
    """The library's callback gets plain WaitInfo data: ``started`` once, ``waiting`` no more often than
    WAIT_REPORT_SECONDS, heartbeat ages in seconds within the threshold while the holder beats, then
    ``stale``; an ingest that does not wait reports nothing."""
    circuit = _circuit()
    expected = _reference(store, circuit)
    uid = ing.run_uid(circuit)
    monkeypatch.setattr(ing, "AWAIT_SECONDS", 1.0)
    monkeypatch.setattr(ing, "WAIT_REPORT_SECONDS", 0.5)
    holder, conn = ing._Claim(uid), _connect(store)
    try:
        assert holder.take(conn, ing.circuit_rows(circuit).run["created_at"]) is True
    finally:
        conn.close()
    beater = _Beater(store, uid, holder.writer, every=0.2)
    stopper = threading.Timer(2.5, beater.stop)
    stopper.start()
    infos = []
    try:
        res = ingest(store=store, circuit=circuit, on_wait=infos.append)
    finally:
        stopper.join(60)
    assert beater.errors == [] and res.took_over and not res.skipped
    assert graph_dump(store) == expected
    states = [i.state for i in infos]
    assert states[0] == "started" and states[-1] == "stale" and set(states[1:-1]) == {"waiting"}, states
    assert len(states) >= 4, states  # 2.5 s of beats + 1 s of silence, reported every 0.5 s at most
    assert all(isinstance(i, ing.WaitInfo) and i.run_uid == uid and i.stale_after_s == 1.0 for i in infos)
    assert [i.ended for i in infos] == [False] * (len(infos) - 1) + [True]
    gaps = [b.waited_s - a.waited_s for a, b in zip(infos, infos[1:-1])]
    assert all(g >= 0.5 for g in gaps), gaps  # "waiting" no more often than WAIT_REPORT_SECONDS
    assert infos[-1].waited_s >= 2.5
    assert all(0 <= i.heartbeat_age_s <= 1.0 for i in infos[:-1]), infos  # seconds, not ms: a beaten claim
    assert infos[-1].heartbeat_age_s > 1.0
    again = []
    assert ingest(store=store, circuit=circuit, on_wait=again.append).skipped and again == []  # no wait: no report


def test_deletes_and_completes_need_the_claim(store):
    """A writer whose claim was taken (the state a taker leaves) deletes nothing and cannot complete."""
    circuit = _circuit()
    ingest_circuit(store=store, circuit=circuit)
    uid = ing.run_uid(circuit)
    n = _owned(store, uid)
    store.write("MATCH (r:Run {uid: $u}) SET r.status = 'ingesting', r.writer = 'someone-else', r.beat = timestamp()",
                {"u": uid})
    mine = ing._Claim(uid)
    assert mine.take(store, "x") is None  # held by a live writer
    with pytest.raises(ing._ClaimLost):
        ing._delete_remains(store, uid, mine)
    assert _owned(store, uid) == n
    assert store.write(ing.COMPLETE_QUERY, {"rows": [{"uid": uid, "writer": mine.writer, "aggregates": 1,
                                                      **{k: 0 for k in ing.COUNT_KEYS}}]})[0]["mine"] is False
    assert store.read("MATCH (r:Run {uid: $u}) RETURN r.status AS s", {"u": uid}) == [{"s": "ingesting"}]
