// Bulk jobs (`/jobs`): a new job for a team or for agents chosen here (state, reason,
// and what to do with an agent on a call: refuse, or wait for the call to end); the
// jobs, newest first (GET …/bulk-transitions), with their progress kept live by the
// feed's `bulk.progress` and `bulk.completed`; one job (`?job=ID`) with every item's
// outcome and why, its Cancel (the items not started) and Revert (a job putting back
// what it changed). Job ids are shown whole: they share their first characters.
"use strict";

const J = {
  jobs: new Map(), // id -> the job as last heard of (without items)
  shown: null, // the id of the job shown below the list
  agents: new Map(), // id -> { id, name, team_id, team } from the live snapshot
  chosen: new Set(),
  oldest: null, // the last job of the list, where "Older jobs" goes on
  listed: false, // whether this wfmd lists jobs
  itemsDue: null,
};

const PAGE_SIZE = 50;

function tellNew(text, ok) {
  $("new-message").textContent = text;
  $("new-message").className = "message " + (ok ? "ok" : "error");
}

function tellJob(text, ok) {
  $("job-message").textContent = text;
  $("job-message").className = "message " + (ok ? "ok" : "error");
}

function agentName(id) {
  const a = J.agents.get(id);
  return a && a.name ? a.name : id;
}

// ---- the new job ---------------------------------------------------------------------

function fillForm() {
  for (const s of SETTABLE) $("new-state").append(new Option(s, s));
  $("new-state").value = "NOT_READY";
  for (const [value, text] of WAITS) $("new-wait").append(new Option(text, value));
  $("new-wait").value = "15m";
}

function fillAgents() {
  const teams = new Map();
  for (const a of J.agents.values()) if (a.team_id) teams.set(a.team_id, a.team || a.team_id);
  const select = $("new-team");
  const keep = select.value;
  select.replaceChildren(new Option("choose…", ""));
  for (const [id, name] of [...teams].sort((a, b) => a[1].localeCompare(b[1]))) select.append(new Option(name, id));
  select.value = keep;
  const list = $("pick-list");
  const fragment = document.createDocumentFragment();
  const byName = new Intl.Collator().compare;
  for (const a of [...J.agents.values()].sort((x, y) => byName(x.name || x.id, y.name || y.id))) {
    const label = el("label");
    label.dataset.agent = a.id;
    const box = el("input");
    box.type = "checkbox";
    box.value = a.id;
    box.checked = J.chosen.has(a.id);
    label.append(box, document.createTextNode(" " + (a.name || a.id)));
    fragment.append(label);
  }
  list.replaceChildren(fragment);
  filterPicker();
}

function filterPicker() {
  const q = $("pick-q").value.trim().toLowerCase();
  for (const label of $("pick-list").children) {
    const a = J.agents.get(label.dataset.agent);
    label.hidden = !!q && !(a.name || a.id).toLowerCase().includes(q) && !a.id.toLowerCase().includes(q);
  }
}

function countChosen() {
  $("picked").textContent = J.chosen.size + " chosen";
  if (J.chosen.size) document.querySelector('input[name=target][value=agents]').checked = true;
}

async function startJob(event) {
  event.preventDefault();
  const target = document.querySelector("input[name=target]:checked").value;
  const body = { state: $("new-state").value };
  if (target === "team") {
    if (!$("new-team").value) return tellNew("Choose a team, or choose agents; nothing was started.", false);
    body.team = $("new-team").value;
  } else {
    if (!J.chosen.size) return tellNew("Choose at least one agent, or a team; nothing was started.", false);
    body.agents = [...J.chosen];
  }
  const reason = $("new-reason").value.trim();
  if (reason && !REASON.test(reason)) {
    $("new-reason").focus();
    return tellNew("A reason code is 1 to 64 letters, digits, _ or -; nothing was started.", false);
  }
  if (reason) body.reason = reason;
  if (document.querySelector("input[name=when]:checked").value === "defer") {
    body.when_busy = "defer";
    body.defer_for = $("new-wait").value;
  }
  $("start").disabled = true;
  try {
    const answer = await call(BASE + "/bulk-transitions", { method: "POST", json: body });
    if (!answer.ok) {
      const unknown = answer.body && answer.body.unknown_agents;
      return tellNew("Not started: " + problemText(answer) + (unknown ? " (" + unknown.join(", ") + ")" : ""), false);
    }
    tellNew("Started job " + answer.body.job_id + " for " + answer.body.total + " agent(s).", true);
    J.chosen.clear();
    for (const box of $("pick-list").querySelectorAll("input:checked")) box.checked = false;
    countChosen();
    remember({ job_id: answer.body.job_id, status: "queued", total: answer.body.total, succeeded: 0, unchanged: 0,
      rejected: 0, failed: 0, cancelled: 0, pending: answer.body.total, team: body.team || null,
      state: body.state, reason: body.reason || null, created_at: new Date().toISOString() });
    show(answer.body.job_id);
  } catch (e) {
    tellNew("Cannot reach wfmd: " + e.message, false);
  } finally {
    $("start").disabled = false;
  }
}

// ---- the list ------------------------------------------------------------------------

function settled(job) {
  return (job.succeeded || 0) + (job.unchanged || 0) + (job.rejected || 0) + (job.failed || 0) + (job.cancelled || 0);
}

function figures(job) {
  return settled(job) + "/" + (job.total === undefined ? "?" : job.total) + " · changed " + ((job.succeeded || 0) +
    (job.unchanged || 0)) + " · refused " + (job.rejected || 0) + " · failed " + (job.failed || 0) +
    (job.deferred ? " · waiting " + job.deferred : "") + (job.cancelled ? " · cancelled " + job.cancelled : "");
}

function who(job) {
  if (job.reverts_job_id) return "revert of " + job.reverts_job_id;
  if (job.team) return "team " + job.team;
  return (job.total === undefined ? "" : job.total + " ") + "agent(s)";
}

// Takes what is known of a job (from the list, an answer or the feed) and shows it.
function remember(job) {
  const known = J.jobs.get(job.job_id) || {};
  const merged = Object.assign(known, job);
  J.jobs.set(job.job_id, merged);
  drawRow(merged);
  if (J.shown === job.job_id) drawJob(merged);
}

function drawRow(job) {
  const status = $("status").value;
  let row = document.querySelector('#job-rows tr[data-job="' + CSS.escape(job.job_id) + '"]');
  if (status && job.status !== status) {
    if (row) row.remove();
    return;
  }
  if (!row) {
    row = el("tr");
    row.dataset.job = job.job_id;
    for (let i = 0; i < 7; i++) row.insertCell();
    const link = el("a", "mono", job.job_id);
    link.href = "?job=" + encodeURIComponent(job.job_id);
    link.onclick = (event) => {
      event.preventDefault();
      show(job.job_id);
    };
    row.cells[0].append(link);
    row.cells[4].append(el("progress"), el("span", "figures"));
    // Newest first: a job not in the list yet is the newest, unless the list is older.
    const rows = $("job-rows");
    const later = [...rows.children].find((r) => (J.jobs.get(r.dataset.job).created_at || "") < (job.created_at || ""));
    rows.insertBefore(row, later || null);
  }
  row.dataset.status = job.status || "queued";
  row.cells[1].textContent = job.status || "queued";
  row.cells[2].textContent = who(job);
  row.cells[3].textContent = job.state ? job.state + (job.reason ? " (" + job.reason + ")" : "") : "as before";
  const bar = row.cells[4].querySelector("progress");
  bar.max = job.total || 1;
  bar.value = settled(job);
  bar.setAttribute("aria-label", "Items settled of job " + job.job_id);
  row.cells[4].querySelector(".figures").textContent = " " + figures(job);
  row.cells[5].textContent = dateTime(job.created_at);
  row.cells[6].textContent = job.actor || "";
  row.classList.toggle("selected", J.shown === job.job_id);
}

async function loadList(more) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("status").value) q.set("status", $("status").value);
  if (more && J.oldest) q.set("before", J.oldest);
  const answer = await call(BASE + "/bulk-transitions?" + q);
  if (answer.status === 400 && answer.body && answer.body.tenants) {
    chooseTenant($("content"), answer.body.tenants, "Bulk jobs");
    return false;
  }
  if (!answer.ok) {
    $("list-message").textContent = answer.status === 404 || answer.status === 405
      ? "This wfmd does not list its jobs: those started here, and the one opened by its id, are shown."
      : "Cannot list the jobs: " + problemText(answer);
    return true;
  }
  J.listed = true;
  $("list-message").textContent = answer.body.jobs.length || more ? "" : "No job yet.";
  if (!more) {
    $("job-rows").replaceChildren();
    J.jobs = new Map([...J.jobs].filter(([id]) => id === J.shown));
  }
  for (const job of answer.body.jobs) remember(job);
  const last = answer.body.jobs[answer.body.jobs.length - 1];
  if (last) J.oldest = last.job_id;
  $("older").hidden = answer.body.jobs.length < PAGE_SIZE;
  return true;
}

// ---- one job -------------------------------------------------------------------------

async function show(id) {
  J.shown = id;
  const q = new URLSearchParams(location.search);
  q.set("job", id);
  history.replaceState(null, "", location.pathname + "?" + q);
  for (const row of $("job-rows").children) row.classList.toggle("selected", row.dataset.job === id);
  $("job").hidden = false;
  $("job-id").textContent = id;
  tellJob("", true);
  await loadItems();
}

async function loadItems() {
  const id = J.shown;
  const answer = await call(BASE + "/bulk-transitions/" + encodeURIComponent(id));
  if (id !== J.shown) return;
  if (!answer.ok) {
    $("item-rows").replaceChildren();
    $("job-status").textContent = "";
    tellJob(answer.status === 404 ? "No job " + id + " here." : "Cannot load the job: " + problemText(answer), false);
    $("cancel").disabled = true;
    $("revert").disabled = true;
    return;
  }
  const job = answer.body;
  drawItems(job.items || []);
  delete job.items;
  remember(job);
}

function drawJob(job) {
  $("job-status").textContent = job.status || "queued";
  $("job-status").dataset.status = job.status || "queued";
  $("job-progress").max = job.total || 1;
  $("job-progress").value = settled(job);
  $("job-figures").textContent = figures(job) + (job.reverts_job_id ? " · reverts " + job.reverts_job_id : "");
  const running = job.status === "queued" || job.status === "running";
  $("cancel").disabled = !running || job.cancel_requested === true;
  $("revert").disabled = running;
}

function drawItems(items) {
  const body = $("item-rows");
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    row.dataset.agent = item.agent;
    row.dataset.outcome = item.outcome;
    const link = el("a", "", agentName(item.agent));
    link.href = ROOT + "/agents/" + encodeURIComponent(item.agent);
    row.insertCell().append(link);
    row.insertCell().textContent = item.state ? item.state + (item.reason ? " (" + item.reason + ")" : "") : "–";
    row.insertCell().append(el("span", "outcome-" + item.outcome, OUTCOMES[item.outcome] || item.outcome));
    row.insertCell().textContent = item.violation ? violationText(item.violation) : item.error || "";
  }
}

// A job shown that moves has its items read again, at most once a second.
function itemsLater() {
  if (J.itemsDue) return;
  J.itemsDue = setTimeout(() => {
    J.itemsDue = null;
    if (J.shown) loadItems();
  }, 1000);
}

async function cancelJob() {
  const id = J.shown;
  $("cancel").disabled = true;
  const answer = await call(BASE + "/bulk-transitions/" + encodeURIComponent(id), { method: "DELETE" });
  if (answer.ok) {
    tellJob("Cancelling: the items not started are cancelled, those under way finish.", true);
    delete answer.body.items;
    remember(answer.body);
    itemsLater();
  } else {
    tellJob(answer.status === 409 ? "Nothing to cancel: the job completed already." : problemText(answer), false);
    $("cancel").disabled = false;
  }
}

async function revertJob() {
  const id = J.shown;
  $("revert").disabled = true;
  const answer = await call(BASE + "/bulk-transitions/" + encodeURIComponent(id) + "/revert", { method: "POST" });
  if (!answer.ok) {
    tellJob(answer.status === 409 ? "Cannot revert: " + (answer.body && answer.body.detail || "the job is running or changed no agent") + "."
      : problemText(answer), false);
    $("revert").disabled = false;
    return;
  }
  remember({ job_id: answer.body.job_id, status: "queued", total: answer.body.total, reverts_job_id: id,
    succeeded: 0, unchanged: 0, rejected: 0, failed: 0, cancelled: 0, created_at: new Date().toISOString() });
  await show(answer.body.job_id);
  tellJob("Reverting job " + id + ": this job puts its " + answer.body.total + " agent(s) back.", true);
}

// ---- the feed ------------------------------------------------------------------------

function handle(message) {
  const data = message.data;
  switch (message.type) {
    case "snapshot":
      J.agents = new Map(data.agents.map((a) => [a.id, a]));
      fillAgents();
      break;
    case "bulk.progress":
      remember(Object.assign({}, data, { items: undefined }));
      if (data.job_id === J.shown) itemsLater();
      break;
    case "bulk.completed":
      remember({ job_id: data.jobId, status: data.status, total: data.total, succeeded: data.succeeded,
        unchanged: data.unchanged, rejected: data.rejected, failed: data.failed, cancelled: data.cancelled,
        pending: 0, deferred: 0 });
      if (data.jobId === J.shown) itemsLater();
      break;
  }
}

const FEED = new Feed(handle, () => {
  // A reconnection may have missed progress: the list (and the job shown) read again.
  if (J.listed) loadList(false);
  if (J.shown) loadItems();
});

async function main() {
  fillForm();
  $("new-job").onsubmit = startJob;
  $("pick-q").oninput = filterPicker;
  $("pick-q").onchange = filterPicker;
  $("pick-list").onchange = (event) => {
    if (event.target.checked) J.chosen.add(event.target.value);
    else J.chosen.delete(event.target.value);
    countChosen();
  };
  $("pick-shown").onclick = () => {
    for (const label of $("pick-list").children) {
      if (label.hidden) continue;
      label.firstChild.checked = true;
      J.chosen.add(label.dataset.agent);
    }
    countChosen();
  };
  $("pick-none").onclick = () => {
    J.chosen.clear();
    for (const box of $("pick-list").querySelectorAll("input:checked")) box.checked = false;
    countChosen();
  };
  $("status").onchange = () => loadList(false);
  $("older").onclick = () => loadList(true);
  $("cancel").onclick = cancelJob;
  $("revert").onclick = revertJob;
  const live = await call(BASE + "/live");
  if (live.status === 400 && live.body && live.body.tenants) {
    chooseTenant($("content"), live.body.tenants, "Bulk jobs");
    return markReady();
  }
  if (live.ok) handle({ type: "snapshot", data: live.body });
  FEED.start();
  await loadList(false);
  const id = new URLSearchParams(location.search).get("job");
  if (id) await show(id);
  markReady();
}

main();
