// The wallboard: draws /v1/live's snapshot and keeps it current from the live feed
// (the console's feed client: WebSocket first, Server-Sent Events when the upgrade
// fails, reconnecting with backoff and resuming by the last event id). It never freezes
// silently: the connection state is always shown, and a page that hears nothing says
// it is stale. Supervisor mode (bulk changes, authorisations) and the day dialog's
// actions are offered to a role that may use them.
//
// At /t/{tenant}/ it is that tenant's board and reads /v1/tenants/{tenant}/…; at / it
// reads /v1/…, which is the only tenant's, or, when wfmd serves several, answers 400
// and the page becomes a picker of their boards.
//
// `?kiosk=1&board=NAME` shows a board of `[[boards]]` (the page is served with their
// definitions in `#board-definitions`): its scope (teams, skills, queues by id or
// name) and its pages cut into screens of fixed-size tiles, as many as fit the
// display, rotating every `rotate` when there is more than one.
"use strict";

const params = new URLSearchParams(location.search);
const kiosk = params.get("kiosk") === "1";

const S = {
  agents: new Map(),
  tiles: null,
  thresholds: { good: 0.8, warning: 0.7 },
  periods: { heartbeat_secs: 15, skill_interval_secs: 30, queue_interval_secs: 30 },
  selected: new Set(),
  jobs: new Map(),
  curves: new Map(),
  // The feed's connection, as the console's shared feed client holds it.
  get socket() { return FEED.socket; },
  get sse() { return FEED.sse; },
};

const FEED = new Feed(handle);

// Among several instances, which one this board's feed comes from (it changes when
// the page reconnects to another).
function showServedBy(instance) {
  const served = $("served-by");
  served.hidden = !instance;
  served.textContent = instance ? "served by " + instance : "";
}

function handle(message) {
  const data = message.data;
  if (B.def) boardHeard(message);
  switch (message.type) {
    case "snapshot":
      S.agents = new Map(data.agents.map((a) => [a.id, a]));
      S.thresholds = data.service_level;
      S.periods = data.periods;
      S.queuesAreSkills = data.queues_are_skills;
      showServedBy(data.served_by);
      S.tiles = tilesOf(data);
      fillFilters();
      renderTiles();
      renderAgents();
      markReady();
      // Curves already drawn are kept current by `metrics`; a snapshot (every
      // reconnect, every roster refresh) only fetches the ones still missing.
      loadCurves(true);
      break;
    case "metrics":
      S.tiles = tilesOf(data);
      for (const tile of S.tiles.skills) extendCurve(tile);
      renderTiles();
      loadCurves(true);
      break;
    case "agent.state_changed": {
      const agent = S.agents.get(data.agentId);
      if (!agent) break;
      agent.state = data.to;
      agent.reason = data.reasonCode || null;
      agent.origin = data.origin;
      agent.since = data.changedAt || message.timestamp;
      agent.rejected = null;
      settleDeferred(agent, data.deferredId);
      renderAgents(data.agentId);
      break;
    }
    case "transition.deferred": {
      const agent = S.agents.get(data.agentId);
      if (!agent) break;
      agent.deferred = { deferred_id: data.deferredId, to: data.to, reason: data.reasonCode,
        expires_at: data.expiresAt };
      renderAgents();
      break;
    }
    case "transition.expired":
    case "transition.cancelled": {
      const agent = S.agents.get(data.agentId);
      if (!agent) break;
      settleDeferred(agent, data.deferredId);
      renderAgents();
      break;
    }
    case "adherence.exception": {
      const agent = S.agents.get(data.agentId);
      if (!agent) break;
      agent.exceptions = (agent.exceptions || []).filter((e) => e.exception_id !== data.exceptionId);
      if (data.status === "open") {
        agent.exceptions.push({ exception_id: data.exceptionId, kind: data.kind, since: data.startedAt,
          severe: data.severity === "severe" });
      }
      renderAgents();
      break;
    }
    case "transition.rejected": {
      const agent = S.agents.get(data.agentId);
      if (agent) {
        agent.rejected = data.violation;
        settleDeferred(agent, data.deferredId);
      }
      addRejection(data);
      renderAgents();
      break;
    }
    case "bulk.progress":
      S.jobs.set(data.job_id, data);
      renderJobs();
      break;
    case "bulk.completed": {
      const job = S.jobs.get(data.jobId) || { job_id: data.jobId };
      Object.assign(job, { status: data.status, total: data.total, succeeded: data.succeeded,
        unchanged: data.unchanged, rejected: data.rejected, failed: data.failed,
        cancelled: data.cancelled, pending: 0 });
      S.jobs.set(data.jobId, job);
      renderJobs();
      break;
    }
    case "close":
      console.info("feed closed by wfmd:", data && data.reason);
      break;
  }
}

function tilesOf(data) {
  return {
    skills: data.skills, queues: data.queues,
    skills_health: data.skills_health, queues_health: data.queues_health,
    skills_polled_at: data.skills_polled_at, queues_polled_at: data.queues_polled_at,
  };
}

// ---- drawing -------------------------------------------------------------------------

function slClass(sl) {
  if (sl === null || sl === undefined) return "";
  if (sl >= S.thresholds.good) return "good";
  if (sl >= S.thresholds.warning) return "warn";
  return "bad";
}

function pct(sl) {
  return sl === null || sl === undefined ? "–" : Math.round(sl * 100) + "%";
}

function ageSecs(at) {
  return at ? (Date.now() - Date.parse(at)) / 1000 : Infinity;
}

function healthNote(health, noun) {
  if (!health) return "";
  switch (health.status) {
    case "pending": return noun + ": pending";
    case "unavailable": return noun + " unavailable: " + health.reason;
    case "failing": return noun + " failing: " + health.reason;
    default: return "";
  }
}

function figure(value, label) {
  const d = el("div");
  d.append(el("b", "", value), el("span", "", label));
  return d;
}

function renderTiles() {
  const t = S.tiles;
  const skills = $("skills");
  const queues = $("queues");
  skills.replaceChildren();
  queues.replaceChildren();
  if (!t) return;
  const skillStale = ageSecs(t.skills_polled_at) > 2 * S.periods.skill_interval_secs;
  const queueStale = ageSecs(t.queues_polled_at) > 2 * S.periods.queue_interval_secs;
  $("skills-note").textContent = healthNote(t.skills_health, "skill figures") ||
    (t.skills.length && skillStale ? "stale: last sample " + mss(ageSecs(t.skills_polled_at)) + " ago" : "");
  $("queues-note").textContent = healthNote(t.queues_health, "queue stats") ||
    (t.queues.length && queueStale ? "stale: last sample " + mss(ageSecs(t.queues_polled_at)) + " ago" : "") ||
    (S.queuesAreSkills ? "this platform's queues are its skills" : "");
  const skillFilter = $("filter-skill").value;
  if (!t.skills.length) skills.append(el("div", "pending", "no skill figures yet (pending)"));
  for (const s of t.skills) {
    if (skillFilter && s.skill_id !== skillFilter) continue;
    const tile = el("div", "tile " + slClass(s.service_level) + (skillStale ? " stale" : ""));
    tile.dataset.skill = s.skill_id;
    tile.append(el("div", "name", s.skill_name || s.skill_id), el("div", "sl", pct(s.service_level)));
    const f = el("div", "figures");
    f.append(figure(String(s.contacts_queued), "queued"), figure(mss(s.longest_wait_secs), "longest wait"),
      figure(s.agents_available + "/" + s.agents_staffed, "available / staffed"));
    tile.append(f, curveSvg(s.skill_id));
    if (skillStale) tile.append(el("div", "age", "sampled " + mss(ageSecs(s.sampled_at)) + " ago"));
    skills.append(tile);
  }
  if (!t.queues.length) queues.append(el("div", "pending", "no queue figures yet (pending)"));
  for (const q of t.queues) {
    const tile = el("div", "tile " + slClass(q.service_level) + (queueStale ? " stale" : ""));
    tile.dataset.queue = q.queue_id;
    tile.append(el("div", "name", q.name || q.queue_id), el("div", "sl", String(q.contacts_waiting)));
    const f = el("div", "figures");
    f.append(figure(q.average_wait_ms === null || q.average_wait_ms === undefined ? "–" : mss(q.average_wait_ms / 1000), "avg wait"), figure(pct(q.service_level), "SL"),
      figure(q.agents_available + "/" + q.agents_logged_on, "available / on"));
    tile.append(f);
    if (queueStale) tile.append(el("div", "age", "sampled " + mss(ageSecs(q.sampled_at)) + " ago"));
    queues.append(tile);
  }
  const notes = [healthNote(t.skills_health, "skill figures"), healthNote(t.queues_health, "queue stats")]
    .filter((n) => n && !n.endsWith("pending"));
  $("banner").hidden = !notes.length;
  $("banner").textContent = notes.join(" · ");
}

// Today's service-level curve of a skill, from the stored samples.
function midnight() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

async function loadCurves(onlyMissing) {
  if (!S.tiles) return;
  const wanted = S.tiles.skills.filter((s) => !onlyMissing || !S.curves.has(s.skill_id));
  if (!wanted.length) return;
  // Claimed before the fetches, so a message arriving meanwhile does not ask again.
  for (const s of wanted) if (!S.curves.has(s.skill_id)) S.curves.set(s.skill_id, []);
  for (const s of wanted) {
    try {
      const q = new URLSearchParams({ family: "skills", id: s.skill_id, from: midnight() });
      const response = await api(BASE + "/live/series?" + q);
      if (!response.ok) { S.curves.set(s.skill_id, []); continue; }
      const body = await response.json();
      S.curves.set(s.skill_id, (body.points || []).filter((p) => p.service_level !== null)
        .map((p) => ({ t: Date.parse(p.t), sl: p.service_level })));
    } catch (e) {
      S.curves.set(s.skill_id, []);
    }
  }
  renderTiles();
}

function extendCurve(tile) {
  if (tile.service_level === null || tile.service_level === undefined) return;
  const points = S.curves.get(tile.skill_id) || [];
  const t = Date.parse(tile.sampled_at);
  if (!points.length || points[points.length - 1].t < t) points.push({ t, sl: tile.service_level });
  S.curves.set(tile.skill_id, points);
}

function curveSvg(skillId) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 240 44");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-label", "service level today");
  const start = Date.parse(midnight());
  const day = 24 * 3600 * 1000;
  const y = (sl) => 42 - Math.max(0, Math.min(1, sl)) * 40;
  const goal = document.createElementNS(ns, "line");
  goal.setAttribute("x1", "0"); goal.setAttribute("x2", "240");
  goal.setAttribute("y1", String(y(S.thresholds.good))); goal.setAttribute("y2", String(y(S.thresholds.good)));
  svg.append(goal);
  const points = S.curves.get(skillId) || [];
  if (points.length) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p) =>
      (((p.t - start) / day) * 240).toFixed(1) + "," + y(p.sl).toFixed(1)).join(" "));
    svg.append(line);
  }
  return svg;
}

function fillFilters() {
  const teams = new Map();
  const skills = new Set();
  for (const a of S.agents.values()) {
    if (a.team_id) teams.set(a.team_id, a.team || a.team_id);
    for (const s of a.skills || []) skills.add(s);
  }
  if (S.tiles) for (const s of S.tiles.skills) skills.add(s.skill_id);
  const refill = (select, entries) => {
    const keep = select.value;
    select.replaceChildren(new Option("all", ""));
    for (const [value, label] of entries) select.append(new Option(label, value));
    select.value = keep;
  };
  refill($("filter-team"), [...teams].sort((a, b) => a[1].localeCompare(b[1])));
  const names = new Map((S.tiles ? S.tiles.skills : []).map((s) => [s.skill_id, s.skill_name]));
  refill($("filter-skill"), [...skills].sort().map((s) => [s, names.get(s) || s]));
}

function visibleAgents() {
  const team = $("filter-team").value;
  const skill = $("filter-skill").value;
  return [...S.agents.values()].filter((a) =>
    (!team || a.team_id === team) && (!skill || (a.skills || []).includes(skill)));
}

// An event naming the agent's waiting change settles it: its badge goes.
function settleDeferred(agent, deferredId) {
  if (deferredId && agent.deferred && agent.deferred.deferred_id === deferredId) agent.deferred = null;
}

function renderAgents(changedId) {
  const agents = visibleAgents().sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  const counts = new Map();
  for (const a of agents) counts.set(a.state || "UNKNOWN", (counts.get(a.state || "UNKNOWN") || 0) + 1);
  const countBox = $("counts");
  countBox.replaceChildren();
  for (const [state, n] of [...counts].sort()) {
    const c = el("div", "count", state);
    c.dataset.state = state;
    c.append(el("b", "", String(n)));
    countBox.append(c);
  }
  const grid = $("agents");
  grid.replaceChildren();
  for (const a of agents) {
    const card = el("div", "card s-" + (a.state || "UNKNOWN"));
    card.dataset.agent = a.id;
    if (S.selected.has(a.id)) card.classList.add("selected");
    if (a.id === changedId) card.classList.add("changed");
    card.append(el("div", "who", a.name || a.id), el("div", "state", a.state || "unknown"));
    const meta = el("div", "meta");
    const since = el("span", "since", "");
    since.dataset.since = a.since || "";
    meta.append(el("span", "reason", a.reason || ""), since);
    card.append(meta);
    if (a.exceptions && a.exceptions.length) {
      const severe = a.exceptions.some((e) => e.severe);
      const badge = el("span", severe ? "badge severe" : "badge", severe ? "ADH!" : "ADH");
      badge.title = a.exceptions.map((e) => e.kind + (e.severe ? " (severe)" : "")).join(", ");
      card.append(badge);
    }
    if (a.deferred) {
      const waits = el("span", "deferred", "next: " + a.deferred.to);
      waits.title = "waits for the contact to end: " + a.deferred.to + "/" + a.deferred.reason +
        ", expires " + new Date(a.deferred.expires_at).toLocaleTimeString();
      card.append(waits);
    }
    if (a.rejected) card.append(el("div", "rejected", "refused: " + a.rejected));
    // A click selects in supervisor mode and opens the agent's day otherwise; there the
    // card's own "day" button opens it.
    const day = el("button", "day-open", "day");
    day.type = "button";
    day.title = "Schedule against actual today";
    day.onclick = (e) => { e.stopPropagation(); showDay(a); };
    card.append(day);
    card.onclick = () => {
      if (!document.body.classList.contains("supervisor")) {
        if (!kiosk) showDay(a);
        return;
      }
      if (S.selected.has(a.id)) S.selected.delete(a.id); else S.selected.add(a.id);
      card.classList.toggle("selected");
      $("selection").textContent = S.selected.size + " selected";
    };
    grid.append(card);
  }
  tick();
}

function tick() {
  const now = Date.now();
  $("clock").textContent = new Date(now).toLocaleTimeString();
  for (const span of document.querySelectorAll(".since")) {
    const since = span.dataset.since;
    span.textContent = since ? mss((now - Date.parse(since)) / 1000) : "";
  }
}

// ---- supervisor mode -----------------------------------------------------------------

function addRejection(data) {
  const item = el("li", "", (agentName(data.agentId)) + " → " + data.to + ": " + data.violation);
  const list = $("rejections");
  list.prepend(item);
  while (list.children.length > 50) list.lastChild.remove();
}

function agentName(id) {
  const a = S.agents.get(id);
  return a && a.name ? a.name : id;
}

function renderJobs() {
  const box = $("jobs");
  box.replaceChildren();
  for (const job of [...S.jobs.values()].slice(-5)) {
    const done = (job.succeeded || 0) + (job.unchanged || 0) + (job.rejected || 0) + (job.failed || 0) +
      (job.cancelled || 0);
    const row = el("div", "job");
    row.dataset.job = job.job_id;
    row.dataset.status = job.status || "queued";
    const bar = el("progress");
    bar.max = job.total || 1;
    bar.value = done;
    // The whole id (they share their first characters), linked to the job on /jobs.
    const link = el("a", "mono", job.job_id);
    link.href = ROOT + "/jobs?job=" + encodeURIComponent(job.job_id);
    row.append(el("span", "", "job "), link, el("span", "", " " + (job.status || "queued") + " "), bar,
      el("span", "job-figures", " " + done + "/" + (job.total || "?") + " · ok " + ((job.succeeded || 0) + (job.unchanged || 0)) +
        " · refused " + (job.rejected || 0) + " · failed " + (job.failed || 0)));
    box.append(row);
  }
}

async function startJob() {
  const body = { state: $("bulk-state").value };
  const reason = $("bulk-reason").value.trim();
  if (reason) body.reason = reason;
  if (S.selected.size) body.agents = [...S.selected];
  else if ($("filter-team").value) body.team = $("filter-team").value;
  else return say("bulk-result", "Select agents, or a team in the filter; nothing was started.");
  if (reason && !REASON.test(reason)) {
    return say("bulk-result", "A reason code is 1 to 64 letters, digits, _ or -; nothing was started.");
  }
  say("bulk-result", "");
  const response = await api(BASE + "/bulk-transitions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    addRejection({ agentId: "job", to: body.state, violation: answer.detail || response.status });
    return;
  }
  S.jobs.set(answer.job_id, { job_id: answer.job_id, status: "queued", total: answer.total });
  S.selected.clear();
  $("selection").textContent = "0 selected";
  renderJobs();
  renderAgents();
}

// A message beside a control, for what the supervisor asked.
function say(id, text) {
  $(id).textContent = text;
}

// Excuses the selected agents (or the filtered team) from adherence from now on for the
// minutes given: that time is neither in nor out of adherence.
async function authorise() {
  const reason = $("auth-reason").value.trim();
  const minutes = Number($("auth-minutes").value);
  if (!reason) return say("auth-result", "Say why: the reason goes into the audit log. Nothing was authorised.");
  if (!(minutes >= 1)) return say("auth-result", "For how many minutes? Nothing was authorised.");
  const from = new Date();
  const body = { from: from.toISOString(), to: new Date(from.getTime() + minutes * 60000).toISOString(), reason };
  if (S.selected.size) body.agents = [...S.selected];
  else if ($("filter-team").value) body.team = $("filter-team").value;
  else return say("auth-result", "Select agents, or a team in the filter. Nothing was authorised.");
  const response = await api(BASE + "/adherence/authorisations", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  $("auth-result").textContent = response.ok
    ? "authorised " + answer.agents.length + " agent(s) until " + new Date(answer.to).toLocaleTimeString() + " (" + answer.id + ")"
    : "refused: " + (answer.detail || response.status);
  if (response.ok) $("auth-reason").value = "";
}

// ---- what the numbers mean -----------------------------------------------------------

// The definitions come from wfmd (GET …/reports/definitions?report=wallboard), the same
// source as the exports' definitions, so the page never words a figure differently.
async function showDefinitions() {
  const dialog = $("definitions");
  const body = $("definitions-body");
  body.replaceChildren(el("p", "pending", "loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    const response = await api(BASE + "/reports/definitions?report=wallboard");
    if (!response.ok) throw new Error("HTTP " + response.status);
    const d = await response.json();
    const list = el("dl");
    for (const t of d.terms) {
      const dt = el("dt", "", t.label);
      if (t.unit) dt.append(el("span", "unit", " (" + t.unit + ")"));
      list.append(dt, el("dd", "", t.definition));
    }
    list.append(el("dt", "", "Adherence rules"), el("dd", "", d.adherence_rules.summary));
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    list.append(el("dt", "", "Time zone"), el("dd", "", "The feed's times are " + d.time_zone +
      "; this page shows the clock in your browser's zone (" + zone + ") and durations as m:ss."));
    body.replaceChildren(list);
    if (d.service_levels && d.service_levels.length) {
      const table = el("table");
      const head = el("tr");
      for (const h of ["Skill", "SL threshold", "Goal", "Green at or above", "Amber at or above"]) head.append(el("th", "", h));
      table.append(head);
      for (const s of d.service_levels) {
        const row = el("tr");
        row.dataset.skill = s.skill_id;
        row.append(el("td", "", s.skill_name || s.skill_id),
          el("td", "", s.threshold_seconds === null ? "not reported by the platform" : s.threshold_seconds + " s"),
          el("td", "", s.goal === null ? "–" : pct(s.goal)),
          el("td", "", pct(s.good)), el("td", "", pct(s.warning)));
        table.append(row);
      }
      body.append(el("h3", "", "Service level per skill tile"), table);
    }
  } catch (e) {
    body.replaceChildren(el("p", "error", "cannot load the definitions: " + e.message));
  }
}

// ---- an agent's day ------------------------------------------------------------------

// Today (the browser's midnight to the next) of one agent: wfmd draws the schedule, the
// recorded states and their judgement exactly as the compliance report draws them
// (GET …/agents/{id}/adherence?format=svg), so the board and the report never disagree;
// the figures beside it come from the same judging (format=json).
async function showDay(agent) {
  const dialog = $("day");
  const body = $("day-body");
  const figures = $("day-figures");
  dialog.dataset.agent = agent.id;
  $("h-day").textContent = "Schedule against actual: " + (agent.name || agent.id);
  $("day-agent-page").href = ROOT + "/agents/" + encodeURIComponent(agent.id);
  showDayActions(agent);
  body.replaceChildren(el("p", "pending", "loading…"));
  figures.replaceChildren();
  const from = new Date();
  from.setHours(0, 0, 0, 0);
  const to = new Date(from);
  to.setDate(to.getDate() + 1);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("day-note").textContent = from.toLocaleDateString() + ", times in " + zone;
  if (!dialog.open) dialog.showModal();
  const path = BASE + "/agents/" + encodeURIComponent(agent.id) + "/adherence?";
  const query = (format) => new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), tz: zone, format });
  try {
    const [drawing, numbers] = await Promise.all([api(path + query("svg")), api(path + query("json"))]);
    if (dialog.dataset.agent !== agent.id) return;
    if (drawing.status === 404) {
      body.replaceChildren(el("p", "note", "No shift of this agent is stored for today."));
      return;
    }
    if (!drawing.ok) throw new Error("HTTP " + drawing.status);
    // Parsed as SVG, never as HTML: nothing in it can become markup of the page.
    const svg = new DOMParser().parseFromString(await drawing.text(), "image/svg+xml").documentElement;
    if (svg.namespaceURI !== "http://www.w3.org/2000/svg") throw new Error("not a drawing");
    body.replaceChildren(document.importNode(svg, true));
    if (numbers.ok) {
      const f = (await numbers.json()).figures;
      for (const [label, value] of [
        ["Adherence", f.adherence_pct === null ? "–" : f.adherence_pct.toFixed(1) + "%"],
        ["Scheduled", hm(f.scheduled_seconds)], ["In", hm(f.in_adherence_seconds)],
        ["Out", hm(f.out_of_adherence_seconds)], ["Authorised", hm(f.authorised_seconds)],
        ["Neutral", hm(f.neutral_seconds)], ["Exceptions", String(f.exceptions)],
      ]) figures.append(el("dt", "", label), el("dd", "", value));
    }
  } catch (e) {
    body.replaceChildren(el("p", "error", "cannot load the day: " + e.message));
  }
}

// The day dialog's actions: change the agent's state (now, or when its call ends), and
// the change waiting for it with its Cancel button. The feed keeps the card current;
// the dialog says what wfmd answered.
function showDayActions(agent) {
  const waiting = $("day-waiting");
  waiting.replaceChildren();
  const said = (result) => {
    $("day-answer").textContent = result.text;
    $("day-answer").className = "message " + (result.ok ? "ok" : "error");
  };
  if (agent.deferred) {
    waiting.append(waitingBadge(agent, (result) => {
      said(result);
      if (result.ok) {
        agent.deferred = null;
        showDayActions(agent);
        renderAgents();
      }
    }));
  }
  $("day-change").onclick = () => openAct(agent, (result) => {
    said(result);
    if (result.deferred) {
      agent.deferred = result.deferred;
      showDayActions(agent);
      renderAgents();
    }
  });
}

// ---- a configured board --------------------------------------------------------------

const BOARD_NAME = kiosk ? params.get("board") : null;

const B = {
  def: null, // the board's definition, when one is shown
  out: new Map(), // agent id -> its row of GET …/adherence/now, while out of adherence
  screens: [], // [{ page, items }]
  index: 0,
  due: null,
  timer: null,
};

const BOARD_TITLES = { skills: "Skills", queues: "Queues", agents: "Agents", adherence: "Out of adherence" };

// Whether `list` (ids or names, any case; empty means all) takes the thing `id` named `name`.
function inList(list, id, name) {
  if (!list.length) return true;
  const lower = (name || "").toLowerCase();
  return list.some((x) => x === id || x.toLowerCase() === lower);
}

function boardAgents() {
  return [...S.agents.values()].filter((a) => inList(B.def.teams, a.team_id, a.team));
}

function boardSkills() {
  const skills = S.tiles ? S.tiles.skills : [];
  if (B.def.skills.length) return skills.filter((s) => inList(B.def.skills, s.skill_id, s.skill_name));
  if (!B.def.teams.length) return skills;
  const theirs = new Set(boardAgents().flatMap((a) => a.skills || []));
  return skills.filter((s) => theirs.has(s.skill_id));
}

function boardQueues() {
  return (S.tiles ? S.tiles.queues : []).filter((q) => inList(B.def.queues, q.queue_id, q.name));
}

function stateCounts(agents) {
  const counts = new Map();
  for (const a of agents) counts.set(a.state || "UNKNOWN", (counts.get(a.state || "UNKNOWN") || 0) + 1);
  const box = el("div", "board-counts");
  for (const [state, n] of [...counts].sort()) {
    const c = el("div", "board-count");
    c.dataset.count = state;
    c.append(el("span", "", state), el("b", "", String(n)));
    box.append(c);
  }
  return box;
}

// How many boxes of `width` x `height` (with the 12 px gap) fit the screen below what is
// above them (`above` px of it taken).
function fitting(width, height, above) {
  const screen = $("board-screen");
  const top = screen.getBoundingClientRect().top + window.scrollY;
  const across = Math.max(1, Math.floor((screen.clientWidth + 12) / (width + 12)));
  const down = Math.max(1, Math.floor((window.innerHeight - top - above - 8 + 12) / (height + 12)));
  return across * down;
}

function chunks(page, items, size) {
  const screens = [];
  for (let i = 0; i < items.length; i += size) screens.push({ page, items: items.slice(i, i + size) });
  return screens.length ? screens : [{ page, items: [] }];
}

// The board's screens, each page cut into as many as its items need.
function boardScreens() {
  const screens = [];
  const byName = (a, b) => (a.name || a.id).localeCompare(b.name || b.id);
  for (const page of B.def.pages) {
    if (page === "skills") screens.push(...chunks(page, boardSkills(), fitting(296, 200, 0)));
    else if (page === "queues") screens.push(...chunks(page, boardQueues(), fitting(296, 200, 0)));
    else if (page === "agents") screens.push(...chunks(page, boardAgents().sort(byName), fitting(232, 64, 122)));
    else if (page === "adherence") {
      const scope = new Set(boardAgents().map((a) => a.id));
      const out = [...B.out.values()].filter((r) => scope.has(r.id))
        .sort((a, b) => Date.parse(a.out_since || 0) - Date.parse(b.out_since || 0));
      // The longest out: as many as one screen takes.
      screens.push({ page, items: out.slice(0, fitting(920, 56, 122)) });
    }
  }
  return screens;
}

// Two labelled figures side by side on a tile.
function pairOf(label, value, otherLabel, other) {
  const pair = el("div", "pair");
  for (const [l, v] of [[label, value], [otherLabel, other]]) {
    const span = el("span", "", l + " ");
    span.append(el("b", "", v));
    pair.append(span);
  }
  return pair;
}

function skillBox(s) {
  const tile = el("div", "board-tile");
  tile.dataset.skill = s.skill_id;
  tile.append(el("div", "name", s.skill_name || s.skill_id), el("div", "headline " + slClass(s.service_level), pct(s.service_level)));
  tile.append(pairOf("queued", String(s.contacts_queued), "available", s.agents_available + "/" + s.agents_staffed),
    el("div", "pair", "longest wait " + mss(s.longest_wait_secs)));
  return tile;
}

function queueBox(q) {
  const tile = el("div", "board-tile");
  tile.dataset.queue = q.queue_id;
  tile.append(el("div", "name", q.name || q.queue_id), el("div", "headline", String(q.contacts_waiting) + " waiting"));
  tile.append(pairOf("SL", pct(q.service_level), "available", q.agents_available + "/" + q.agents_logged_on),
    el("div", "pair", "average wait " +
    (q.average_wait_ms === null || q.average_wait_ms === undefined ? "–" : mss(q.average_wait_ms / 1000))));
  return tile;
}

function agentBox(a) {
  const card = el("div", "board-card s-" + (a.state || "UNKNOWN"));
  card.dataset.agent = a.id;
  const since = el("span", "since");
  since.dataset.since = a.since || "";
  const what = el("div", "what", (a.state || "unknown") + (a.reason ? " " + a.reason : "") + " · ");
  what.append(since);
  card.append(el("div", "name", a.name || a.id), what);
  return card;
}

function outBox(row) {
  const line = el("div", "board-out");
  line.dataset.agent = row.id;
  const since = el("b", "since");
  since.dataset.since = row.out_since || "";
  line.append(el("span", "name", row.name || row.id), el("span", "", (row.state || "") + " · " + (row.scheduled || "off shift")));
  if (row.severe) line.append(el("span", "severe-mark", "SEVERE"));
  line.append(since);
  return line;
}

function drawBoard() {
  B.screens = boardScreens();
  if (B.index >= B.screens.length) B.index = 0;
  const shown = B.screens[B.index];
  const box = $("board-screen");
  const items = [];
  if (shown.page === "agents" || shown.page === "adherence") items.push(stateCounts(boardAgents()));
  const draw = { skills: skillBox, queues: queueBox, agents: agentBox, adherence: outBox }[shown.page];
  items.push(...shown.items.map(draw));
  if (shown.page === "adherence" && !shown.items.length) items.push(el("p", "board-message", "Everyone is in adherence."));
  box.replaceChildren(...items);
  const ofPage = B.screens.filter((s) => s.page === shown.page);
  const part = ofPage.length > 1 ? " (" + (ofPage.indexOf(shown) + 1) + " of " + ofPage.length + ")" : "";
  $("board-title").textContent = B.def.name + ": " + BOARD_TITLES[shown.page] + part;
  $("board-pager").textContent = B.screens.length > 1 ? "screen " + (B.index + 1) + " of " + B.screens.length : "";
  document.body.dataset.boardScreen = (B.index + 1) + "/" + B.screens.length;
  tick();
}

// Drawn again at most every half second as the feed brings news.
function boardSoon() {
  if (B.due) return;
  B.due = setTimeout(() => {
    B.due = null;
    drawBoard();
  }, 500);
}

function boardHeard(message) {
  if (message.type === "adherence.changed") {
    if (message.data.verdict === "out") B.out.set(message.data.id, message.data);
    else B.out.delete(message.data.id);
  }
  boardSoon();
}

async function loadOut() {
  const answer = await call(BASE + "/adherence/now");
  if (!answer.ok) return;
  B.out = new Map(answer.body.agents.filter((r) => r.verdict === "out").map((r) => [r.id, r]));
  boardSoon();
}

// Shows the board `?board=` names, or says there is none of that name.
function startBoard() {
  const all = JSON.parse($("board-definitions").dataset.boards || "[]");
  document.body.classList.add("on-board");
  $("board").hidden = false;
  B.def = all.find((b) => b.name === BOARD_NAME) || null;
  if (!B.def) {
    $("board-title").textContent = "No board " + JSON.stringify(BOARD_NAME);
    $("board-screen").replaceChildren(el("p", "board-message", all.length
      ? "wfmd has no board named " + BOARD_NAME + ". Its boards: " + all.map((b) => b.name).join(", ") + "."
      : "wfmd has no boards configured ([[boards]] in its configuration)."));
    return;
  }
  if (B.def.pages.includes("adherence")) {
    loadOut();
    // `adherence.changed` is not replayed: after a reconnection the rows are read again.
    FEED.onOpen = loadOut;
  }
  window.addEventListener("resize", boardSoon);
  B.timer = setInterval(() => {
    if (B.screens.length < 2) return;
    B.index = (B.index + 1) % B.screens.length;
    drawBoard();
  }, B.def.rotate_ms);
  drawBoard();
}

// ---- start ---------------------------------------------------------------------------

function setup() {
  if (kiosk) document.body.classList.add("kiosk");
  $("supervisor-toggle").onclick = () => {
    const on = document.body.classList.toggle("supervisor");
    $("supervisor-toggle").setAttribute("aria-pressed", String(on));
    $("supervisor").hidden = !on;
  };
  $("select-visible").onclick = () => {
    for (const a of visibleAgents()) S.selected.add(a.id);
    $("selection").textContent = S.selected.size + " selected";
    renderAgents();
  };
  $("select-none").onclick = () => {
    S.selected.clear();
    $("selection").textContent = "0 selected";
    renderAgents();
  };
  $("bulk-start").onclick = startJob;
  $("auth-start").onclick = authorise;
  $("definitions-toggle").onclick = showDefinitions;
  $("filter-team").onchange = () => renderAgents();
  $("filter-skill").onchange = () => { renderAgents(); renderTiles(); };
  setInterval(tick, 1000);
  setInterval(renderTiles, 5000);
  setInterval(loadCurves, 5 * 60 * 1000);
}

// ---- several tenants -----------------------------------------------------------------

// The page at / when wfmd serves several tenants: a link to each board the token may see.
async function pick() {
  document.body.classList.add("picking");
  $("picker").hidden = false;
  const list = $("tenants");
  list.replaceChildren();
  for (const t of await tenants()) {
    const item = el("li", t.ready ? "ready" : "unready");
    item.dataset.tenant = t.id;
    const link = el("a", "", t.name);
    link.href = "/t/" + encodeURIComponent(t.id) + "/" + (kiosk ? "?kiosk=1" : "");
    item.append(link, el("span", "id", t.id),
      el("span", "readiness", t.ready ? "ready" : "not ready" + (t.reason ? ": " + t.reason : "")));
    list.append(item);
  }
  if (!list.children.length) list.append(el("li", "pending", "this token sees no tenant"));
}

// A tenant's board is titled with its name.
async function nameTenant() {
  const t = (await tenants()).find((t) => t.id === TENANT);
  const name = t ? t.name : TENANT;
  $("tenant-name").textContent = name;
  document.title = name + " · wfmd wallboard";
}

async function main() {
  setup();
  if (BOARD_NAME !== null) startBoard();
  // The first read also tells whether a session is needed (a 401 goes to sign in).
  try {
    const response = await api(BASE + "/live");
    if (response.ok) {
      const snapshot = await response.json();
      FEED.deliver({ type: "snapshot", id: snapshot.last_event_id, data: snapshot });
    } else if (!TENANT && response.status === 400) {
      const problem = await response.json().catch(() => ({}));
      if (problem.tenants) return pick();
    } else if (response.status === 404) {
      // An id not served, or one this token does not hold: the API tells them apart
      // for nobody, and neither does the page.
      $("banner").hidden = false;
      $("banner").textContent = "No tenant " + TENANT + " here. All boards: /";
      FEED.show("stale", "no such tenant");
      return;
    }
  } catch (e) {
    console.error(e);
  }
  if (TENANT) nameTenant().catch((e) => console.error(e));
  FEED.start();
}

main();
