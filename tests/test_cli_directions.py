"""`neurflow-graph directions` end to end with CliRunner: files, figures, the store, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from directions_support import one_thread, world_images

from neurflow_graph.cli import cli

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
MODEL = "directions_support:build_planted"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world_images(tmp_path_factory.mktemp("world") / "w", per_class=1, size=32)


def test_directions_command_writes_results_and_store(images: Path, tmp_path: Path, embedded_dir: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["directions", "--model", MODEL, "--images", str(images), "--layers",
                                   "planted,block,pool", "--samples", "3000", "--eval-images", "6", "--out", str(out),
                                   "--store", f"embedded:{embedded_dir}", "--exemplars", "2"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "directions.json").read_text())
    assert d["format"] == "neurflow-directions" and d["n_images"] == 8
    sites = {(s["layer"], s["site"]) for s in d["sites"]}
    assert sites == {("planted", "pre"), ("planted", "post"), ("block", "pre"), ("block", "post"), ("pool", "out")}
    assert (out / "components.npz").is_file()
    for layer in ("planted", "block", "pool"):
        assert (out / f"completeness1-{layer}.png").stat().st_size > 1000
        assert (out / f"completeness2-{layer}.png").stat().st_size > 1000
    assert "80%: PCA" in res.output and "stored in" in res.output
    from neurflow_graph.store.falkor import FalkorStore

    with FalkorStore(embedded_dir) as s:
        n = s.read("MATCH (b:PCABasis) RETURN count(b) AS n")[0]["n"]
    assert n == 5


@pytest.mark.parametrize("args, message", [
    (["--layers", "plantd"], "close names: planted"),
    (["--layers", "pool", "--site", "pre"], "has no 'pre' site"),
    (["--layers", "planted", "--samples", "1"], "--samples"),
])
def test_bad_input_is_one_line_exit_2(images: Path, tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["directions", "--model", MODEL, "--images", str(images), "--out",
                                   str(tmp_path / "o"), "--eval-images", "0", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_missing_image_folder(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["directions", "--model", MODEL, "--images", str(tmp_path / "nope"), "--layers",
                                   "planted", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output
