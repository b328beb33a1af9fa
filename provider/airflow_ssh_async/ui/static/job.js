// A job's page (also the "Remote job" tab of a task instance): its facts, stdout and stderr
// opening at the tail and following while it runs, a way to page back, and Kill.
"use strict";

const CHUNK = 64 * 1024;
const KEEP = 2 * 1024 * 1024; // characters kept per pane: a long follow never grows without bound
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let job = {
  conn_id: params.get("conn_id"), async_dir: params.get("async_dir") || "", job_id: params.get("job_id"),
  become_user: params.get("become_user") || "", become_method: params.get("become_method") || "",
};
let state = null;
let cannotRead = false; // the user may see the job but not read its output
let fast = 0; // polls left at the fast pace after a kill
const panes = {
  stdout: { start: null, next: null, busy: false },
  stderr: { start: null, next: null, busy: false },
};

function notice(text, isError) {
  const box = $("notice");
  clear(box);
  if (text) box.append(el("div", { class: isError ? "error" : "muted", role: isError ? "alert" : "status" }, text));
}

function fact(dl, name, value) {
  dl.append(el("dt", {}, name), el("dd", { "data-fact": name }, value));
}

function renderFacts(data) {
  const j = data.job;
  const f = j.facts || {};
  const dl = $("facts");
  clear(dl);
  $("title").textContent = `Remote job ${j.job_id}`;
  fact(dl, "State", stateBadge(j.state));
  fact(dl, "Reason", j.reason);
  fact(dl, "Launched by", originLink(j.origin));
  fact(dl, "Host", data.host);
  fact(dl, "Runs as", f.user || data.become_user || "—");
  fact(dl, "Folder", data.resolved_dir ? `${data.resolved_dir}/${j.job_id}` : j.job_id);
  fact(dl, "Command (first line)", data.command === null || data.command === undefined ? "— (not in Airflow's records)" : data.command);
  fact(dl, "Working directory", f.cwd || "—");
  fact(dl, "Started", fmtTime(j.start_time));
  fact(dl, "Ended", fmtTime(j.end_time));
  fact(dl, "Duration", fmtSpan(j.duration));
  fact(dl, "Exit", fmtExit(j));
  fact(dl, "Time limit", f.timeout ? `${f.timeout} s (job_timeout)` : "none");
  fact(dl, "Job pid / process group", j.pid !== null && j.pid !== undefined ? `${j.pid} / ${f.pgid ?? j.pid}` : "—");
  fact(dl, "Supervisor pid", f.supervisor_pid ?? "—");
  fact(dl, "Boot id", f.boot_id || "—");
  fact(dl, "Last progress", j.progress || "—");
  $("killbox").hidden = !(data.can_kill && (j.state === "running" || j.state === "starting"));
}

function append(stream, text, atStart) {
  const pre = $(stream);
  const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  if (atStart) {
    const top = pre.scrollHeight;
    pre.prepend(document.createTextNode(text));
    pre.scrollTop += pre.scrollHeight - top;
  } else {
    pre.append(document.createTextNode(text));
    if (pre.textContent.length > KEEP) {
      const all = pre.textContent;
      pre.textContent = all.slice(all.length - KEEP);
      panes[stream].start = null; // trimmed: paging back restarts from what is shown
    }
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
}

async function readStream(stream) {
  const p = panes[stream];
  if (p.busy || cannotRead) return;
  p.busy = true;
  try {
    const out = await api("/api/output", {
      ...where(job), job_id: job.job_id, stream,
      offset: p.next === null ? -1 : p.next, max_bytes: CHUNK,
    });
    if (p.next === null) p.start = out.offset;
    if (out.text) append(stream, out.text, false);
    p.next = out.next_offset;
    $(`${stream}-size`).textContent = fmtBytes(out.size);
    $(`${stream}-earlier`).disabled = !p.start;
    if (out.next_offset < out.size) setTimeout(() => readStream(stream), 50); // more is there already
  } catch (e) {
    $(`${stream}-size`).textContent = e.message;
  } finally {
    p.busy = false;
  }
}

async function earlier(stream) {
  const p = panes[stream];
  if (!p.start) return;
  const from = Math.max(0, p.start - CHUNK);
  const out = await api("/api/output", {
    ...where(job), job_id: job.job_id, stream, offset: from, max_bytes: p.start - from, before: true,
  });
  append(stream, out.text, true);
  p.start = out.offset;
  $(`${stream}-earlier`).disabled = !p.start;
}

async function poll() {
  let data;
  try {
    data = await api("/api/job", { ...where(job), job_id: job.job_id });
  } catch (e) {
    notice(e.message, true);
    setTimeout(poll, 5000);
    return;
  }
  notice("");
  state = data.job.state;
  renderFacts(data);
  cannotRead = !data.can_read_output || Boolean(data.job.output_withheld);
  if (!data.can_read_output) notice("You may see this job but not its output (it needs read access to the DAG's task logs).", true);
  else if (data.job.output_withheld) notice(`Output not shown: ${data.job.output_withheld}.`, true);
  await Promise.all(["stdout", "stderr"].map(readStream));
  const running = state === "running" || state === "starting";
  if (running || fast > 0) {
    fast = Math.max(0, fast - 1);
    setTimeout(poll, fast > 0 ? 1000 : 3000);
  }
}

// The frame is sandboxed without allow-modals (window.confirm does nothing there): the
// confirmation is part of the page.
function askKill() {
  const grace = parseInt($("grace").value, 10);
  if (!(grace >= 0 && grace <= 3600)) { $("kill-result").textContent = "grace is 0 to 3600 seconds"; return; }
  $("confirm-text").textContent = `Kill job ${job.job_id}? Its process group gets SIGTERM, then SIGKILL after ${grace} s.`;
  $("confirm").hidden = false;
  $("confirm-kill").focus();
}

async function kill() {
  $("confirm").hidden = true;
  const grace = parseInt($("grace").value, 10);
  $("kill").disabled = true;
  $("kill-result").textContent = "killing…";
  try {
    const session = await api("/api/session");
    const out = await api("/api/kill", {}, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": session.csrf_token },
      body: JSON.stringify({ ...where(job), async_dir: job.async_dir || null, job_id: job.job_id, grace }),
    });
    $("kill-result").textContent = `kill sent: ${out.outcome}`;
    fast = 20;
    poll();
  } catch (e) {
    $("kill-result").textContent = e.message;
  } finally {
    $("kill").disabled = false;
  }
}

async function start() {
  $("kill").addEventListener("click", askKill);
  $("confirm-kill").addEventListener("click", kill);
  $("confirm-cancel").addEventListener("click", () => { $("confirm").hidden = true; });
  $("stdout-earlier").addEventListener("click", () => earlier("stdout"));
  $("stderr-earlier").addEventListener("click", () => earlier("stderr"));
  if (location.pathname.endsWith("/ti")) {
    try {
      const found = await api("/api/ti", {
        dag_id: params.get("dag_id"), run_id: params.get("run_id"), task_id: params.get("task_id"), map_index: params.get("map_index"),
      });
      job = {
        conn_id: found.conn_id, async_dir: found.async_dir, job_id: found.job_id,
        become_user: found.become_user || "", become_method: found.become_method || "",
      };
    } catch (e) {
      $("title").textContent = "Remote job";
      notice(e.message, true);
      return;
    }
  }
  if (!job.conn_id || !job.job_id) { notice("No job given (conn_id and job_id).", true); return; }
  poll();
}
start();
