"""Every store-reading command documented in README.md and docs/*.md runs as written on demo-like data.

The commands are parsed from the markdown (fenced ``bash`` blocks and inline code spans): every
``neurflow-graph query|cypher|export|runs ...`` line. A command holding a placeholder (an upper-case
word such as ``NAME``, ``UID``, ``OUT``, ``PARAM=VALUE``, or ``...``) describes syntax and is left out.
Each one runs through click's CliRunner against an embedded store holding a demo-like run set: the
demo model's name and layers (``demo``: fc, conv4, conv3, conv2), four concept-world classes with
synthetic circuits (neurflow_graph.synthetic: the demo costs a training and extractions, minutes) and
ground-truth concept/purity annotations as the demo writes them (and `debug.spurious` ones on the biased
class, as its debugging step does; their values here are placeholders, nothing is claimed from them). ``--store URL`` in a command is
replaced by that store. It must exit 0 and, unless it writes, shows a query's text or lists the
library, print at least one row: a documented example that answers nothing is a broken example.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurflow_graph.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = {"query", "cypher", "export", "runs"}
DEMO_CLASSES = ("bee", "lemon", "dice", "chessboard")


def _is_placeholder(token: str) -> bool:
    """NAME, UID, OUT, PARAM=VALUE, graphml|json, resnet50@..., …: syntax, not a runnable value."""
    return bool(re.fullmatch(r"[A-Z][A-Z_]+(=[A-Z][A-Z_]+)?", token)) or "..." in token or "…" in token \
        or bool(re.fullmatch(r"\w+\|\w+", token))


def documented_commands() -> list[tuple[str, str]]:
    """(file name, command line) for every documented store command, in file order."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        lines = [ln.strip() for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S)
                 for ln in block.splitlines()]
        lines += re.findall(r"`([^`\n]*neurflow-graph [^`\n]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            line = re.sub(r"^(\$ )?(\.venv/bin/)?", "", line)
            words = line.split()
            if len(words) > 1 and words[0] == "neurflow-graph" and words[1] in SUBCOMMANDS \
                    and (len(words) > 2 or words[1] == "runs"):  # a bare `neurflow-graph cypher` names the command
                if not any(_is_placeholder(t) for t in shlex.split(line, comments=True)):
                    out.append((path.name, line))
    return out


# Documented examples that need what the demo does not make, with the reason (checked to still be documented).
NOT_ON_DEMO_DATA = {
    ("labels.md", "neurflow-graph query groups_by_label -p text=stripes"):
        "needs MLLM labels (`neurflow-graph label`, an API key); the demo labels nothing",
    ("labels.md", 'neurflow-graph query groups_by_label -p text="yellow stripes" -p source=mllm:gpt-4o -p latest=false'):
        "needs MLLM labels from mllm:gpt-4o",
    ("directions.md", "neurflow-graph query layer_completeness -p model=demo -p class=bee"):
        "needs PCA bases from `neurflow-graph directions --store`; the demo computes none",
    ("directions.md", "neurflow-graph query group_directions -p model=demo -p class=bee -p layer=conv4 -p site=post"):
        "needs directions from `neurflow-graph directions --store`; the demo computes none",
}


def _argv(line: str) -> list[str]:
    words = shlex.split(line, comments=True)[1:]
    if ">" in words:  # `... > file`: the test reads the output instead
        words = words[: words.index(">")]
    while "--store" in words:
        i = words.index("--store")
        del words[i: i + 2]
    return words


@pytest.fixture(scope="module")
def demo_like_store(tmp_path_factory):
    from neurflow_graph.annotations import make_annotation
    from neurflow_graph.datasets.concept_world import CLASSES, CLASS_NAMES
    from neurflow_graph.identity import neuron_group_uid
    from neurflow_graph.models.demo import DEMO_LAYERS, DEMO_WIDTHS
    from neurflow_graph.store.annotations import write_annotations
    from neurflow_graph.store.falkor import FalkorStore, stop_server
    from neurflow_graph.store.ingest import ingest_circuit
    from neurflow_graph.synthetic import synthetic_circuit

    d = tmp_path_factory.mktemp("docs")
    store = FalkorStore(d)
    try:
        for name in DEMO_CLASSES:
            index = CLASS_NAMES.index(name)
            c = synthetic_circuit(class_index=index, class_name=name, model_name="demo", weights_sha256="d" * 64,
                                  layers=tuple(DEMO_LAYERS), widths=(len(CLASS_NAMES), *DEMO_WIDTHS[1:]), seed=1)
            uid = ingest_circuit(store=store, circuit=c)
            concepts = CLASSES[index].concepts
            write_annotations(store=store, annotations=[
                make_annotation(target=neuron_group_uid(uid, g.layer, g.id), target_label="NeuronGroup", key=key,
                                value=value, source="ground_truth")
                for i, g in enumerate(c.neuron_groups)
                for key, value in (("concept", concepts[i % len(concepts)]), ("purity", 0.9 - 0.01 * i))])
            if name == "bee":  # the demo debugs its biased class: `debug` annotations on its groups
                write_annotations(store=store, annotations=[
                    make_annotation(target=neuron_group_uid(uid, g.layer, g.id), target_label="NeuronGroup",
                                    key="debug.spurious", value=i == 1, source="debug")
                    for i, g in enumerate(c.neuron_groups)])
        yield store
    finally:
        store.close()
        stop_server(d)


def _invoke(store, argv):
    import neurflow_graph.store.url as url

    class Borrowed:
        def __init__(self, s):
            self._s = s

        def __getattr__(self, name):
            return getattr(self._s, name)

        def close(self):
            pass

    real = url.open_store
    url.open_store = lambda *a, **k: Borrowed(store)
    try:
        return CliRunner().invoke(cli, argv, catch_exceptions=False)
    finally:
        url.open_store = real


def test_the_docs_document_store_commands():
    cmds = documented_commands()
    assert len(cmds) >= 15 and {f for f, _ in cmds} >= {"README.md", "queries.md"}
    assert set(NOT_ON_DEMO_DATA) <= set(cmds), "an exclusion names an example the docs no longer hold"


@pytest.mark.parametrize("source, line", [c for c in documented_commands() if c not in NOT_ON_DEMO_DATA],
                         ids=lambda x: x[:60] if isinstance(x, str) else x)
def test_documented_command_runs_on_demo_data(demo_like_store, tmp_path, monkeypatch, source, line):
    monkeypatch.chdir(tmp_path)
    argv = _argv(line)
    res = _invoke(demo_like_store, argv)
    assert res.exit_code == 0, f"{source}: `{line}` failed:\n{res.output}"
    quiet = {"--write", "--show", "--list", "--help"} & set(argv)
    if not quiet:
        out = res.output.strip()
        assert out and out != "(no rows)" and out != "[]" and not out.startswith("no runs"), \
            f"{source}: `{line}` answers nothing on the demo data:\n{res.output}"
