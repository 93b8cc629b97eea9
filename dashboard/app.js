// The oxiflow dashboard. It fetches the stored documents raw from
// `oxiflow serve` and decodes (format, checksum, invariants) and aggregates
// them with the Rust core compiled to wasm: the page trusts nothing the
// workers would not. The view is recomputed every second from the cached
// documents (lease countdowns, stale holders); the documents are re-fetched
// at the chosen interval.

/** The core's exports, once loaded. */
let core;

const TOKEN_KEY = "oxiflow-token";
const $ = (id) => document.getElementById(id);

/** Thrown when the service refuses our token. */
class Unauthorized extends Error {}

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? "",
  /** pipeline id → {pipeline, partitions, problems} (decoded documents) */
  loaded: new Map(),
  /** pipelines whose error list the user folded */
  errorsFolded: new Set(),
  timer: 0,
  fetching: false,
  lastFetch: 0,
};

// ---------- the service ----------

async function api(path, as = "json") {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized((await errorOf(r)) || "the service refused the token");
  if (r.status === 404 && as === "bytes") return null;
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${(await errorOf(r)) || r.statusText}`);
  return as === "json" ? r.json() : new Uint8Array(await r.arrayBuffer());
}

async function errorOf(r) {
  const text = await r.text();
  try {
    return JSON.parse(text).error?.message ?? text;
  } catch {
    return text;
  }
}

const objectPath = (key) => `/v1/objects/${key.split("/").map(encodeURIComponent).join("/")}`;

/** The core throws its error as JSON text: `{"error": kind, …fields}`. */
function coreError(e) {
  try {
    const { error, ...fields } = JSON.parse(String(e));
    return `${error}: ${Object.values(fields).join(" · ")}`;
  } catch {
    return String(e);
  }
}

async function loadPipeline(id) {
  const problems = [];
  const fetchDoc = async (key, decode) => {
    const bytes = await api(objectPath(key), "bytes");
    if (bytes === null) return null; // deleted since it was listed
    try {
      return JSON.parse(decode(key, bytes));
    } catch (e) {
      problems.push({ key, error: coreError(e) });
      return null;
    }
  };
  const keys = await api(`/v1/keys?prefix=${encodeURIComponent(`pipelines/${id}/partitions/`)}`);
  const [pipeline, ...partitions] = await Promise.all([
    fetchDoc(`pipelines/${id}/pipeline.json`, core.decodePipeline),
    ...keys.map((k) => fetchDoc(k, core.decodePartition)),
  ]);
  return { pipeline, partitions: partitions.filter(Boolean), problems };
}

async function refresh() {
  if (state.fetching) return;
  state.fetching = true;
  setStatus("loading", "refreshing…");
  try {
    const ids = await api("/v1/pipelines");
    const loaded = await Promise.all(ids.map(loadPipeline));
    state.loaded = new Map(ids.map((id, i) => [id, loaded[i]]));
    state.lastFetch = Date.now();
    $("login").hidden = true;
    render();
    setStatus("ok", `${ids.length} pipeline${ids.length === 1 ? "" : "s"} · updated ${clock(state.lastFetch)}`);
  } catch (e) {
    if (e instanceof Unauthorized) {
      askForToken(state.token ? `The service refused this token (${e.message}).` : null);
      setStatus("error", "not signed in");
    } else {
      const since = state.lastFetch ? `; showing data from ${clock(state.lastFetch)}` : "";
      setStatus("error", `cannot reach the service: ${e.message}${since}`);
    }
  } finally {
    state.fetching = false;
  }
}

// ---------- rendering ----------

/** `el("td", {class: "x"}, "text", child)`: children are text or nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
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

function viewOf({ pipeline, partitions }, now) {
  if (!pipeline) return null;
  return JSON.parse(core.aggregate(JSON.stringify(pipeline), JSON.stringify(partitions), now));
}

function render() {
  const now = Date.now();
  const main = $("pipelines");
  if (state.loaded.size === 0) {
    main.replaceChildren(el("p", { class: "empty" }, "No pipelines yet. Create one with ", el("code", {}, "oxiflow state create"), "."));
    return;
  }
  main.replaceChildren(...[...state.loaded].map(([id, loaded]) => renderPipeline(id, loaded, now)));
}

function renderPipeline(id, loaded, now) {
  const view = viewOf(loaded, now);
  const section = el("section", { class: "pipeline", "data-pipeline": id });
  if (!view) {
    section.append(el("h2", {}, id), renderProblems(loaded.problems) ?? el("p", { class: "muted" }, "no pipeline document"));
    return section;
  }
  const parts = view.steps.flatMap((s) => s.partitions);
  const done = parts.filter((p) => p.current_run && statusKind(p.status) === "completed").length;
  const stale = parts.filter((p) => p.lease?.stale || p.lease?.status.state === "expired");
  section.append(
    ...[el(
      "div",
      { class: "pipeline-head" },
      el("h2", {}, id),
      field("span", "status", view.status, badge(view.status)),
      el("span", { class: "muted" }, `${view.run_id} · updated `, el("span", { "data-ago": view.updated_at }, ago(view.updated_at, now))),
    ),
    el(
      "div",
      { class: "totals" },
      total("records", "records_processed", view.records_processed, number(view.records_processed)),
      total("failed", "records_failed", view.records_failed, number(view.records_failed)),
      total("bytes", "bytes_processed", view.bytes_processed, bytes(view.bytes_processed)),
      total("errors", "total_errors", view.total_errors, number(view.total_errors)),
      total("partitions done", "partitions_completed", done, `${done} / ${parts.length}`),
    ),
    el("progress", { max: Math.max(parts.length, 1), value: done, "aria-label": "partitions completed" }),
    stale.length
      ? el("p", { class: "stale-note", "data-field": "stale_workers" }, "Stale: ", stale.map((p) => `${p.lease.worker_id} on ${p.partition}`).join(", "),
          " — the holder stopped writing; another worker may take over.")
      : null,
    renderSteps(view, now),
    renderErrors(view, now),
    renderProblems(loaded.problems)].filter(Boolean),
  );
  return section;
}

const total = (label, name, value, text) => el("div", {}, field("strong", name, value, text), el("span", {}, label));

function renderSteps(view, now) {
  const head = el("tr", {}, ...["partition", "status", "records", "failed", "bytes", "batch", "bookmark", "lease", "heartbeat", "tries"].map((h) => el("th", {}, h)));
  const body = el("tbody");
  for (const step of view.steps) {
    const done = step.partitions.filter((p) => p.current_run && statusKind(p.status) === "completed").length;
    body.append(
      el("tr", { class: "step", "data-step": step.step_id },
        el("th", { scope: "row" }, step.step_id), el("td", {}, badge(step.status)),
        field("td", "records_processed", step.records_processed, number(step.records_processed)),
        field("td", "records_failed", step.records_failed, number(step.records_failed)),
        el("td", {}, bytes(step.bytes_processed)),
        el("td", { colspan: 5 }, el("progress", { max: Math.max(step.partitions.length, 1), value: done }), ` ${done} / ${step.partitions.length} done`)),
    );
    for (const p of step.partitions) body.append(renderPartition(p, now));
  }
  return el("table", { class: "steps" }, el("thead", {}, head), body);
}

function renderPartition(p, now) {
  const kind = p.current_run ? statusKind(p.status) : "pending";
  const lease = leaseText(p.lease, now);
  const failed = p.status.failed;
  return el("tr", { class: `partition ${lease.cls === "stale" ? "stale" : ""}`, "data-partition": p.partition },
    el("td", {}, p.partition),
    field("td", "status", kind, [badge(kind), failed ? el("span", { class: "reason", title: failed.error }, failed.retryable ? " retryable" : " final") : null]),
    field("td", "records_processed", p.records_processed, number(p.records_processed)),
    field("td", "records_failed", p.records_failed, number(p.records_failed)),
    field("td", "bytes_processed", p.bytes_processed, bytes(p.bytes_processed)),
    field("td", "batch_number", p.batch_number),
    field("td", "last_processed_id", p.last_processed_id, p.last_processed_id ?? "—", { class: "mono" }),
    el("td", {
      class: `lease ${lease.cls}`,
      "data-field": "lease",
      "data-worker": p.lease?.worker_id ?? "",
      "data-epoch": p.lease?.epoch ?? "",
      "data-expires-at": p.lease?.expires_at ?? "",
      "data-state": p.lease?.status.state ?? "free",
    }, lease.text),
    el("td", { "data-ago": p.last_heartbeat ?? "" }, ago(p.last_heartbeat, now)),
    field("td", "attempts", p.attempts),
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

/** Once a second: recompute lease states and relative times from the cache. */
function tick() {
  if (state.loaded.size && !document.hidden && !window.getSelection()?.toString()) render();
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

function schedule() {
  clearInterval(state.timer);
  const every = Number($("interval").value);
  if (every > 0) state.timer = setInterval(refresh, every);
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
    state.loaded = new Map();
    $("pipelines").replaceChildren();
    askForToken(null);
  });
  $("refresh").addEventListener("click", refresh);
  $("interval").addEventListener("change", schedule);
  document.addEventListener("visibilitychange", () => !document.hidden && refresh());
  setInterval(tick, 1000);
  schedule();
  await refresh();
}

main().catch((e) => setStatus("error", `the dashboard failed to start: ${e}`));
