"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium, on the demo's store.

One store (the demo on bee and lemon), one server and one browser session for the whole module.
Oracles: the library queries themselves (what the store holds) and plain Python over their rows
(thresholds, strongest paths). Screenshots of every page go to ``$NEURFLOW_TEST_ARTIFACTS`` (default
``test-artifacts/browser/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
try:
    import selenium  # noqa: F401
    _selenium = True
except ImportError:  # pragma: no cover - dev extra not installed
    _selenium = False
_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
requires_browser = pytest.mark.skipif(
    bool(_missing) or not _selenium,
    reason=(f"no headless browser: {', '.join(_missing)} missing (as root: apt-get install -y chromium chromium-driver; "
            "`make test` does it)" if _missing else "selenium is not installed (pip install -e '.[dev]')"))
ARTIFACTS = Path(os.environ.get("NEURFLOW_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"))
FAST = {"k": 20, "tau": 8, "ig_steps": 8}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from neurflow_graph.demo import run_demo
    from neurflow_graph.store.falkor import stop_server
    from neurflow_graph.store.url import open_store

    d = tmp_path_factory.mktemp("web")
    # the demo without its debugging step (a minute of masking the pages never show)
    result = run_demo(data_dir=d, per_class=6, classes=["bee", "lemon"], params=FAST, echo=lambda _: None, debug=False)
    store = open_store(f"embedded:{d}")
    try:
        _label_one_layer(store, result, d)
        yield store, result, d
    finally:
        store.close()
        stop_server(d)


LABEL_MODEL = "test-vision-model"


def _label_one_layer(store, result, d) -> None:
    """`neurflow-graph label` on the layer below bee's logit, against the scripted chat-completions server
    on loopback (tests/mllm_server.py): that layer's groups get MLLM labels and captions, their formation
    answers put feature evolution on the FEEDS edges from the layer below; the other layers keep only
    their ground-truth concepts."""
    from mllm_server import MLLMServer

    from neurflow_graph.cli import cli

    rows = _circuit_rows((store, result, d))
    layer = next(r["layer"] for r in rows if r["depth"] == 1)
    mosaics = {}
    for png in (result.run_dirs["bee"] / "exemplars").glob("*.png"):
        data = png.read_bytes()
        mosaics[hashlib.sha256(data).hexdigest()] = data
    with MLLMServer(key="sk-web-test", model=LABEL_MODEL, images=mosaics) as srv:
        res = CliRunner().invoke(cli, ["label", "--store", f"embedded:{d}", "--run", result.run_uids["bee"],
                                       "--layer", layer, "--model-name", LABEL_MODEL, "--base-url", srv.url,
                                       "--timeout", "5"], env={"OPENAI_API_KEY": "sk-web-test"})
    assert res.exit_code == 0, res.output
    assert srv.violations == []


@pytest.fixture(scope="module")
def server(demo):
    from neurflow_graph.web.api import DashboardApi
    from neurflow_graph.web.server import DashboardServer

    srv = DashboardServer(api=DashboardApi(demo[0]), host="127.0.0.1", port=0).start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1500,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        # the console check below must be able to fail: a page's console.error reaches the log
        driver.get("data:text/html,<script>console.error('probe-error')</script>")
        assert any("probe-error" in e["message"] for e in driver.get_log("browser"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str) -> None:
    """Load ``url`` afresh and wait until its page has rendered; then no console errors so far."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "const m = document.getElementById('main'); return m && m.dataset.ready === '1';"))
    _no_console_errors(driver)


def _no_console_errors(driver) -> None:
    bad = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert bad == [], bad


def _shot(driver, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def _circuit_rows(demo, cls: str = "bee"):
    from neurflow_graph.queries.library import run_query

    store, result, _ = demo
    return run_query(store=store, name="class_circuit",
                     params={"model": "demo", "class": cls, "run": result.run_uids[cls]})


def _edges(rows):
    return [(f"{r['layer']}/{r['group_id']}", p, w) for r in rows for p, w in zip(r["parents"], r["weights"])]


def _visible_edges(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#circuit line.edge')].filter(e => getComputedStyle(e).display !== 'none')"
        ".map(e => [e.dataset.child, e.dataset.parent, Number(e.dataset.w)]);")


# ------------------------------------------------------------------ tests
@requires_browser
def test_runs_page_lists_every_run(demo, server, browser):
    _open(browser, server)
    links = browser.execute_script("return [...document.querySelectorAll('a.open-circuit')].map(a => a.dataset.class)")
    assert sorted(links) == sorted(demo[1].run_uids)
    _shot(browser, "runs")


def test_demo_draws_one_picture_per_class(demo):
    from PIL import Image

    result = demo[1]
    assert sorted(result.pictures) == sorted(result.run_uids)
    for path in result.pictures.values():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 500


@requires_browser
def test_circuit_page_draws_what_the_store_holds_per_layer(demo, server, browser):
    rows = _circuit_rows(demo)
    _open(browser, f"{server}#/circuit?run={demo[1].run_uids['bee']}")
    drawn_groups = browser.execute_script(
        "const c = {}; for (const g of document.querySelectorAll('#circuit g.group')) c[g.dataset.layer] = (c[g.dataset.layer] || 0) + 1; return c;")
    drawn_edges = browser.execute_script(
        "const c = {}; for (const e of document.querySelectorAll('#circuit line.edge')) c[e.dataset.layer] = (c[e.dataset.layer] || 0) + 1; return c;")
    want_groups: dict[str, int] = {}
    want_edges: dict[str, int] = {}
    for r in rows:
        want_groups[r["layer"]] = want_groups.get(r["layer"], 0) + 1
        if r["parents"]:
            want_edges[r["layer"]] = want_edges.get(r["layer"], 0) + len(r["parents"])
    assert drawn_groups == want_groups and drawn_edges == want_edges
    assert sorted(map(tuple, _visible_edges(browser))) == sorted(_edges(rows))
    assert len(want_groups) >= 3 and sum(want_edges.values()) > 0


@requires_browser
def test_clicking_a_group_shows_its_exemplars_and_concept(demo, server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = _circuit_rows(demo)
    target = next((r for r in rows if r["depth"] > 0 and r["concept"]), None)
    assert target is not None, "the demo's bee circuit has no group with a ground-truth concept in class_circuit"
    key = f"{target['layer']}/{target['group_id']}"
    _open(browser, f"{server}#/circuit?run={demo[1].run_uids['bee']}")
    browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{key}"]').click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "const i = document.querySelector('#group-panel img.exemplars'); return i && i.complete && i.naturalWidth > 0;"))
    concept = browser.find_element(By.ID, "panel-concept")
    assert concept.get_attribute("data-concept") == target["concept"] and concept.text.startswith(target["concept"])
    assert concept.get_attribute("data-source") == "ground_truth" and "ground truth" in concept.text
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return document.getElementById('panel-members').dataset.count !== undefined"))
    members = browser.find_element(By.ID, "panel-members")
    assert int(members.get_attribute("data-count")) == target["n_members"] == len(target["members"])
    assert all(f"{i}/{j}" in members.text for i, j in target["members"][:10])
    purity = browser.find_element(By.ID, "panel-purity").text
    assert purity == "—" if target["purity"] is None else abs(float(purity) - target["purity"]) < 1e-3
    # every drawn group shows its mosaic
    assert browser.execute_script("return document.querySelectorAll('#circuit g.group image').length") == len(rows)
    assert f"group={key.replace('/', '%2F')}" in browser.current_url
    _no_console_errors(browser)
    _shot(browser, "circuit-bee-group")


@requires_browser
def test_labels_captions_and_feature_evolution_show_with_their_source(demo, server, browser):
    """The MLLM labels written by the fixture (scripted answers naming each mosaic's hash: the oracle)
    show on the nodes and in the panel with their source; the feature evolution of the labelled group's
    incoming edges shows in its panel; unlabelled groups show their ground-truth concept marked "gt"
    with its purity, and the logit group is never called by its ground-truth concept."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from neurflow_graph.queries.library import run_query

    store, result, _ = demo
    run = result.run_uids["bee"]
    rows = run_query(store=store, name="circuit_groups", params={"run": run})
    labelled = [r for r in rows if r["depth"] == 1]
    assert labelled and all(r["label_source"] == f"mllm:{LABEL_MODEL}" for r in labelled)
    _open(browser, f"{server}#/circuit?run={run}")
    names = browser.execute_script(
        "const o = {}; for (const g of document.querySelectorAll('#circuit g.group')) o[g.dataset.key] = g.querySelector('text.name').textContent; return o;")
    for r in rows:
        key, name = f"{r['layer']}/{r['group_id']}", names[f"{r['layer']}/{r['group_id']}"]
        if r["depth"] == 1:
            label = f"tag-{r['mosaic_sha256'][:10]}; smooth edges; warm colours"
            assert r["label"] == label and name == f"{r['group_id']}: {label[:15]}…", name
        elif r["depth"] == 0:
            assert name == f"{r['group_id']}: logit of bee" and r["concept"] and "gt" not in name
        elif r["concept"]:
            assert name.startswith(f"{r['group_id']}: gt "), name
    target = max(labelled, key=lambda r: r["n_members"])
    key = f"{target['layer']}/{target['group_id']}"
    tag = f"tag-{target['mosaic_sha256'][:10]}"
    browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{key}"]').click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "panel-label"))
    assert browser.find_element(By.ID, "panel-label").text == f"{tag}; smooth edges; warm colours mllm:{LABEL_MODEL}"
    assert browser.find_element(By.ID, "panel-caption").text.startswith(f"Mosaic {tag} shows smooth edges")
    assert browser.find_element(By.ID, "panel-formation").text.startswith(f"{tag} forms from curves")
    # feature evolution on the edges from its strongest children (as circuit_groups holds it)
    want = {f"{r['layer']}/{r['group_id']}>{key}": ev for r in rows
            for p, ev in zip(r["parents"], r["evolutions"]) if p == key and ev}
    shown = browser.execute_script(
        "const o = {}; for (const e of document.querySelectorAll('#group-panel .evolution')) o[e.dataset.edge] = e.textContent; return o;")
    assert want and sorted(shown) == sorted(want)
    assert all(shown[k] == f"{want[k]} mllm:{LABEL_MODEL}" for k in want)
    _shot(browser, "circuit-bee-labelled-group")
    # the logit group: its ground truth is shown as what its exemplars contain, not as its meaning
    logit = next(r for r in rows if r["depth"] == 0)
    browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{logit["layer"]}/{logit["group_id"]}"]').click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "panel-gt-note"))
    assert browser.find_element(By.ID, "panel-name").text == "logit of bee"
    note = browser.find_element(By.ID, "panel-gt-note").text
    assert "not what the group means" in note and shortest(logit["concept"]) in note
    _no_console_errors(browser)


def shortest(concept: str) -> str:
    return concept.split(":")[-1]


@requires_browser
def test_threshold_leaves_exactly_the_edges_passing_it_and_the_link_reopens_the_state(demo, server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rows = _circuit_rows(demo)
    edges = _edges(rows)
    weights = sorted(abs(w) for _, _, w in edges)
    t = round(weights[len(weights) // 2], 3)  # about half the edges pass
    _open(browser, f"{server}#/circuit?run={demo[1].run_uids['bee']}")
    key = f"{rows[3]['layer']}/{rows[3]['group_id']}"
    browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{key}"]').click()
    box = browser.find_element(By.ID, "threshold-value")
    box.clear()
    box.send_keys(str(t), Keys.TAB)
    want = sorted((c, p, w) for c, p, w in edges if abs(w) >= t)
    assert 0 < len(want) < len(edges)
    assert sorted(map(tuple, _visible_edges(browser))) == want
    link = browser.current_url
    assert f"t={t}" in link
    _shot(browser, "circuit-bee-threshold")

    _open(browser, link)  # a shared link: same group, same threshold, same edges
    assert sorted(map(tuple, _visible_edges(browser))) == want
    assert browser.find_element(By.ID, "threshold-value").get_attribute("value") == str(t)
    assert browser.execute_script("return document.querySelector('#circuit g.group.selected').dataset.key") == key
    assert key.split("/")[0] in browser.find_element(By.CSS_SELECTOR, "#group-panel h3").text


@requires_browser
def test_hover_highlights_the_strongest_path_to_the_logit(demo, server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    rows = _circuit_rows(demo)
    parents: dict[str, list[tuple[str, float]]] = {}
    for c, p, w in _edges(rows):
        parents.setdefault(c, []).append((p, abs(w)))
    top = min(r["depth"] for r in rows)

    def best(n):  # plain-Python oracle: max over paths to the logit of the product of |W|
        if not parents.get(n):
            return (1.0 if any(f"{r['layer']}/{r['group_id']}" == n and r["depth"] == top for r in rows) else 0.0), [n]
        return max(((w * best(p)[0]), [n, *best(p)[1]]) for p, w in parents[n])

    leaf = max(rows, key=lambda r: (r["depth"], -r["group_id"]))
    key = f"{leaf['layer']}/{leaf['group_id']}"
    _open(browser, f"{server}#/circuit?run={demo[1].run_uids['bee']}")
    ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{key}"]')).perform()
    path = browser.execute_script("return document.getElementById('circuit').dataset.path")
    assert path.split(" -> ") == best(key)[1]
    hl = browser.execute_script("return document.querySelectorAll('#circuit line.edge.hl').length")
    assert hl == len(best(key)[1]) - 1
    _shot(browser, "circuit-bee-hover")


@requires_browser
def test_compare_pages_show_the_library_answers(demo, server, browser):
    from neurflow_graph.queries.library import run_query

    store = demo[0]
    _open(browser, f"{server}#/classes?model=demo&a=bee&b=lemon")
    by_layer = run_query(store=store, name="shared_neurons_by_layer", params={"model": "demo", "class_a": "bee", "class_b": "lemon"})
    cells = browser.execute_script("return [...document.querySelectorAll('table')][0].querySelectorAll('tbody tr').length")
    assert cells == len(by_layer)
    loaded = browser.execute_script("return [...document.querySelectorAll('.pair img')].every(i => i.complete && i.naturalWidth > 0)")
    assert loaded
    # group names come from circuit_groups: bee's MLLM-labelled groups show their label and its source
    bee = {f"{r['layer']}/{r['group_id']}": r for r in run_query(store=store, name="circuit_groups",
                                                                  params={"run": demo[1].run_uids["bee"]})}
    cells = browser.execute_script("return [...document.querySelectorAll('table')][1].querySelectorAll('tbody tr')"
                                   ".length ? [...[...document.querySelectorAll('table')][1].querySelectorAll("
                                   "'tbody tr td:nth-child(2) .group-name')].map(c => [c.dataset.key, c.textContent]) : []")
    shared = run_query(store=store, name="shared_groups", params={"model": "demo", "class_a": "bee", "class_b": "lemon", "limit": 50})
    assert len(cells) == len(shared) > 0
    for key, text in cells:
        if bee[key]["label"]:
            assert bee[key]["label"][:15] in text and text.endswith(f"mllm:{LABEL_MODEL}")
        else:
            assert "mllm:" not in text and (bee[key]["concept"] is None or "gt " in text or "logit of bee" in text)
    _shot(browser, "classes-bee-lemon")
    _open(browser, f"{server}#/models")
    assert "bee" in browser.find_element("css selector", "h1").text or "lemon" in browser.find_element("css selector", "h1").text
    _shot(browser, "models")


@requires_browser
def test_static_report_opens_from_disk(demo, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from neurflow_graph.cli import cli

    store_dir = demo[2]
    out = tmp_path / "site"
    res = CliRunner().invoke(cli, ["report", "--store", f"embedded:{store_dir}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = _circuit_rows(demo)
    _open(browser, (out / "index.html").resolve().as_uri() + f"#/circuit?run={demo[1].run_uids['bee']}")
    n = browser.execute_script("return document.querySelectorAll('#circuit g.group').length")
    assert n == len(rows)
    key = f"{rows[1]['layer']}/{rows[1]['group_id']}"
    browser.find_element(By.CSS_SELECTOR, f'#circuit g.group[data-key="{key}"]').click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "const i = document.querySelector('#group-panel img.exemplars'); return i && i.complete && i.naturalWidth > 0;"))
    _no_console_errors(browser)
    _shot(browser, "report-circuit-bee")
    _open(browser, (out / "index.html").resolve().as_uri() + "#/classes")
    _shot(browser, "report-classes")


# ------------------------------------------------------------------ HTTP API (no browser needed)
def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_api_validates_parameters_like_the_cli(demo, server):
    from neurflow_graph.cli import cli

    status, body = _get(f"{server}api/queries/class_circuit?model=demo&class=bogus")
    cli_res = CliRunner().invoke(cli, ["query", "class_circuit", "--store", f"embedded:{demo[2]}",
                                       "-p", "model=demo", "-p", "class=bogus"])
    assert status == 400 and cli_res.exit_code == 2
    assert cli_res.output.strip() == "Error: " + json.loads(body)["error"]
    status, body = _get(f"{server}api/queries/class_circuit?model=demo&klass=bee")
    assert status == 400 and "klass" in json.loads(body)["error"]
    assert _get(f"{server}api/queries/no_such_query")[0] == 404
    assert _get(f"{server}mosaics/{'0' * 64}.png")[0] == 404
    req = urllib.request.Request(f"{server}api/queries/dashboard_summary", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    status, body = _get(f"{server}api/queries/circuit_groups?run={demo[1].run_uids['bee']}")
    rows = json.loads(body)["rows"]
    assert status == 200 and all(r["mosaic"] is None for r in rows)  # no server paths leave the server
    status, png = _get(f"{server}mosaics/{rows[0]['mosaic_sha256']}.png")
    import hashlib

    assert status == 200 and hashlib.sha256(png).hexdigest() == rows[0]["mosaic_sha256"]


def test_serve_and_report_refuse_bad_input_in_one_line(demo, tmp_path):
    import socket

    from neurflow_graph.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = CliRunner().invoke(cli, ["serve", "--store", f"embedded:{demo[2]}", "--port", str(port)])
    assert res.exit_code == 2 and "cannot listen" in res.output and "Traceback" not in res.output
    afile = tmp_path / "file"
    afile.write_text("x")
    res = CliRunner().invoke(cli, ["report", "--store", f"embedded:{demo[2]}", "--out", str(afile)])
    assert res.exit_code == 2 and "is a file" in res.output
    res = CliRunner().invoke(cli, ["draw", "--store", f"embedded:{demo[2]}", "--run", "zzzz", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "zzzz" in res.output and len(res.output.strip().splitlines()) == 1
