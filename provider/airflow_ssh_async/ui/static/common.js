// Shared by the Remote jobs pages: API calls, safe DOM building, theme, formatting.
// Every value goes into the page as text (textContent), never as markup.
"use strict";

const PREFIX = "/ssh-async";
const ROOT = location.pathname.replace(/\/ssh-async(\/.*)?$/, "");
const BASE = ROOT + PREFIX;

async function api(path, params, options) {
  const url = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const response = await fetch(url, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    const err = new Error(`${response.status}: ${detail}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

// Airflow's UI keeps its theme in localStorage "theme" (light, dark or system) and a "dark"
// class on its <html>; the frame follows the parent page, and the system setting otherwise.
function currentTheme() {
  try {
    const parentRoot = window.parent !== window ? window.parent.document.documentElement : null;
    if (parentRoot) {
      if (parentRoot.classList.contains("dark")) return "dark";
      if (parentRoot.classList.contains("light")) return "light";
    }
  } catch (e) { /* another origin: fall through */ }
  let stored = null;
  try { stored = localStorage.getItem("theme"); } catch (e) { stored = null; }
  if (stored === "dark" || stored === "light") return stored;
  return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}
function applyTheme() { document.documentElement.classList.toggle("dark", currentTheme() === "dark"); }
applyTheme();
window.addEventListener("storage", applyTheme);
if (window.matchMedia) window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
try {
  if (window.parent !== window) {
    new MutationObserver(applyTheme).observe(window.parent.document.documentElement, { attributes: true, attributeFilter: ["class", "style"] });
  }
} catch (e) { /* another origin */ }

function fmtTime(epoch) {
  if (epoch === null || epoch === undefined) return "—";
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function fmtSpan(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}
function fmtExit(job) {
  if (job.exit_code !== null && job.exit_code !== undefined) return String(job.exit_code);
  if (job.signal !== null && job.signal !== undefined) return job.signal_name || `signal ${job.signal}`;
  return "—";
}
function stateBadge(state) { return el("span", { class: `state ${state}`, "data-state": state }, state); }

// A link to the task instance that launched a job, in the Airflow UI (the top window).
function tiHref(o) {
  const enc = encodeURIComponent;
  let href = `${ROOT}/dags/${enc(o.dag_id)}/runs/${enc(o.run_id)}/tasks/${enc(o.task_id)}`;
  if (o.map_index !== undefined && o.map_index >= 0) href += `/mapped/${o.map_index}`;
  return href;
}
function originLink(o) {
  if (!o) return el("span", { class: "muted" }, "no DAG (CLI or Ansible)");
  const tryPart = o.try_number ? ` / try ${o.try_number}` : "";
  const label = `${o.dag_id} / ${o.run_id} / ${o.task_id}${o.map_index >= 0 ? ` [${o.map_index}]` : ""}${tryPart}`;
  return el("a", { href: tiHref(o), target: "_top", title: "the task instance that launched this job" }, label);
}
// Where a section's jobs are: the connection, the user they run as ("" the connection's own:
// its login or its extra's become_user) and the async_dir; every API call names all of them.
function where(s) {
  const w = { conn_id: s.conn_id, async_dir: s.async_dir || "" };
  if (s.become_user) w.become_user = s.become_user;
  if (s.become_method) w.become_method = s.become_method;
  return w;
}
function jobHref(s, jobId) {
  const q = new URLSearchParams({ conn_id: s.conn_id, job_id: jobId });
  if (s.async_dir && s.async_dir !== "~/.airflow_async") q.set("async_dir", s.async_dir);
  if (s.become_user) q.set("become_user", s.become_user);
  if (s.become_method) q.set("become_method", s.become_method);
  return `${BASE}/job?${q}`;
}
