// neurflow-graph dashboard: every panel is a library query (GET api/queries/NAME?...), or, in a static
// report, the same answer stored in data.js (window.NEURFLOW_DATA). Page state lives in the URL hash:
// #/circuit?run=UID&group=LAYER/GID&t=THRESHOLD, #/classes?model=M&a=A&b=B, #/models?class=C&a=M1&b=M2.
"use strict";

const REPORT = window.NEURFLOW_DATA || null;
const SVG = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------ data
function paramKey(name, params) {
  const keys = Object.keys(params).filter((k) => params[k] !== null && params[k] !== undefined && params[k] !== "").sort();
  return name + "?" + keys.map((k) => k + "=" + String(params[k])).join("&");
}

async function query(name, params) {
  if (REPORT) {
    const hit = REPORT.queries[paramKey(name, params)];
    if (!hit) throw new Error("this static report holds no answer for " + paramKey(name, params));
    return hit;
  }
  const clean = {};
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") clean[k] = String(v);
  const res = await fetch("api/queries/" + encodeURIComponent(name) + "?" + new URLSearchParams(clean));
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

async function layoutOf(run) {
  if (REPORT) {
    const hit = REPORT.layouts[run];
    if (!hit) throw new Error("this static report holds no layout for run " + run);
    return hit;
  }
  const res = await fetch("api/layout?" + new URLSearchParams({ run }));
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

const mosaicUrl = (sha) => "mosaics/" + sha + ".png";

// ------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function table(columns, rows, cells) {
  const head = el("tr", {}, ...columns.map((c) => el("th", {}, c)));
  const body = rows.map((r) => el("tr", {}, ...cells(r).map((c) =>
    typeof c === "number" ? el("td", { class: "num" }, fmt(c)) : el("td", {}, c))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function fmt(x) {
  if (typeof x !== "number") return x === null || x === undefined ? "" : String(x);
  return Number.isInteger(x) ? String(x) : x.toFixed(3);
}

const shortConcept = (c) => (c ? String(c).split(":").pop() : null);

// What a group is called. A label (from an MLLM, a user, ...) is the group's name. A ground-truth concept
// (concept world) is what the group's exemplar patches contain, measured: it is shown marked "gt" with its
// purity, and never as the meaning of the logit group, whose meaning is its class.
function groupName(n, isTop) {
  if (n.label) return n.label;
  if (isTop) return "logit of " + n.class_name;
  if (n.concept) {
    const gt = !n.concept_source || n.concept_source === "ground_truth";
    return gt ? "gt " + shortConcept(n.concept) + (n.purity === null || n.purity === undefined ? "" : " " + fmt(n.purity).slice(0, 4))
      : shortConcept(n.concept);
  }
  return "group " + n.group_id;
}
const sourceTag = (src) => (src ? el("span", { class: "source", "data-source": src }, src === "ground_truth" ? "ground truth" : src) : null);

function hashState() {
  const h = location.hash.replace(/^#\/?/, "");
  const [page, qs] = h.split("?");
  return { page: page || "runs", params: Object.fromEntries(new URLSearchParams(qs || "")) };
}

function setHash(page, params, replace = true) {
  const clean = {};
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") clean[k] = v;
  const h = "#/" + page + (Object.keys(clean).length ? "?" + new URLSearchParams(clean) : "");
  if (replace) history.replaceState(null, "", h); else location.hash = h;
}

function status(text) { document.getElementById("status").textContent = text; }

function fail(main, err) {
  console.error(err);
  main.append(el("p", { class: "error" }, String(err.message || err)));
}

// ------------------------------------------------------------------ page: runs overview
async function pageRuns(main) {
  main.append(el("h1", {}, "Runs"), el("p", { class: "muted" },
    "Latest complete run of every (model, class) in the store (query dashboard_summary). Open a circuit, or compare two classes or two models."));
  const res = await query("dashboard_summary", {});
  const runs = new Map();
  for (const r of res.rows) {
    const k = r.run;
    if (!runs.has(k)) runs.set(k, { model: r.model, model_uid: r.model_uid, class_name: r.class_name, run: r.run, layers: [] });
    runs.get(k).layers.push(r);
  }
  const models = [...new Set([...runs.values()].map((r) => r.model_uid))];
  for (const m of models) {
    const mine = [...runs.values()].filter((r) => r.model_uid === m);
    main.append(el("h2", {}, "Model " + m + " — " + mine.length + " classes"));
    main.append(table(["class", "run", "layers: neurons / semantic groups / neuron groups / group edges", ""], mine, (r) => [
      el("b", {}, r.class_name),
      el("code", {}, r.run),
      r.layers.map((l) => l.layer + ": " + [l.neurons, l.semantic_groups, l.neuron_groups, l.group_edges].join(" / ")).join("   "),
      el("a", { href: "#/circuit?" + new URLSearchParams({ run: r.run }), class: "open-circuit", "data-class": r.class_name }, "circuit →"),
    ]));
    if (mine.length >= 2) {
      main.append(el("p", {}, el("a", { href: "#/classes?" + new URLSearchParams({ model: m, a: mine[0].class_name, b: mine[1].class_name }) },
        "compare two classes of " + m + " →")));
    }
  }
  if (models.length >= 2) {
    const classes = (m) => new Set([...runs.values()].filter((r) => r.model_uid === m).map((r) => r.class_name));
    const common = [...classes(models[0])].filter((c) => classes(models[1]).has(c));
    if (common.length) main.append(el("p", {}, el("a", { href: "#/models?" + new URLSearchParams({ class: common[0], a: models[0], b: models[1] }) },
      "compare one class in two models →")));
  }
  status(runs.size + " runs");
}

// ------------------------------------------------------------------ page: class circuit
function strongestPath(start, parentsOf, visible) {
  // best[n] = max over visible parent edges e of |w_e| * best[parent]; logit groups (no parents) = 1
  const memo = new Map();
  const best = (n) => {
    if (memo.has(n)) return memo.get(n);
    const ps = (parentsOf.get(n) || []).filter(visible);
    let out = { value: ps.length ? 0 : 1, edge: null };
    if (!ps.length && !isLogit(n)) out = { value: 0, edge: null };
    for (const e of ps) {
      const v = Math.abs(e.w) * best(e.parent).value;
      if (v > out.value) out = { value: v, edge: e };
    }
    memo.set(n, out);
    return out;
  };
  const path = { nodes: [start], edges: [] };
  let n = start;
  while (best(n).edge) { const e = best(n).edge; path.edges.push(e); path.nodes.push(e.parent); n = e.parent; }
  return path;
}
let isLogit = () => false;

async function pageCircuit(main, params) {
  if (!params.run) {
    main.append(el("p", {}, "No run chosen: pick one on the ", el("a", { href: "#/" }, "runs page"), "."));
    return;
  }
  // one after the other: the server computes the layout from the circuit_groups answer it has just cached
  const groupsRes = await query("circuit_groups", { run: params.run });
  const lay = await layoutOf(groupsRes.rows.length ? groupsRes.rows[0].run : params.run);
  const first = groupsRes.rows[0];
  if (!first) throw new Error("run " + params.run + " holds no neuron groups");
  const run = first.run;
  const nodes = new Map();
  const edges = [];
  for (const r of groupsRes.rows) {
    const key = r.layer + "/" + r.group_id;
    nodes.set(key, { key, ...r, sha: r.mosaic_sha256 });
    (r.parents || []).forEach((p, i) => edges.push({ child: key, parent: p, w: r.weights[i], childLayer: r.layer,
      evo: (r.evolutions || [])[i] || null, evoSource: (r.evolution_sources || [])[i] || null }));
  }
  const topDepth = Math.min(...[...nodes.values()].map((n) => n.depth));
  isLogit = (k) => nodes.get(k) && nodes.get(k).depth === topDepth;
  const parentsOf = new Map(), childrenOf = new Map();
  for (const e of edges) {
    if (!parentsOf.has(e.child)) parentsOf.set(e.child, []);
    parentsOf.get(e.child).push(e);
    if (!childrenOf.has(e.parent)) childrenOf.set(e.parent, []);
    childrenOf.get(e.parent).push(e);
  }
  const maxAbs = Math.max(0, ...edges.map((e) => Math.abs(e.w)));
  let threshold = Math.max(0, Number(params.t || 0)) || 0;
  let selected = params.group && nodes.has(params.group) ? params.group : null;

  main.append(el("h1", {}, "Circuit of ", el("b", { id: "class-name" }, first.class_name), " ",
    el("span", { class: "muted" }, "model " + first.model + " · run " + run)));
  const count = el("span", { id: "edge-count" });
  const slider = el("input", { type: "range", id: "threshold", min: "0", max: String(maxAbs), step: String(maxAbs / 400 || 0.001), value: String(threshold) });
  const number = el("input", { type: "number", id: "threshold-value", min: "0", step: "any", value: String(threshold), style: "width:90px" });
  main.append(el("div", { class: "controls" },
    el("label", {}, "Hide edges with |W| below", slider, number), count,
    el("span", { class: "muted" }, "Hover a group: its strongest path to the logit. Click: its exemplars and edges."),
    el("span", {}, el("span", { class: "bar", style: "background:var(--pos);width:18px" }), " W > 0   ",
      el("span", { class: "bar", style: "background:var(--neg);width:18px" }), " W < 0")));

  // geometry: layout x (igraph Sugiyama, gaps >= 1) and depth -> pixels
  const XS = 96, YS = 170, NODE = 64, LEFT = 110, TOP = 30;
  const pos = lay.positions;
  const xs = Object.values(pos).map((p) => p[0]);
  const minX = Math.min(...xs), maxX = Math.max(...xs);
  const depths = [...new Set([...nodes.values()].map((n) => n.depth))].sort((a, b) => a - b);
  const px = (k) => LEFT + (pos[k][0] - minX) * XS + NODE / 2;
  const py = (k) => TOP + (nodes.get(k).depth - depths[0]) * YS;
  const width = LEFT + (maxX - minX) * XS + NODE + 40, height = TOP + (depths[depths.length - 1] - depths[0]) * YS + NODE + 50;
  const root = svg("svg", { id: "circuit", width, height, viewBox: `0 0 ${width} ${height}` });
  const edgeLayer = svg("g", { class: "edges" }), nodeLayer = svg("g", { class: "groups" });
  root.append(edgeLayer, nodeLayer);
  for (const d of depths) {
    const n = [...nodes.values()].find((v) => v.depth === d);
    const t = svg("text", { x: 8, y: TOP + (d - depths[0]) * YS + NODE / 2, class: "layer" });
    t.textContent = n.layer;
    root.append(t);
  }
  const edgeEls = [];
  for (const e of [...edges].sort((a, b) => Math.abs(a.w) - Math.abs(b.w))) {
    const line = svg("line", {
      x1: px(e.child), y1: py(e.child), x2: px(e.parent), y2: py(e.parent) + NODE + 16,
      class: "edge " + (e.w >= 0 ? "pos" : "neg"), "stroke-width": (0.6 + 5.4 * Math.abs(e.w) / (maxAbs || 1)).toFixed(2),
      "data-child": e.child, "data-parent": e.parent, "data-w": String(e.w), "data-layer": e.childLayer,
    });
    const title = svg("title");
    title.textContent = `${e.child} → ${e.parent}: W = ${e.w.toFixed(4)}` + (e.evo ? `\nfeature evolution (${e.evoSource}): ${e.evo}` : "");
    line.append(title);
    e.el = line;
    edgeEls.push(line);
    edgeLayer.append(line);
  }
  for (const n of nodes.values()) {
    const g = svg("g", { class: "group", "data-key": n.key, "data-layer": n.layer, "data-gid": String(n.group_id),
      transform: `translate(${px(n.key) - NODE / 2},${py(n.key)})`, tabindex: "0" });
    g.append(svg("rect", { class: "frame", x: -2, y: -2, width: NODE + 4, height: NODE + 4, rx: 3 }));
    if (n.sha) g.append(svg("image", { href: mosaicUrl(n.sha), x: 0, y: 0, width: NODE, height: NODE, preserveAspectRatio: "xMidYMid meet" }));
    const name = groupName(n, n.depth === topDepth);
    const t = svg("text", { x: NODE / 2, y: NODE + 13, "text-anchor": "middle", class: "name" });
    t.textContent = n.group_id + ": " + (name.length > 16 ? name.slice(0, 15) + "…" : name);
    const tt = svg("title");
    tt.textContent = `${n.key} ${name}` + (n.label_source ? ` (${n.label_source})` : "") + (n.caption ? `\n${n.caption}` : "") +
      (n.concept && n.concept_source === "ground_truth" ? `\nground truth in its exemplars: ${n.concept}` +
        (n.purity !== null && n.purity !== undefined ? ` (purity ${fmt(n.purity)})` : "") : "");
    g.append(t, tt);
    g.addEventListener("click", () => select(n.key));
    g.addEventListener("mouseenter", () => highlight(n.key));
    g.addEventListener("mouseleave", () => highlight(null));
    n.el = g;
    nodeLayer.append(g);
  }
  const panel = el("aside", { class: "panel", id: "group-panel" }, el("p", { class: "muted" }, "Click a group to see its exemplars, members and edges."));
  main.append(el("div", { class: "layout" }, el("div", { class: "graph" }, root), panel));

  const visible = (e) => Math.abs(e.w) >= threshold;
  function applyThreshold() {
    let shown = 0;
    for (const e of edges) { const on = visible(e); e.el.classList.toggle("pruned", !on); if (on) shown++; }
    count.textContent = `${shown} of ${edges.length} edges shown`;
    count.dataset.shown = String(shown);
  }
  function highlight(key) {
    root.classList.toggle("hovering", !!key);
    for (const e of edges) e.el.classList.remove("hl");
    for (const n of nodes.values()) n.el.classList.remove("hl");
    if (!key) return;
    const path = strongestPath(key, parentsOf, visible);
    for (const k of path.nodes) nodes.get(k).el.classList.add("hl");
    for (const e of path.edges) e.el.classList.add("hl");
    root.dataset.path = path.nodes.join(" -> ");
  }
  function select(key) {
    selected = key;
    for (const n of nodes.values()) n.el.classList.toggle("selected", n.key === key);
    setHash("circuit", { run, group: key, t: threshold ? String(threshold) : null });
    panel.replaceChildren();
    if (!key) return;
    const n = nodes.get(key);
    const isTop = n.depth === topDepth;
    const name = groupName(n, isTop);
    panel.append(el("h3", {}, `${n.layer} / group ${n.group_id}: `, el("span", { id: "panel-name" }, name)));
    if (n.sha) panel.append(el("img", { class: "exemplars", src: mosaicUrl(n.sha), alt: "exemplar patches of " + key }));
    else panel.append(el("p", { class: "muted" }, "No exemplar mosaic recorded for this run (neurflow-graph exemplars RUN_DIR, then ingest)."));
    const gt = n.concept && (!n.concept_source || n.concept_source === "ground_truth");
    const purity = n.purity === null || n.purity === undefined ? "" : fmt(n.purity);
    const dl = el("dl", {},
      el("dt", {}, "label"), el("dd", { id: "panel-label" }, n.label || "—", " ", sourceTag(n.label_source)),
      el("dt", {}, "caption"), el("dd", { id: "panel-caption" }, n.caption || "—", " ", sourceTag(n.caption_source)),
      ...(n.formation_caption ? [el("dt", {}, "formation"), el("dd", { id: "panel-formation" }, n.formation_caption, " ", sourceTag(n.formation_source))] : []),
      el("dt", {}, gt ? "ground truth" : "concept"),
      el("dd", { id: "panel-concept", "data-concept": n.concept || "", "data-source": n.concept_source || "" },
        n.concept || "—", n.concept ? " " : "", sourceTag(n.concept ? n.concept_source || "ground_truth" : null)),
      el("dt", {}, "purity"), el("dd", { id: "panel-purity" }, purity || "—"),
      el("dt", {}, "members"), el("dd", {}, String(n.n_members)));
    panel.append(dl);
    if (gt) panel.append(el("p", { class: "muted", id: "panel-gt-note" }, isTop
      ? `Ground truth of the concept world: ${purity ? Math.round(100 * n.purity) + "% of " : ""}this logit group's exemplar patches show ${shortConcept(n.concept)}. That is what its exemplars contain, not what the group means: the logit group stands for the class ${n.class_name}.`
      : `Ground truth of the concept world: the concept most over-represented in this group's exemplar patches; purity = the share of its patches that show it.`));
    const memberList = el("dd", { id: "panel-members" }, "…");
    dl.lastChild.replaceWith(memberList);
    query("group_members", { run, layer: n.layer, group: n.group_id }).then((res) => {
      const shown = res.rows.slice(0, 60).map((m) => `${m.neuron}/${m.j}`);
      memberList.textContent = `${res.rows.length} semantic groups (neuron/j): ` + shown.join(", ") + (res.rows.length > 60 ? ", …" : "");
      memberList.dataset.count = String(res.rows.length);
    }).catch((err) => { console.error(err); memberList.textContent = String(err.message || err); });
    const rows = (list, other) => list.slice().sort((a, b) => Math.abs(b.w) - Math.abs(a.w))
      .map((e) => [el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); select(e[other]); } }, e[other]), e.w,
        e.evo ? el("span", { class: "evolution", "data-edge": e.child + ">" + e.parent }, e.evo, " ", sourceTag(e.evoSource)) : ""]);
    const outs = parentsOf.get(key) || [], ins = childrenOf.get(key) || [];
    panel.append(el("h3", {}, `feeds (${outs.length})`), table(["parent group", "W", "feature evolution"], rows(outs, "parent"), (r) => r));
    panel.append(el("h3", {}, `fed by (${ins.length})`), table(["child group", "W", "feature evolution"], rows(ins, "child"), (r) => r));
  }
  const onThreshold = (v) => {
    threshold = Math.max(0, Number(v) || 0);
    slider.value = String(threshold);
    number.value = String(threshold);
    applyThreshold();
    setHash("circuit", { run, group: selected, t: threshold ? String(threshold) : null });
  };
  slider.addEventListener("input", () => onThreshold(slider.value));
  number.addEventListener("change", () => onThreshold(number.value));
  applyThreshold();
  if (selected) select(selected);
  status(`${nodes.size} groups · ${edges.length} edges`);
  root.dataset.ready = "1";
}

// ------------------------------------------------------------------ page: two classes of one model
async function mosaicMap(runs) {
  const out = new Map();
  for (const run of runs) {
    if (!run) continue;
    const res = await query("circuit_groups", { run });
    const top = Math.min(...res.rows.map((r) => r.depth));
    for (const r of res.rows) out.set(run + "|" + r.layer + "/" + r.group_id, { ...r, top: r.depth === top });
  }
  return out;
}

function thumb(map, run, layer, gid) {
  const r = map.get(run + "|" + layer + "/" + gid);
  const sha = r && r.mosaic_sha256;
  return sha ? el("img", { src: mosaicUrl(sha), alt: layer + "/" + gid, title: layer + "/" + gid }) : el("span", { class: "muted" }, "no mosaic");
}

// a group's name on the compare pages, from circuit_groups (label with its source; else ground truth, marked)
function nameCell(map, run, layer, gid) {
  const r = map.get(run + "|" + layer + "/" + gid);
  if (!r) return `${layer}/${gid}`;
  return el("span", { class: "group-name", "data-key": layer + "/" + gid }, `${layer}/${gid} ${groupName(r, r.top)} `,
    r.label ? sourceTag(r.label_source) : null);
}

async function summaryRows() { return (await query("dashboard_summary", {})).rows; }

function picker(label, id, options, value, onchange) {
  const s = el("select", { id }, ...options.map((o) => { const x = el("option", { value: o }, o); if (o === value) x.selected = true; return x; }));
  s.addEventListener("change", () => onchange(s.value));
  return el("label", {}, label, s);
}

async function pageClasses(main, params) {
  const summary = await summaryRows();
  const models = [...new Set(summary.map((r) => r.model_uid))];
  const model = params.model || models[0];
  const classes = [...new Set(summary.filter((r) => r.model_uid === model).map((r) => r.class_name))];
  const a = params.a || classes[0], b = params.b || classes[1];
  if (!model || !a || !b) { main.append(el("p", {}, "The store needs two classes of one model for this page.")); return; }
  setHash("classes", { model, a, b });
  const go = (p) => { setHash("classes", { model, a, b, ...p }, false); };
  main.append(el("h1", {}, `Two classes of ${model}: `, el("b", {}, a), " and ", el("b", {}, b)));
  main.append(el("div", { class: "controls" },
    picker("model", "pick-model", models, model, (v) => go({ model: v, a: null, b: null })),
    picker("class A", "pick-a", classes, a, (v) => go({ a: v })),
    picker("class B", "pick-b", classes, b, (v) => go({ b: v }))));
  const by = await query("shared_neurons_by_layer", { model, class_a: a, class_b: b });
  main.append(el("h2", {}, "Shared neurons per layer (shared_neurons_by_layer)"));
  main.append(table(["layer", "|A|", "|B|", "shared", "Jaccard", ""], by.rows, (r) =>
    [r.layer, r.n_a, r.n_b, r.shared, r.jaccard, el("span", { class: "bar", style: `width:${Math.round(200 * r.jaccard)}px` })]));
  const runA = by.rows.length ? by.rows[0].run_a : null, runB = by.rows.length ? by.rows[0].run_b : null;
  const shared = await query("shared_groups", { model, class_a: a, class_b: b, limit: 50 });
  const mosaics = await mosaicMap([runA, runB]);
  main.append(el("h2", {}, `Shared groups by Jaccard of member neurons (shared_groups), exemplars side by side`));
  main.append(table(["layer", `${a} group`, `${b} group`, "exemplars A | B", "shared", "Jaccard"], shared.rows, (r) => [
    r.layer,
    nameCell(mosaics, runA, r.layer, r.group_a),
    nameCell(mosaics, runB, r.layer, r.group_b),
    el("span", { class: "pair" }, thumb(mosaics, runA, r.layer, r.group_a), thumb(mosaics, runB, r.layer, r.group_b)),
    r.shared, r.jaccard]));
  status(`${shared.rows.length} shared group pairs`);
}

// ------------------------------------------------------------------ page: one class in two models
async function pageModels(main, params) {
  const summary = await summaryRows();
  const models = [...new Set(summary.map((r) => r.model_uid))];
  const ma = params.a || models[0], mb = params.b || models[1] || models[0];
  const classesOf = (m) => new Set(summary.filter((r) => r.model_uid === m).map((r) => r.class_name));
  const common = [...classesOf(ma)].filter((c) => classesOf(mb).has(c));
  const cls = params.class || common[0];
  if (!ma || !cls) { main.append(el("p", {}, "The store needs one class explained in two models for this page.")); return; }
  setHash("models", { class: cls, a: ma, b: mb });
  const go = (p) => setHash("models", { class: cls, a: ma, b: mb, ...p }, false);
  main.append(el("h1", {}, "Class ", el("b", {}, cls), ` in ${ma} and ${mb}`));
  main.append(el("div", { class: "controls" },
    picker("model A", "pick-ma", models, ma, (v) => go({ a: v })),
    picker("model B", "pick-mb", models, mb, (v) => go({ b: v })),
    picker("class", "pick-class", common.length ? common : [cls], cls, (v) => go({ class: v }))));
  const cmp = await query("compare_models", { model_a: ma, model_b: mb, class: cls, limit: 50 });
  const summaryRowsCmp = cmp.rows.filter((r) => r.section === "summary");
  const pairs = cmp.rows.filter((r) => r.section === "pair");
  const runRow = summaryRowsCmp.find((r) => r.metric === "run");
  const mosaics = await mosaicMap(runRow ? [runRow.value_a, runRow.value_b] : []);
  main.append(el("h2", {}, "Circuits side by side (compare_models)"));
  main.append(table(["", ma, mb], summaryRowsCmp, (r) => [r.metric, r.value_a, r.value_b]));
  main.append(el("h2", {}, "Group pairs sharing exemplar patches"));
  main.append(table(["group A", "group B", "exemplars A | B", "shared patches", "Jaccard"], pairs, (r) => [
    nameCell(mosaics, runRow.value_a, r.layer_a, r.group_a), nameCell(mosaics, runRow.value_b, r.layer_b, r.group_b),
    el("span", { class: "pair" }, thumb(mosaics, runRow.value_a, r.layer_a, r.group_a), thumb(mosaics, runRow.value_b, r.layer_b, r.group_b)),
    r.shared, r.jaccard]));
  const cards = el("div", { class: "cards" });
  for (const m of [...new Set([ma, mb])]) {
    const hubs = await query("hub_neurons", { model: m, limit: 10 });
    const poly = await query("polysemantic_neurons", { model: m, limit: 10 });
    cards.append(el("div", {}, el("h3", {}, `Hub neurons of ${m} (hub_neurons)`),
      table(["layer", "neuron", "classes"], hubs.rows, (r) => [r.layer, r.neuron, `${r.n_classes}: ${r.classes.join(", ")}`]),
      el("h3", {}, `Polysemantic neurons of ${m} (polysemantic_neurons)`),
      table(["layer", "neuron", "semantic groups", "classes"], poly.rows, (r) => [r.layer, r.neuron, r.semantic_groups, r.n_classes])));
  }
  main.append(el("h2", {}, "Hub and polysemantic neurons"), cards);
  status(`${pairs.length} group pairs`);
}

// ------------------------------------------------------------------ router
const PAGES = { runs: pageRuns, circuit: pageCircuit, classes: pageClasses, models: pageModels };
let rendered = null;

async function route() {
  const { page, params } = hashState();
  const key = page + "?" + JSON.stringify(params);
  if (rendered === key) return;
  rendered = key;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = document.getElementById("main");
  main.replaceChildren();
  main.dataset.ready = "";
  status("loading…");
  try {
    await (PAGES[page] || pageRuns)(main, params);
  } catch (err) {
    fail(main, err);
    status("");
  }
  rendered = page + "?" + JSON.stringify(hashState().params);  // pages may normalise their own URL
  main.dataset.readyMs = String(Math.round(performance.now()));  // ms since navigation start (bench/dashboard.py)
  main.dataset.ready = "1";
}

window.addEventListener("hashchange", route);
route();
