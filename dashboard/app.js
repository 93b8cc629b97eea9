// The oxiflow dashboard. It fetches the stored documents raw from
// `oxiflow serve` and decodes (format, checksum, invariants), schedules and
// aggregates them with the Rust core compiled to wasm: the page trusts
// nothing the workers would not.
//
// Refreshing is cheap: the page keeps every document with its store version.
// One listing of `pipelines/` (`/v1/keys`, which carries each object's
// version) says what changed; only those documents are fetched again. An
// unchanged refresh is one request, whatever the number of pipelines and
// partitions. The view is recomputed every second from the kept documents
// (lease countdowns, stale holders, readiness); documents are re-listed at
// the chosen interval.
//
// The first load of a big pipeline is a GET per document, which a browser
// spreads over six connections. So that the page shows something at once,
// it asks the service for its view of each pipeline first (one request
// each, computed by the same core) and paints that; the documents replace
// it as soon as they are all decoded here.

/** The core's exports, once loaded. */
let core;

const TOKEN_KEY = "oxiflow-token";
/** Steps with at most this many partitions list their rows; bigger ones on a click. */
const ROWS_SHOWN = 24;
const $ = (id) => document.getElementById(id);

/** Thrown when the service refuses our token. */
class Unauthorized extends Error {}

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? "",
  /** key → {version, json} (a decoded document's JSON text) or {version, problem}. */
  docs: new Map(),
  /** pipeline id → {pipelineJson (or null), partitionsJson, problems}: what the core reads, rebuilt only when its documents change. */
  pipelines: new Map(),
  /** pipeline id → the service's view, painted while the first load of its documents runs. */
  firstViews: new Map(),
  /** the pipelines of the last listing, in order */
  ids: [],
  /** "pipeline/step" whose rows the user opened or closed (overriding the default). */
  toggled: new Set(),
  /** pipelines whose error list the user folded */
  errorsFolded: new Set(),
  timer: 0,
  fetching: false,
  lastFetch: 0,
  refreshes: 0,
};

// ---------- the service ----------

let requests = 0;

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  requests++;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized((await errorOf(r)) || "the service refused the token");
  return r;
}

async function errorOf(r) {
  const text = await r.text();
  try {
    return JSON.parse(text).error?.message ?? text;
  } catch {
    return text;
  }
}

const failed = async (path, r) => new Error(`${path}: HTTP ${r.status}: ${(await errorOf(r)) || r.statusText}`);
const objectPath = (key) => `/v1/objects/${key.split("/").map(encodeURIComponent).join("/")}`;
const versionOf = (v) => (v ? `${v.e_tag ?? ""}|${v.version ?? ""}` : "");

/** The core throws its error as JSON text: `{"error": kind, …fields}`. */
function coreError(e) {
  try {
    const { error, ...fields } = JSON.parse(String(e));
    return `${error}: ${Object.values(fields).join(" · ")}`;
  } catch {
    return String(e);
  }
}

/** What a key is, by the core's key layout: [pipeline id, "pipeline" | "partition"], or null for anything else (history copies). */
function kindOf(key) {
  const parsed = core.parseKey(key);
  if (!parsed) return null;
  const { pipeline, partition } = JSON.parse(parsed);
  return [pipeline, partition === undefined ? "pipeline" : "partition"];
}

/** Fetches and decodes one document; null when it vanished since the listing. */
async function fetchDoc(key, kind, listed) {
  const path = objectPath(key);
  const r = await api(path);
  if (r.status === 404) return null;
  if (!r.ok) throw await failed(path, r);
  const bytes = new Uint8Array(await r.arrayBuffer());
  // The version this body has (it may be newer than the listing's).
  const version = r.headers.has("etag") || r.headers.has("x-oxiflow-generation")
    ? versionOf({ e_tag: r.headers.get("etag"), version: r.headers.get("x-oxiflow-generation") })
    : listed;
  try {
    return { version, json: (kind === "pipeline" ? core.decodePipeline : core.decodePartition)(key, bytes) };
  } catch (e) {
    return { version, problem: coreError(e) };
  }
}

/** When a pipeline's first load fetches at least this many documents, the pipelines not loaded yet are painted from the service's views meanwhile. */
const FIRST_VIEW_FROM = 64;

/** The service's view of a pipeline, painted while its documents load. Best effort: any failure just waits for them. */
async function firstView(id) {
  try {
    const token = state.token;
    const r = await api(`/v1/pipelines/${encodeURIComponent(id)}`);
    if (!r.ok || state.pipelines.has(id) || state.token !== token) return;
    state.firstViews.set(id, await r.json());
    $("login").hidden = true;
    render();
  } catch {
    // the documents will tell
  }
}

/** One listing; a GET of each document that is new or changed; returns what it cost. */
async function refreshDocs() {
  const before = requests;
  const r = await api(`/v1/keys?prefix=${encodeURIComponent(core.pipelinesPrefix())}`);
  if (!r.ok) throw await failed("/v1/keys", r);
  const listed = await r.json();
  const seen = new Set();
  const stale = [];
  for (const item of listed) {
    const key = typeof item === "string" ? item : item.key;
    const kind = kindOf(key);
    if (!kind) continue;
    seen.add(key);
    const version = typeof item === "string" ? "" : versionOf(item.version);
    const kept = state.docs.get(key);
    if (!kept || !version || kept.version !== version) stale.push({ key, kind: kind[1], version });
  }
  const changed = new Set();
  for (const key of state.docs.keys()) {
    if (!seen.has(key)) {
      state.docs.delete(key);
      changed.add(kindOf(key)[0]);
    }
  }
  const ids = [...new Set([...seen].map((k) => kindOf(k)[0]))].sort();
  state.ids = ids;
  // A first load of many documents: the service's view first.
  const unseen = new Map();
  for (const { key } of stale) {
    const id = kindOf(key)[0];
    if (!state.pipelines.has(id)) unseen.set(id, (unseen.get(id) ?? 0) + 1);
  }
  const many = [...unseen.values()].some((n) => n >= FIRST_VIEW_FROM);
  const views = many ? [...unseen.keys()].map(firstView) : [];
  if (views.length) {
    // Painted before the GETs start, which would otherwise hold the connections and the page's thread.
    await Promise.all(views);
    setStatus("loading", `loading ${number(stale.length)} documents…`);
  }
  const fetched = await Promise.all(stale.map(({ key, kind, version }) => fetchDoc(key, kind, version)));
  stale.forEach(({ key }, i) => {
    const old = state.docs.get(key);
    const doc = fetched[i];
    if (doc === null) state.docs.delete(key);
    else state.docs.set(key, doc);
    if (doc?.json !== old?.json || doc?.problem !== old?.problem) changed.add(kindOf(key)[0]);
  });
  for (const id of [...state.pipelines.keys()]) if (!ids.includes(id)) state.pipelines.delete(id);
  for (const id of ids) if (changed.has(id) || !state.pipelines.has(id)) state.pipelines.set(id, collect(id));
  state.firstViews.clear();
  return { requests: requests - before, fetched: stale.length, changed: changed.size };
}

/** A pipeline's kept documents, ready for the core: parsed once per change. */
function collect(id) {
  const problems = [];
  const partitions = [];
  let pipelineJson = null;
  const prefix = `${core.pipelinesPrefix()}${id}/`;
  for (const [key, d] of state.docs) {
    if (!key.startsWith(prefix)) continue;
    if (d.problem) problems.push({ key, error: d.problem });
    else if (kindOf(key)[1] === "pipeline") pipelineJson = d.json;
    else partitions.push(d.json);
  }
  return {
    pipelineJson,
    partitionsJson: `[${partitions.join(",")}]`,
    problems,
  };
}

async function refresh() {
  if (state.fetching) return;
  if (!state.token) {
    askForToken(null);
    setStatus("error", "not signed in");
    return;
  }
  state.fetching = true;
  setStatus("loading", state.lastFetch ? "refreshing…" : "loading…");
  const token = state.token;
  let again = false;
  try {
    const cost = await refreshDocs();
    if (state.token !== token) {
      forget(); // signed out, or in again, meanwhile: what was read belongs to the old token
      again = true;
      return;
    }
    state.lastFetch = Date.now();
    state.refreshes++;
    $("login").hidden = true;
    render();
    const n = state.pipelines.size;
    const s = $("status");
    Object.assign(s.dataset, { refreshes: state.refreshes, requests: cost.requests, fetched: cost.fetched });
    setStatus("ok", `${n} pipeline${n === 1 ? "" : "s"} · updated ${clock(state.lastFetch)} · ${cost.requests} request${cost.requests === 1 ? "" : "s"}, ${cost.fetched} document${cost.fetched === 1 ? "" : "s"} read`);
  } catch (e) {
    if (state.token !== token) {
      again = true; // an answer to the old token; ask again with the new one
      return;
    }
    if (e instanceof Unauthorized) {
      askForToken(state.token ? `The service refused this token (${e.message}).` : null);
      setStatus("error", "not signed in");
    } else {
      const since = state.lastFetch ? `; showing data from ${clock(state.lastFetch)}` : "";
      setStatus("error", `cannot reach the service: ${e.message}${since}`);
    }
  } finally {
    state.fetching = false;
    if (again) refresh();
  }
}

// ---------- rendering helpers ----------

/** `el("td", {class: "x"}, "text", child)`: children are text or nodes. `style` goes through the
 * CSSOM: the page's CSP (`style-src 'self'`) refuses style attributes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  return node;
}

/** A cell that carries its raw value for machines (tests) beside the text for people. */
const field = (tag, name, value, text = value ?? "—", attrs = {}) =>
  el(tag, { "data-field": name, "data-value": value ?? "", ...attrs }, text);

const statusKind = (s) => (typeof s === "string" ? s : Object.keys(s)[0]);
const badge = (kind) => el("span", { class: `badge ${kind}` }, kind);
const number = (n) => Number(n).toLocaleString("en-US");

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  for (; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function span(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 90) return `${s}s`;
  if (s < 90 * 60) return `${Math.round(s / 60)}m`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

const ago = (t, now) => (t == null ? "—" : `${span(now - t)} ago`);
const clock = (t) => new Date(t).toLocaleTimeString();

/** The lease as a person reads it, from the core's lease view at `now`. */
function leaseText(lease, now) {
  if (!lease) return { text: "free", cls: "muted" };
  const who = `${lease.worker_id} · epoch ${lease.epoch}`;
  switch (lease.status.state) {
    case "released":
      return { text: `released by ${lease.worker_id}`, cls: "muted" };
    case "expired":
      return { text: `${who} · expired ${span(now - lease.expires_at)} ago, claimable`, cls: "stale" };
    default:
      if (lease.stale) return { text: `${who} · overdue ${span(now - lease.expires_at)}`, cls: "stale" };
      return { text: `${who} · expires in ${span(lease.expires_at - now)}`, cls: lease.stop_requested ? "stopping" : "held" };
  }
}

const more = (names, count) => `${names.join(", ")}${count > names.length ? ` and ${count - names.length} more` : ""}`;

/** The scheduler's readiness as a person reads it. */
function readinessText(r, now) {
  switch (r.state) {
    case "ready":
      return r.takeover ? "ready: its lease expired, a worker may take over" : "ready to claim";
    case "completed":
      return "completed";
    case "other_run":
      return "not reached by this run yet";
    case "paused":
      return "paused";
    case "failed":
      return `failed for good after ${r.failures} failure${r.failures === 1 ? "" : "s"}: ${r.error}`;
    case "held":
      return `held by ${r.worker_id}, ${r.until > now ? `for ${span(r.until - now)}` : "overdue"}`;
    case "locked":
      return `waits for ${r.worker_id}'s reset to commit${r.until > now ? ` (at most ${span(r.until - now)})` : ""}`;
    case "blocked":
      return `blocked: upstream ${more(r.by, r.count)} failed`;
    case "waiting":
      return `waits on ${more(r.on, r.count)}`;
    case "backoff":
      return `retry ${r.until > now ? `in ${span(r.until - now)}` : "now"} (after ${r.failures} failure${r.failures === 1 ? "" : "s"})`;
    case "missing":
      return "missing: the plan expects it, the store has no document";
    default:
      return r.state;
  }
}

/** The colour class of a partition in the picture. */
function cellClass(p) {
  switch (p.readiness.state) {
    case "held":
      return "running";
    case "backoff":
      return "retrying";
    case "other_run":
    case "locked":
      return "waiting";
    default:
      return p.readiness.state;
  }
}

const LEGEND = [
  ["completed", "completed"], ["running", "running"], ["ready", "ready"], ["waiting", "waiting"],
  ["retrying", "retrying"], ["failed", "failed"], ["blocked", "blocked"], ["paused", "paused"], ["missing", "missing"],
];

// ---------- rendering ----------

/** The core's view at `now` (readiness and lease states depend on the time); while the first load runs, the service's. */
function viewOf(id, loaded, now) {
  if (loaded) return loaded.pipelineJson ? JSON.parse(core.aggregate(loaded.pipelineJson, loaded.partitionsJson, now)) : null;
  return state.firstViews.get(id) ?? null;
}

const NO_DOCUMENTS = { pipelineJson: null, problems: [] };

function render() {
  const now = Date.now();
  const main = $("pipelines");
  const shown = state.ids.filter((id) => state.pipelines.has(id) || state.firstViews.has(id));
  if (shown.length === 0) {
    if (!state.lastFetch) return; // still loading
    main.replaceChildren(el("p", { class: "empty" }, "No pipelines yet. Create one with ", el("code", {}, "oxiflow state create"), "."));
    return;
  }
  // Keep horizontal scroll of the pictures across re-renders.
  const scroll = new Map([...main.querySelectorAll(".picture")].map((p) => [p.closest("[data-pipeline]").dataset.pipeline, p.scrollLeft]));
  main.replaceChildren(...shown.map((id) => renderPipeline(id, state.pipelines.get(id), now)));
  for (const p of main.querySelectorAll(".picture")) p.scrollLeft = scroll.get(p.closest("[data-pipeline]").dataset.pipeline) ?? 0;
}

function renderPipeline(id, loaded, now) {
  const section = el("section", { class: "pipeline", "data-pipeline": id });
  let view;
  const problems = [...(loaded ?? NO_DOCUMENTS).problems];
  try {
    view = viewOf(id, loaded, now);
  } catch (e) {
    problems.push({ key: `${core.pipelinesPrefix()}${id}/`, error: coreError(e) });
  }
  if (!view) {
    section.append(el("h2", {}, id), renderProblems(problems) ?? el("p", { class: "muted" }, "no pipeline document"));
    return section;
  }
  const parts = view.steps.flatMap((s) => s.partitions);
  const total = view.steps.reduce((n, s) => n + s.total, 0);
  const done = view.steps.reduce((n, s) => n + s.completed, 0);
  const stale = parts.filter((p) => p.lease?.stale || p.lease?.status.state === "expired");
  section.append(
    ...[el(
      "div",
      { class: "pipeline-head" },
      el("h2", {}, id),
      field("span", "status", view.status, badge(view.status)),
      el("span", { class: "muted" }, `${view.run_id} · updated `, el("span", { "data-ago": view.updated_at }, ago(view.updated_at, now))),
      view.frontier.length ? el("span", { class: "muted", "data-field": "frontier", "data-value": view.frontier.join(",") }, `· now at ${view.frontier.join(", ")}`) : null,
    ),
    el(
      "div",
      { class: "totals" },
      totalOf("records", "records_processed", view.records_processed, number(view.records_processed)),
      totalOf("failed", "records_failed", view.records_failed, number(view.records_failed)),
      totalOf("bytes", "bytes_processed", view.bytes_processed, bytes(view.bytes_processed)),
      totalOf("errors", "total_errors", view.total_errors, number(view.total_errors)),
      totalOf("partitions done", "partitions_completed", done, `${number(done)} / ${number(total)}`),
    ),
    el("progress", { max: Math.max(total, 1), value: done, "aria-label": "partitions completed" }),
    stale.length
      ? el("p", { class: "stale-note", "data-field": "stale_workers" }, "Stale: ", stale.map((p) => `${p.lease.worker_id} on ${p.partition}`).join(", "),
          " — the holder stopped writing; another worker may take over.")
      : null,
    renderPicture(id, view, now),
    renderSteps(id, view, now),
    renderErrors(view, now),
    renderProblems(problems)].filter(Boolean),
  );
  return section;
}

const totalOf = (label, name, value, text) => el("div", {}, field("strong", name, value, text), el("span", {}, label));

/** Are the rows of this step listed? Small steps by default, big ones when opened. */
function rowsShown(id, step) {
  const byDefault = step.partitions.length <= ROWS_SHOWN;
  return state.toggled.has(`${id}/${step.step_id}`) ? !byDefault : byDefault;
}

function toggleRows(id, stepId) {
  const k = `${id}/${stepId}`;
  if (state.toggled.has(k)) state.toggled.delete(k);
  else state.toggled.add(k);
  render();
  document.querySelector(`[data-pipeline="${CSS.escape(id)}"] tr.step[data-step="${CSS.escape(stepId)}"]`)?.scrollIntoView({ block: "nearest" });
}

// ---------- the picture: steps as columns in dependency order ----------

const BOX_MIN_WIDTH = 150;
const BOX_HEAD = 44;
const BOX_PAD = 8;
const COLUMN_GAP = 64;
const ROW_GAP = 20;

/** Cell size and columns for a grid of n partitions: 1,000 fit in about 300 × 300 px. */
function gridOf(n) {
  const size = n <= 16 ? 18 : n <= 120 ? 12 : 8;
  const gap = n <= 120 ? 2 : 1;
  const cols = n <= 8 ? Math.max(n, 1) : Math.ceil(Math.sqrt(n * 1.2));
  return { size, gap, cols, rows: Math.ceil(Math.max(n, 1) / cols) };
}

/** The partitions a step's picture shows: those found, plus planned shards the store lacks. */
function cellsOf(step, plan) {
  const cells = step.partitions.map((p) => ({ name: p.partition, cls: cellClass(p), readiness: p.readiness }));
  if (plan?.shards && cells.length < plan.shards) {
    const found = new Set(cells.map((c) => c.name));
    for (let i = 0; i < plan.shards; i++) {
      const name = `${step.step_id}@${i}`;
      if (!found.has(name)) cells.push({ name, cls: "missing", readiness: { state: "missing" } });
    }
    cells.sort((a, b) => shardOf(a.name) - shardOf(b.name));
  } else if (!cells.length) {
    cells.push({ name: step.step_id, cls: "missing", readiness: { state: "missing" } });
  }
  return cells;
}

const shardOf = (name) => Number(name.split("@")[1] ?? 0);

/** Each step's column: 0 for steps that wait for nothing, else one past the furthest step it waits for. */
function levels(plans, stepIds) {
  const after = new Map(plans.map((s) => [s.step_id, (s.after ?? []).map((d) => d.step_id)]));
  const level = new Map();
  const visit = (id, depth = 0) => {
    if (level.has(id)) return level.get(id);
    if (depth > stepIds.length) return 0; // a cycle: the core refuses these, draw flat
    const deps = (after.get(id) ?? []).filter((d) => stepIds.includes(d));
    const l = deps.length ? Math.max(...deps.map((d) => visit(d, depth + 1))) + 1 : 0;
    level.set(id, l);
    return l;
  };
  for (const id of stepIds) visit(id);
  // Steps found in the store but not in the plan: a column of their own, last.
  const planned = new Set(plans.map((s) => s.step_id));
  const last = Math.max(0, ...stepIds.filter((s) => planned.has(s)).map((s) => level.get(s))) + 1;
  for (const id of stepIds) if (!planned.has(id)) level.set(id, last);
  return level;
}

/** The plan as the view carries it: `after` as `step` or `step (aligned)`, shards from the partitions. */
function plansOf(view) {
  return view.steps.map((s) => ({
    step_id: s.step_id,
    shards: s.total > 1 || s.partitions.some((p) => p.shard != null) ? s.total : undefined,
    after: s.after.map((a) => (a.endsWith(" (aligned)") ? { step_id: a.slice(0, -10), kind: "aligned" } : { step_id: a, kind: "barrier" })),
  }));
}

function renderPicture(id, view, now) {
  const plans = plansOf(view);
  const planOf = new Map(plans.map((s) => [s.step_id, s]));
  const stepIds = view.steps.map((s) => s.step_id);
  const level = levels(plans, stepIds);
  const frontier = new Set(view.frontier);

  // Lay out: boxes sized by their grids, columns left to right, stacked in plan order.
  const columns = [];
  const boxes = new Map();
  for (const step of view.steps) {
    const cells = cellsOf(step, planOf.get(step.step_id));
    const g = gridOf(cells.length);
    const gridWidth = g.cols * (g.size + g.gap) - g.gap;
    // Wide enough for the grid, and for the name beside the status badge (about 8.5 and 6.5 px a letter).
    const head = Math.min(320, Math.ceil(step.step_id.length * 8.5 + step.status.length * 6.5 + 40));
    const box = { step, cells, g, w: Math.max(BOX_MIN_WIDTH, head, gridWidth + 2 * BOX_PAD), h: BOX_HEAD + g.rows * (g.size + g.gap) - g.gap + 2 * BOX_PAD };
    boxes.set(step.step_id, box);
    (columns[level.get(step.step_id)] ??= []).push(box);
  }
  let x = 0;
  let height = 0;
  for (const column of columns.filter(Boolean)) {
    const width = Math.max(...column.map((b) => b.w));
    let y = 0;
    for (const b of column) {
      Object.assign(b, { x, y, w: width });
      y += b.h + ROW_GAP;
    }
    height = Math.max(height, y - ROW_GAP);
    x += width + COLUMN_GAP;
  }
  const width = x - COLUMN_GAP;

  const lines = svg("svg", { class: "edges", width, height, viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" });
  lines.append(svg("defs"));
  lines.firstChild.append(arrowHead(`arrow-${id}`));
  for (const plan of plans) {
    const to = boxes.get(plan.step_id);
    for (const dep of plan.after ?? []) {
      const from = boxes.get(dep.step_id);
      if (!from || !to) continue;
      const [x1, y1, x2, y2] = [from.x + from.w, from.y + Math.min(from.h / 2, BOX_HEAD), to.x, to.y + Math.min(to.h / 2, BOX_HEAD)];
      const bend = Math.max(24, (x2 - x1) / 2);
      const kind = dep.kind ?? "barrier";
      const done = from.step.completed === from.step.total;
      lines.append(svg("path", {
        d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2 - 2},${y2}`,
        class: `edge ${kind}${done ? " done" : ""}`,
        "data-from": dep.step_id,
        "data-to": plan.step_id,
        "data-kind": kind,
        "marker-end": `url(#arrow-${id})`,
      }));
    }
  }

  const picture = el("div", { class: "picture" });
  const canvas = el("div", { class: "canvas", style: `width:${width}px;height:${height}px` }, lines);
  for (const [stepId, b] of boxes) {
    const step = b.step;
    const open = rowsShown(id, step);
    const waitsOn = (planOf.get(stepId)?.after ?? []).map((d) => d.step_id + (d.kind === "aligned" ? " (aligned)" : ""));
    const grid = el("div", {
      class: "cells",
      style: `grid-template-columns:repeat(${b.g.cols},${b.g.size}px);grid-auto-rows:${b.g.size}px;gap:${b.g.gap}px`,
    });
    // 1,000 cells: plain elements, a title each (what it is, why it waits).
    const frag = document.createDocumentFragment();
    for (const c of b.cells) {
      const cell = document.createElement("i");
      cell.className = c.cls;
      cell.dataset.cell = c.name;
      cell.dataset.state = c.readiness.state;
      cell.title = `${c.name}: ${readinessText(c.readiness, now)}`;
      frag.append(cell);
    }
    grid.append(frag);
    const box = el("div", {
      class: `step-box ${step.status}${frontier.has(stepId) ? " frontier" : ""}${open ? " open" : ""}`,
      style: `left:${b.x}px;top:${b.y}px;width:${b.w}px;height:${b.h}px`,
      "data-step-box": stepId,
      "data-level": level.get(stepId),
      role: "button",
      tabindex: "0",
      "aria-expanded": String(open),
      title: `${stepId}${waitsOn.length ? ` — waits for ${waitsOn.join(", ")}` : ""}. Click to ${open ? "hide" : "list"} its partitions.`,
    },
    el("div", { class: "step-title" }, el("strong", {}, stepId), badge(step.status)),
    el("div", { class: "step-count muted" }, `${number(step.completed)} / ${number(step.total)} done`, step.total > 1 ? ` · ${number(step.total)} shards` : ""),
    grid);
    box.addEventListener("click", () => toggleRows(id, stepId));
    box.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), toggleRows(id, stepId)));
    canvas.append(box);
  }
  picture.append(canvas);
  const legend = el("div", { class: "legend" }, LEGEND.map(([cls, label]) => el("span", {}, el("i", { class: cls }), label)),
    el("span", { class: "muted" }, "— barrier: waits for every partition; ┄ aligned: shard i waits for shard i"));
  return el("figure", { class: "plan", "aria-label": `the steps of ${id} and their dependencies` }, picture, legend);
}

function arrowHead(id) {
  const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  return marker;
}

// ---------- the table ----------

const COLUMNS = ["partition", "status", "readiness", "records", "failed", "bytes", "batch", "bookmark", "lease", "heartbeat", "tries"];

function renderSteps(id, view, now) {
  const head = el("tr", {}, ...COLUMNS.map((h) => el("th", {}, h)));
  const body = el("tbody");
  for (const step of view.steps) {
    const open = rowsShown(id, step);
    const toggle = step.partitions.length > ROWS_SHOWN || state.toggled.has(`${id}/${step.step_id}`)
      ? el("button", { type: "button", class: "rows", "aria-expanded": String(open) }, open ? "hide rows" : `list ${number(step.partitions.length)} rows`)
      : null;
    toggle?.addEventListener("click", () => toggleRows(id, step.step_id));
    const waiting = step.partitions.filter((p) => p.readiness.state === "waiting").length;
    body.append(
      el("tr", { class: "step", "data-step": step.step_id },
        el("th", { scope: "row" }, step.step_id, step.after.length ? el("span", { class: "after muted" }, ` after ${step.after.join(", ")}`) : null),
        el("td", {}, badge(step.status)),
        el("td", { class: "muted" }, waiting ? `${number(waiting)} waiting` : ""),
        field("td", "records_processed", step.records_processed, number(step.records_processed)),
        field("td", "records_failed", step.records_failed, number(step.records_failed)),
        el("td", {}, bytes(step.bytes_processed)),
        el("td", { colspan: 5 }, el("progress", { max: Math.max(step.total, 1), value: step.completed }),
          ` ${number(step.completed)} / ${number(step.total)} done `, toggle)),
    );
    if (!open) continue;
    if (step.partitions.length <= ROWS_SHOWN) {
      for (const p of step.partitions) body.append(renderPartition(p, now));
    } else {
      // Many rows: a list whose rows off screen skip layout (content-visibility), in a box of its own.
      const list = el("div", { class: "row-list", role: "table", "aria-label": `partitions of ${step.step_id}` },
        el("div", { class: "row head", role: "row" }, COLUMNS.map((h) => el("span", { role: "columnheader" }, h))));
      const frag = document.createDocumentFragment();
      for (const p of step.partitions) frag.append(renderPartition(p, now, "div", "span"));
      list.append(frag);
      body.append(el("tr", { class: "row-block" }, el("td", { colspan: COLUMNS.length }, list)));
    }
  }
  return el("table", { class: "steps" }, el("thead", {}, head), body);
}

/** A partition's row: a table row, or (`div`, `span`) a row of a long list. */
function renderPartition(p, now, row = "tr", cell = "td") {
  const kind = p.current_run ? statusKind(p.status) : "pending";
  const lease = leaseText(p.lease, now);
  const failed = p.status.failed;
  const r = p.readiness;
  const roles = row === "tr" ? {} : { role: "row" };
  return el(row, { class: `partition ${row === "tr" ? "" : "row "}${lease.cls === "stale" ? "stale" : ""}`, "data-partition": p.partition, ...roles },
    el(cell, {}, p.partition),
    field(cell, "status", kind, [badge(kind), failed ? el("span", { class: "reason", title: failed.error }, failed.retryable ? " retryable" : " final") : null]),
    el(cell, {
      class: `readiness ${r.state}`,
      "data-field": "readiness",
      "data-value": r.state,
      "data-on": (r.on ?? r.by ?? []).join(","),
      "data-count": r.count ?? "",
    }, readinessText(r, now)),
    field(cell, "records_processed", p.records_processed, number(p.records_processed)),
    field(cell, "records_failed", p.records_failed, number(p.records_failed)),
    field(cell, "bytes_processed", p.bytes_processed, bytes(p.bytes_processed)),
    field(cell, "batch_number", p.batch_number),
    field(cell, "last_processed_id", p.last_processed_id, p.last_processed_id ?? "—", { class: "mono" }),
    el(cell, {
      class: `lease ${lease.cls}`,
      "data-field": "lease",
      "data-worker": p.lease?.worker_id ?? "",
      "data-epoch": p.lease?.epoch ?? "",
      "data-expires-at": p.lease?.expires_at ?? "",
      "data-state": p.lease?.status.state ?? "free",
    }, lease.text),
    el(cell, { "data-ago": p.last_heartbeat ?? "" }, ago(p.last_heartbeat, now)),
    field(cell, "attempts", p.attempts),
  );
}

function renderErrors(view, now) {
  if (!view.recent_errors.length) return null;
  const details = el("details", { class: "errors", open: !state.errorsFolded.has(view.pipeline_id) && "" },
    el("summary", {}, `Recent errors (${view.total_errors} in all)`),
    el("ul", {}, view.recent_errors.map((e) =>
      el("li", { "data-error-partition": e.partition },
        el("span", { "data-ago": e.at, class: "muted" }, ago(e.at, now)), " ",
        el("strong", {}, e.partition), e.worker_id ? ` (${e.worker_id}, batch ${e.batch_number})` : "", ": ",
        el("span", { class: "message" }, e.message), e.retryable ? el("span", { class: "muted" }, " · retryable") : null))));
  details.addEventListener("toggle", () => (details.open ? state.errorsFolded.delete(view.pipeline_id) : state.errorsFolded.add(view.pipeline_id)));
  return details;
}

function renderProblems(problems) {
  if (!problems.length) return null;
  return el("div", { class: "problems", role: "alert" },
    el("strong", {}, "Documents the core refused (left untouched in the store):"),
    el("ul", {}, problems.map((p) => el("li", { "data-problem": p.key }, el("code", {}, p.key), ` — ${p.error}`))));
}

/** Once a second: recompute lease states, readiness and relative times from the kept documents. */
function tick() {
  if ((state.pipelines.size || state.firstViews.size) && !document.hidden && !window.getSelection()?.toString()) render();
}

// ---------- controls ----------

function setStatus(kind, text) {
  const s = $("status");
  s.dataset.state = kind;
  s.textContent = text;
}

function askForToken(reason) {
  $("login-reason").textContent = reason ?? "This service needs its bearer token (OXIFLOW_SERVE_TOKEN or --token-file).";
  $("login").hidden = false;
  $("token").focus();
}

function every() {
  clearInterval(state.timer);
  const ms = Number($("interval").value);
  if (ms > 0) state.timer = setInterval(refresh, ms);
}

function forget() {
  state.docs = new Map();
  state.pipelines = new Map();
  state.firstViews = new Map();
  state.ids = [];
  state.lastFetch = 0;
}

async function main() {
  try {
    core = await import("./pkg/oxiflow_wasm.js");
    await core.default();
  } catch (e) {
    setStatus("error", `cannot load the core (wasm): ${e.message}. Build it with scripts/build-wasm.sh, then rebuild oxiflow.`);
    return;
  }
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = "";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    forget();
    $("pipelines").replaceChildren();
    askForToken(null);
  });
  $("refresh").addEventListener("click", refresh);
  $("interval").addEventListener("change", every);
  document.addEventListener("visibilitychange", () => !document.hidden && refresh());
  setInterval(tick, 1000);
  every();
  await refresh(); // without a token it only asks for one
}

main().catch((e) => setStatus("error", `the dashboard failed to start: ${e}`));
