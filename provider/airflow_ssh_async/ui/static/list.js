// The Remote jobs page: one section per SSH connection, each loaded on its own, so a host
// that does not answer shows its error in its section and holds up no other.
"use strict";

const REFRESH_MS = 5000;
const PAGE = 50;
const query = new URLSearchParams(location.search);
const typed = new Set(query.getAll("conn_id"));
const pages = {}; // section key -> offset
let sections = [];
let timer = null;

const $ = (id) => document.getElementById(id);
const key = (s) => `${s.conn_id}\u0000${s.async_dir}\u0000${s.become_user || ""}\u0000${s.become_method || ""}`;

function filters() {
  return { state: $("state").value, dag: $("dag").value.trim(), host: $("host").value };
}

function syncUrl() {
  const q = new URLSearchParams();
  typed.forEach((c) => q.append("conn_id", c));
  const f = filters();
  if (f.state) q.set("state", f.state);
  if (f.dag) q.set("dag_id", f.dag);
  if (f.host) q.set("host", f.host);
  history.replaceState(null, "", `${location.pathname}${q.toString() ? "?" + q : ""}`);
}

function hostOptions() {
  const select = $("host");
  const chosen = select.value || query.get("host") || "";
  clear(select);
  select.append(el("option", { value: "" }, "all"));
  for (const s of sections) select.append(el("option", { value: s.conn_id }, s.conn_id));
  select.value = sections.some((s) => s.conn_id === chosen) ? chosen : "";
}

function sectionNode(s) {
  const id = `host-${sections.indexOf(s)}`;
  let node = document.getElementById(id);
  if (!node) {
    node = el("section", { class: "host", id, "data-conn-id": s.conn_id });
    $("hosts").append(node);
  }
  return node;
}

function jobRow(s, job) {
  const sizes = job.sizes || {};
  return el("tr", { "data-job-id": job.job_id, "data-state": job.state },
    el("td", {}, el("a", { href: jobHref(s, job.job_id), class: "job-link" }, job.job_id)),
    el("td", {}, stateBadge(job.state), job.state === "damaged" ? el("div", { class: "muted" }, job.reason) : null),
    el("td", {}, originLink(job.origin)),
    el("td", {}, fmtTime(job.start_time)),
    el("td", { class: "num" }, fmtSpan(job.duration)),
    el("td", { class: "num" }, fmtExit(job)),
    el("td", { class: "progress", title: job.progress || "" }, job.progress || ""),
    el("td", { class: "num" }, fmtBytes(sizes.stdout)),
    el("td", { class: "num" }, fmtBytes(sizes.stderr)),
  );
}

function render(s, data) {
  const node = sectionNode(s);
  clear(node);
  const counts = Object.entries(data.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ");
  node.append(el("header", {},
    el("h2", {}, s.conn_id),
    s.become_user ? el("span", { class: "become", title: "the jobs run as this user, read through the same elevation" },
      `as ${s.become_user} (${s.become_method || "sudo"})`) : null,
    el("span", { class: "muted" }, data.host || ""),
    el("span", { class: "muted" }, data.resolved_dir || s.async_dir),
    el("span", { class: "counts" }, counts || (data.error ? "" : "no jobs")),
    el("span", { class: "muted", title: "how long ago the host was read (every 5 s at most, for all viewers)" },
      data.age_seconds !== undefined ? `read ${Math.round(data.age_seconds)} s ago` : ""),
  ));
  if (data.error) {
    const what = data.error_kind === "unknown_connection" ? "Unknown connection" : "Host not available";
    node.append(el("div", { class: "error", role: "alert", "data-error-kind": data.error_kind }, `${what}: ${data.error}`));
    return;
  }
  for (const d of data.dag_ids || []) {
    if (![...$("dag-ids").options].some((o) => o.value === d)) $("dag-ids").append(el("option", { value: d }));
  }
  if (!data.jobs.length) {
    node.append(el("p", { class: "muted", style: null }, data.total === 0 && data.visible ? "no job matches the filters" : "no jobs you may see"));
    return;
  }
  const body = el("tbody", {});
  data.jobs.forEach((job) => body.append(jobRow(s, job)));
  node.append(el("table", {},
    el("thead", {}, el("tr", {}, ...["Job", "State", "Launched by (DAG / run / task / try)", "Started", "Duration", "Exit", "Last progress", "stdout", "stderr"].map((h) => el("th", {}, h)))),
    body));
  const offset = data.offset || 0;
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", disabled: offset === 0, onclick: () => { pages[key(s)] = Math.max(0, offset - PAGE); load(s); } }, "Newer"),
    el("span", { class: "muted" }, `${offset + 1}–${offset + data.jobs.length} of ${data.total}`),
    el("button", { type: "button", disabled: offset + data.jobs.length >= data.total, onclick: () => { pages[key(s)] = offset + PAGE; load(s); } }, "Older"),
  );
  node.append(pager);
}

async function load(s) {
  const f = filters();
  if (f.host && f.host !== s.conn_id) { sectionNode(s).hidden = true; return; }
  sectionNode(s).hidden = false;
  try {
    const data = await api("/api/jobs", {
      ...where(s), state: f.state ? [f.state] : [], dag_id: f.dag,
      offset: pages[key(s)] || 0, limit: PAGE,
    });
    render(s, data);
  } catch (e) {
    render(s, { error: e.message, error_kind: e.status === 400 ? "bad_request" : "unreachable" });
  }
}

async function refresh() {
  clearTimeout(timer);
  syncUrl();
  await Promise.all(sections.map(load));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  timer = setTimeout(() => { if (!document.hidden) refresh(); else timer = setTimeout(refresh, REFRESH_MS); }, REFRESH_MS);
}

async function start() {
  if (query.get("state")) $("state").value = query.get("state");
  if (query.get("dag_id")) $("dag").value = query.get("dag_id");
  let found = [];
  try {
    found = (await api("/api/hosts")).hosts;
  } catch (e) {
    $("global-error").append(el("div", { class: "error", role: "alert" }, `Cannot list hosts: ${e.message}`));
  }
  const seen = new Set(found.map(key));
  sections = found.slice();
  typed.forEach((c) => {
    const s = { conn_id: c, async_dir: "~/.airflow_async" };
    if (!seen.has(key(s)) && !sections.some((x) => x.conn_id === c)) sections.push(s);
  });
  if (!sections.length) $("hosts").append(el("p", { class: "muted", id: "no-hosts" }, "No SSH connection of this provider found in Airflow's records: type a connection id above."));
  hostOptions();
  await refresh();
}

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const c = $("conn").value.trim();
  if (c && !sections.some((s) => s.conn_id === c)) {
    typed.add(c);
    sections.push({ conn_id: c, async_dir: "~/.airflow_async" });
    const none = $("no-hosts");
    if (none) none.remove();
    hostOptions();
  }
  $("conn").value = "";
  refresh();
});
["state", "host", "dag"].forEach((id) => $(id).addEventListener("change", () => { Object.keys(pages).forEach((k) => { pages[k] = 0; }); refresh(); }));
start();
