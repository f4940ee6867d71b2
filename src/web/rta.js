// Real-time adherence (`/rta`): one row per agent from GET …/adherence/now, kept live
// by the feed's `adherence.changed` events (each carries one row) with no polling;
// out of adherence first, longest out first, then everyone else by name.
//
// Built for thousands of rows: the first list is built once into a fragment; after
// that an event touches only its own row's cells, and a row whose place in the order
// changes (its verdict, or when it went out) is moved, not the list redrawn. The
// filters (team, skill, verdict, name) only hide rows, and live in the URL query
// (`?team=&skill=&verdict=out|severe|in|all&q=`) so a filtered view can be shared.
// The summary widgets come from GET …/adherence/summary, asked again at most once a
// minute while rows change.
"use strict";

const R = {
  rows: new Map(), // id -> the row as the API (or the feed) gave it
  views: new Map(), // id -> { tr, cells, key }
  deferred: new Map(), // id -> the change waiting for the agent (the feed's)
  teams: new Map(),
  order: [], // ids in display order
  loading: null,
  pending: [], // feed messages that came while the list loaded
  skills: new Map(), // agent id -> skill ids (from the feed's snapshot)
  skillNames: new Map(),
  scope: null, // with a skill filter: the ids GET …/adherence/now?skill= gives
  opens: 0,
  summaryAt: 0,
  summaryDue: null,
};

const FILTERS = ["team", "skill", "verdict", "q"];

// ---- ordering ------------------------------------------------------------------------

const isOut = (row) => row.verdict === "out";
// One collator for every comparison: `localeCompare` builds one per call, which makes
// sorting thousands of names take seconds.
const byName = new Intl.Collator().compare;

function compare(a, b) {
  const ao = isOut(a);
  const bo = isOut(b);
  if (ao !== bo) return ao ? -1 : 1;
  if (ao) {
    const at = a.out_since ? Date.parse(a.out_since) : Infinity;
    const bt = b.out_since ? Date.parse(b.out_since) : Infinity;
    if (at !== bt) return at < bt ? -1 : 1;
  }
  return byName(a.name || a.id, b.name || b.id) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

// What decides a row's place: when it changes, the row moves.
const placeKey = (row) => (isOut(row) ? "out " + row.out_since : "in") + " " + (row.name || row.id);

// ---- one row -------------------------------------------------------------------------

// The cells of a row, in the columns' order.
const COLUMNS = ["agent", "team", "state", "reason", "since", "scheduled", "verdict", "outSince", "outFor", "waiting", "act"];

// A row's element is copied from this one (its cells, the link, the state and verdict
// marks and the button in place): cheaper than building each from scratch.
const ROW = (() => {
  const tr = el("div", "rta-row");
  tr.setAttribute("role", "row");
  for (const name of COLUMNS) {
    const cell = el("div", name === "outFor" ? "num" : name === "act" ? "action" : "");
    cell.setAttribute("role", "cell");
    tr.append(cell);
  }
  const [agent, , state, , , , verdict, , , , act] = tr.children;
  agent.append(el("a"));
  state.append(el("span", "state-name"));
  verdict.append(el("span", "verdict"), el("span", "severe-mark", "SEVERE"));
  const button = el("button", "action change", "Change…");
  button.type = "button";
  act.append(button);
  return tr;
})();

function buildRow(row) {
  const tr = ROW.cloneNode(true);
  tr.dataset.agent = row.id;
  const cells = {};
  COLUMNS.forEach((name, i) => { cells[name] = tr.children[i]; });
  const view = { tr, cells, key: {} };
  fillRow(view, row);
  return view;
}

// One listener for every row's button.
function changeClicked(event) {
  const button = event.target.closest("button.change");
  if (!button) return;
  const current = R.rows.get(button.closest(".rta-row").dataset.agent);
  openAct({ id: current.id, name: current.name, state: current.state, reason: current.reason,
    deferred: R.deferred.get(current.id) || null }, (result) => {
    if (result.deferred) setDeferred(current.id, result.deferred);
    if (result.cancelled) setDeferred(current.id, null);
  });
}

// Writes what changed of `row` into its cells (each only when what it shows changes).
function fillRow(view, row) {
  const { tr, cells, key } = view;
  const changed = (name, value) => {
    if (key[name] === value) return false;
    key[name] = value;
    return true;
  };
  const name = row.name || row.id;
  if (changed("agent", name)) {
    const link = cells.agent.firstChild;
    link.textContent = name;
    link.href = ROOT + "/agents/" + encodeURIComponent(row.id);
    cells.act.firstChild.setAttribute("aria-label", "Change the state of " + name);
  }
  if (changed("team", row.team || row.team_id || "")) cells.team.textContent = row.team || row.team_id || "–";
  if (changed("state", row.state || "")) {
    const mark = cells.state.firstChild;
    mark.className = "state-name s-" + (row.state || "UNKNOWN");
    mark.textContent = row.state || "unknown";
  }
  if (changed("reason", row.reason || "")) cells.reason.textContent = row.reason || "";
  if (changed("since", row.since || "")) {
    cells.since.textContent = clock(row.since);
    cells.since.title = row.since ? dateTime(row.since) : "";
  }
  if (changed("scheduled", row.scheduled || "")) cells.scheduled.textContent = row.scheduled || "not scheduled";
  const out = isOut(row);
  if (changed("verdict", (row.verdict || "") + (row.severe ? " severe" : ""))) {
    const [badge, severe] = cells.verdict.children;
    badge.className = "verdict v-" + (row.verdict || "unscheduled");
    badge.textContent = VERDICTS[row.verdict] || row.verdict || "–";
    severe.hidden = !(out && row.severe);
  }
  if (changed("outSince", out ? row.out_since || "" : "")) {
    cells.outSince.textContent = out ? clock(row.out_since) : "";
    cells.outFor.textContent = out ? mss(secondsSince(row.out_since)) : "";
  }
  const deferred = R.deferred.get(row.id);
  if (changed("waiting", deferred ? deferred.deferred_id : "")) {
    cells.waiting.replaceChildren();
    if (deferred) {
      cells.waiting.append(waitingBadge({ id: row.id, name: row.name, deferred }, (result) => {
        say(result.text, result.ok);
        if (result.ok) setDeferred(row.id, null);
      }));
    }
  }
  tr.classList.toggle("out", out);
  tr.classList.toggle("severe", out && !!row.severe);
}

// ---- the list ------------------------------------------------------------------------

function say(text, ok) {
  const message = $("message");
  message.textContent = text;
  message.className = "message " + (ok === false ? "error" : "");
}

// The whole list, drawn once from the rows loaded.
function drawAll() {
  const fragment = document.createDocumentFragment();
  R.views.clear();
  R.order = [...R.rows.values()].sort(compare).map((row) => row.id);
  for (const id of R.order) {
    const view = buildRow(R.rows.get(id));
    R.views.set(id, view);
    fragment.append(view.tr);
  }
  $("rows").replaceChildren(fragment);
  fillTeams();
  applyFilters();
}

// Where `row` belongs in `R.order` (which does not hold it): binary search.
function placeOf(row) {
  let low = 0;
  let high = R.order.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (compare(R.rows.get(R.order[mid]), row) < 0) low = mid + 1;
    else high = mid;
  }
  return low;
}

// One row as it now is: drawn in place, moved when its place changed, added when new.
function update(row) {
  const known = R.rows.get(row.id);
  let view = R.views.get(row.id);
  const moved = !known || placeKey(known) !== placeKey(row);
  if (known && moved) R.order.splice(R.order.indexOf(row.id), 1);
  R.rows.set(row.id, row);
  if (!view) {
    view = buildRow(row);
    R.views.set(row.id, view);
    if (!R.teams.has(row.team_id)) fillTeams();
  } else {
    fillRow(view, row);
  }
  if (moved) {
    const at = placeOf(row);
    R.order.splice(at, 0, row.id);
    const next = R.order[at + 1];
    $("rows").insertBefore(view.tr, next ? R.views.get(next).tr : null);
    view.tr.classList.remove("changed");
    // Restarts the highlight on a row that moved.
    void view.tr.offsetWidth;
    view.tr.classList.add("changed");
  }
  view.tr.hidden = !visible(row);
  count();
}

function setDeferred(id, deferred) {
  if (deferred) R.deferred.set(id, deferred);
  else R.deferred.delete(id);
  const view = R.views.get(id);
  if (view) fillRow(view, R.rows.get(id));
}

// ---- filters -------------------------------------------------------------------------

function filters() {
  return {
    team: $("team").value,
    skill: $("skill").value,
    verdict: $("verdict").value,
    q: $("q").value.trim().toLowerCase(),
  };
}

function visible(row, f = filters()) {
  if (f.team && row.team_id !== f.team) return false;
  if (f.skill && !(R.scope ? R.scope.has(row.id) : (R.skills.get(row.id) || []).includes(f.skill))) return false;
  if (f.verdict === "out" && !isOut(row)) return false;
  if (f.verdict === "severe" && !(isOut(row) && row.severe)) return false;
  if (f.verdict === "in" && row.verdict !== "in") return false;
  if (f.q && !(row.name || row.id).toLowerCase().includes(f.q) && !row.id.toLowerCase().includes(f.q)) return false;
  return true;
}

function applyFilters() {
  const f = filters();
  for (const [id, view] of R.views) view.tr.hidden = !visible(R.rows.get(id), f);
  count();
}

function count() {
  let shown = 0;
  let out = 0;
  for (const [id, view] of R.views) {
    if (view.tr.hidden) continue;
    shown += 1;
    if (isOut(R.rows.get(id))) out += 1;
  }
  $("shown").textContent = shown + " of " + R.rows.size + " agents shown · " + out + " out of adherence";
}

// The filters as the URL query says them (values not offered yet are added, so a
// shared link keeps its team or skill until the lists arrive).
function readQuery() {
  const q = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const value = q.get(name);
    if (value === null) continue;
    const control = $(name);
    if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === value)) {
      if (name === "verdict") {
        $("filter-message").textContent = "Unknown verdict filter `" + value +
          "`: showing everyone (the filter takes out, severe, in or all).";
        continue;
      }
      control.append(new Option(value, value));
    }
    control.value = value;
  }
}

function writeQuery() {
  const f = { team: $("team").value, skill: $("skill").value, verdict: $("verdict").value, q: $("q").value.trim() };
  const q = new URLSearchParams();
  for (const name of FILTERS) if (f[name] && !(name === "verdict" && f[name] === "all")) q.set(name, f[name]);
  const text = q.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
}

function fillTeams() {
  const teams = new Map();
  for (const row of R.rows.values()) if (row.team_id) teams.set(row.team_id, row.team || row.team_id);
  R.teams = teams;
  refill($("team"), [...teams].sort((a, b) => byName(a[1], b[1])));
}

function fillSkills() {
  const ids = new Set(R.skillNames.keys());
  for (const skills of R.skills.values()) for (const s of skills) ids.add(s);
  refill($("skill"), [...ids].map((id) => [id, R.skillNames.get(id) || id]).sort((a, b) => byName(a[1], b[1])));
}

function refill(select, entries) {
  const keep = select.value;
  select.replaceChildren(new Option("all", ""));
  for (const [value, label] of entries) select.append(new Option(label, value));
  if (keep && ![...select.options].some((o) => o.value === keep)) select.append(new Option(keep, keep));
  select.value = keep;
}

// With a skill chosen, the API says who has it (the rows carry no skills).
async function loadScope() {
  const skill = $("skill").value;
  R.scope = null;
  if (!skill) return applyFilters();
  const answer = await call(BASE + "/adherence/now?" + new URLSearchParams({ skill }));
  if (answer.ok) R.scope = new Set(answer.body.agents.map((a) => a.id));
  else $("filter-message").textContent = "Cannot filter by skill: " + problemText(answer);
  applyFilters();
}

// ---- loading -------------------------------------------------------------------------

async function load() {
  let done;
  R.loading = new Promise((resolve) => { done = resolve; });
  try {
    const answer = await call(BASE + "/adherence/now");
    if (answer.status === 400 && answer.body && answer.body.tenants) {
      chooseTenant($("content"), answer.body.tenants, "Real-time adherence");
      return false;
    }
    if (answer.status === 404) {
      say(TENANT ? "No tenant " + TENANT + " here (or this wfmd has no real-time adherence)." :
        "This wfmd does not offer real-time adherence (GET …/adherence/now answered 404).", false);
      return false;
    }
    if (!answer.ok) {
      say("Cannot load the agents: " + problemText(answer), false);
      return false;
    }
    R.rows = new Map(answer.body.agents.map((row) => [row.id, row]));
    drawAll();
    say(R.rows.size ? "" : "No agent is in scope.");
    return true;
  } finally {
    R.loading = null;
    done();
    const pending = R.pending;
    R.pending = [];
    for (const message of pending) handle(message);
  }
}

async function loadSummary() {
  R.summaryAt = Date.now();
  const q = new URLSearchParams({ tz: ZONE });
  if ($("team").value) q.set("team", $("team").value);
  const answer = await call(BASE + "/adherence/summary?" + q);
  const box = $("summary");
  if (!answer.ok) {
    box.replaceChildren(el("p", "note", "No summary: " + problemText(answer)));
    return;
  }
  const periods = answer.body.periods;
  box.replaceChildren();
  for (const [key, title] of [["today", "Today"], ["yesterday", "Yesterday"], ["week_to_date", "Week to date"],
    ["month_to_date", "Month to date"]]) {
    const p = periods[key];
    if (!p) continue;
    const widget = el("div", "widget");
    widget.dataset.period = key;
    widget.append(el("h3", "", title), el("div", "big", percent(p.adherence_pct)),
      el("div", "small", "scheduled " + hm(p.scheduled_seconds) + " · in " + hm(p.in_seconds) + " · out " +
        hm(p.out_seconds)),
      el("div", "small", "authorised " + hm(p.authorised_seconds) + " · neutral " + hm(p.neutral_seconds)));
    box.append(widget);
  }
}

// The summary moves with the rows: asked again once a minute at most while they change.
function summaryLater() {
  if (R.summaryDue) return;
  const wait = Math.max(0, R.summaryAt + 60000 - Date.now());
  R.summaryDue = setTimeout(() => {
    R.summaryDue = null;
    loadSummary();
  }, wait);
}

// ---- the feed ------------------------------------------------------------------------

function handle(message) {
  if (R.loading && message.type !== "snapshot") {
    R.pending.push(message);
    return;
  }
  const data = message.data;
  switch (message.type) {
    case "snapshot":
      R.skills = new Map(data.agents.map((a) => [a.id, a.skills || []]));
      R.skillNames = new Map((data.skills || []).map((s) => [s.skill_id, s.skill_name || s.skill_id]));
      R.deferred = new Map(data.agents.filter((a) => a.deferred).map((a) => [a.id, a.deferred]));
      for (const [id, view] of R.views) fillRow(view, R.rows.get(id));
      fillSkills();
      break;
    case "adherence.changed": {
      const row = data && data.id ? data : data && (data.row || data.agent);
      if (row && row.id) {
        update(Object.assign({}, row));
        summaryLater();
      }
      break;
    }
    case "agent.state_changed": {
      const row = R.rows.get(data.agentId);
      if (!row) break;
      settle(data);
      update(Object.assign({}, row, { state: data.to, reason: data.reasonCode || null,
        since: data.changedAt || message.timestamp || row.since }));
      break;
    }
    case "transition.deferred":
      setDeferred(data.agentId, { deferred_id: data.deferredId, to: data.to, reason: data.reasonCode,
        expires_at: data.expiresAt });
      break;
    case "transition.expired":
    case "transition.cancelled":
    case "transition.rejected":
      settle(data);
      break;
  }
}

// An event naming the agent's waiting change settles it: its badge goes.
function settle(data) {
  const waiting = R.deferred.get(data.agentId);
  if (waiting && data.deferredId && waiting.deferred_id === data.deferredId) setDeferred(data.agentId, null);
}

const FEED = new Feed(handle, () => {
  // A reconnection may have missed events: the list is read again.
  R.opens += 1;
  if (R.opens > 1) {
    load();
    loadSummary();
  }
});

// Once a second: the clock and the durations of those out of adherence.
function tick() {
  $("clock").textContent = new Date().toLocaleTimeString();
  const now = Date.now();
  for (const id of R.order) {
    const row = R.rows.get(id);
    if (!isOut(row)) break;
    const view = R.views.get(id);
    if (view && row.out_since) view.cells.outFor.textContent = mss((now - Date.parse(row.out_since)) / 1000);
  }
}

async function main() {
  readQuery();
  for (const name of FILTERS) {
    const control = $(name);
    control.addEventListener(name === "q" ? "input" : "change", () => {
      writeQuery();
      if (name === "skill") loadScope();
      else applyFilters();
      if (name === "team") loadSummary();
    });
  }
  $("filters").onsubmit = (event) => event.preventDefault();
  $("rows").addEventListener("click", changeClicked);
  setInterval(tick, 1000);
  FEED.start();
  const loaded = await load();
  if (loaded) {
    if ($("skill").value) await loadScope();
    loadSummary();
  }
  tick();
  markReady();
}

main();
