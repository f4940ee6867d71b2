// One agent (`/agents/{id}`): what it does now, with the actions (change the state now
// or when the call ends, cancel the change waiting for it); its schedule against what
// it did for a chosen day of the last 31 (GET …/agents/{id}/adherence, drawn here full
// width in three lanes with a now marker); the day's history (GET …/history), its
// adherence exceptions and the authorisations covering it, with a form authorising a
// range of the agent's time, past ranges too. The feed keeps the "now" part current and
// redraws today's day as it changes.
"use strict";

const AGENT_ID = decodeURIComponent(location.pathname.replace(/^.*\/agents\//, ""));
// The oldest day offered: the API's windows reach 31 days back.
const DAYS_BACK = 31;

const A = {
  agent: null, // from the live snapshot
  deferred: null,
  day: null, // { from: Date, to: Date }
  spans: [],
  dayLoads: 0,
  redrawDue: null,
};

// ---- days ----------------------------------------------------------------------------

function isoDate(date) {
  return date.getFullYear() + "-" + String(date.getMonth() + 1).padStart(2, "0") + "-" +
    String(date.getDate()).padStart(2, "0");
}

function midnight(date) {
  const d = new Date(date);
  d.setHours(0, 0, 0, 0);
  return d;
}

function addDays(date, days) {
  const d = new Date(date);
  d.setDate(d.getDate() + days);
  return d;
}

const today = () => midnight(new Date());
const oldest = () => addDays(today(), -DAYS_BACK);

// The day the date field names, or why it cannot be shown.
function chosenDay() {
  const value = $("day").value;
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (!match) return { error: "Pick a day (year-month-day)." };
  const from = new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
  if (isNaN(from) || isoDate(from) !== value) return { error: "There is no day " + value + "." };
  if (from > today()) return { error: value + " has not come yet: pick today or a day before." };
  if (from < oldest()) return { error: value + " is more than " + DAYS_BACK + " days back: pick " + isoDate(oldest()) + " or later." };
  return { from, to: addDays(from, 1) };
}

function dayQuery(params) {
  return new URLSearchParams(Object.assign({ from: A.day.from.toISOString(), to: A.day.to.toISOString() }, params || {}));
}

// ---- now -----------------------------------------------------------------------------

function showNow() {
  const a = A.agent;
  if (!a) return;
  $("agent-name").textContent = a.name || a.id;
  document.title = (a.name || a.id) + " · wfmd";
  $("agent-state").replaceChildren(stateName(a.state, a.reason));
  $("agent-since").textContent = a.since ? "since " + dateTime(a.since) : "";
  $("agent-team").textContent = a.team || a.team_id ? "team " + (a.team || a.team_id) : "";
  const box = $("agent-exceptions");
  box.replaceChildren();
  for (const e of a.exceptions || []) {
    box.append(verdictBadge("out"), document.createTextNode(" " + e.kind.replace(/_/g, " ") + " since " + clock(e.since) + " "));
    if (e.severe) box.append(el("span", "severe-mark", "SEVERE"));
  }
  showWaiting();
}

function showWaiting() {
  const box = $("waiting");
  box.replaceChildren();
  if (!A.deferred) return;
  box.append(waitingBadge({ id: AGENT_ID, name: A.agent && A.agent.name, deferred: A.deferred }, (result) => {
    tellAct(result);
    if (result.ok) {
      A.deferred = null;
      showWaiting();
    }
  }));
}

function tellAct(result) {
  $("act-message").textContent = result.text;
  $("act-message").className = "message " + (result.ok ? "ok" : "error");
}

async function loadDeferred() {
  const answer = await call(BASE + "/agents/" + encodeURIComponent(AGENT_ID) + "/deferred");
  A.deferred = answer.ok ? answer.body : null;
  showWaiting();
}

// ---- the day -------------------------------------------------------------------------

// Back-to-back spans merged where what `key` gives is the same.
function runs(spans, key) {
  const out = [];
  for (const s of spans) {
    const k = key(s);
    const last = out[out.length - 1];
    if (last && last.key === k && last.end === s.start) last.end = s.end;
    else out.push({ key: k, start: s.start, end: s.end, span: s });
  }
  return out;
}

const EXPECTED = {
  WORK: "work",
  MANDATORY_BREAK: "mandatory break",
  OPTIONAL_BREAK: "break",
  OFF_SHIFT: "off shift",
};

// The stretch of the day worth drawing: from an hour before the first scheduled or
// recorded activity to an hour after the last (the whole day when asked, or when
// there is none).
function drawnWindow() {
  const from = A.day.from.getTime();
  const to = A.day.to.getTime();
  if ($("whole-day").checked) return [from, to];
  const busy = A.spans.filter((s) => s.expected !== "OFF_SHIFT" || (s.state && s.state !== "LOGGED_OUT"));
  if (!busy.length) return [from, to];
  const hour = 3600000;
  const start = Math.max(from, Math.floor((Date.parse(busy[0].start) - hour) / hour) * hour);
  const end = Math.min(to, Math.ceil((Date.parse(busy[busy.length - 1].end) + hour) / hour) * hour);
  return [start, end];
}

function drawDay() {
  const [start, end] = drawnWindow();
  const width = end - start;
  const at = (t) => ((Date.parse(t) - start) / width) * 100;
  const timeline = $("timeline");
  timeline.replaceChildren();
  const lane = (label, items, classes, text, describe) => {
    const row = el("div", "lane");
    row.append(el("span", "lane-label", label));
    for (const item of items) {
      const left = Math.max(0, at(item.start));
      const right = Math.min(100, at(item.end));
      if (right <= left) continue;
      const cls = classes(item);
      if (cls === null) continue;
      const bar = el("div", "bar " + cls);
      bar.style.left = left + "%";
      bar.style.width = right - left + "%";
      const words = text(item);
      bar.title = describe(item) + ", " + clock(item.start) + "–" + clock(item.end);
      // A label only where it fits; the title and the table below say it anyway.
      if (right - left > 4) bar.textContent = words;
      row.append(bar);
    }
    timeline.append(row);
  };
  lane("Schedule", runs(A.spans, (s) => s.expected + "|" + (s.title || "")),
    (r) => (r.span.expected === "OFF_SHIFT" ? null : "outline-schedule " + r.span.expected),
    (r) => r.span.title || EXPECTED[r.span.expected] || r.span.expected,
    (r) => "scheduled: " + (r.span.title || EXPECTED[r.span.expected] || r.span.expected));
  lane("State", runs(A.spans, (s) => (s.state || "") + "|" + (s.reason || "")),
    (r) => (r.span.state ? "fill-state s-" + r.span.state : null),
    (r) => r.span.state + (r.span.reason ? " " + r.span.reason : ""),
    (r) => "state: " + r.span.state + (r.span.reason ? " (" + r.span.reason + ")" : ""));
  lane("Adherence", runs(A.spans, (s) => s.judged),
    (r) => (r.span.judged === "off_shift" ? null : "fill-verdict v-" + r.span.judged),
    (r) => VERDICTS[r.span.judged] || r.span.judged,
    (r) => "adherence: " + (VERDICTS[r.span.judged] || r.span.judged));
  const axis = el("div", "axis");
  const hour = 3600000;
  const step = width > 12 * hour ? 2 * hour : hour;
  for (let t = Math.ceil(start / hour) * hour; t <= end; t += step) {
    const tick = el("span", "tick", CLOCK.format(new Date(t)));
    tick.style.left = ((t - start) / width) * 100 + "%";
    axis.append(tick);
  }
  timeline.append(axis);
  const now = Date.now();
  timeline.classList.toggle("has-now", now >= start && now <= end);
  if (now >= start && now <= end) {
    const marker = el("div", "now-marker");
    marker.id = "now-marker";
    // Measured from the lanes' left edge, past their labels.
    marker.style.left = "calc(7.5rem + (100% - 7.5rem) * " + (now - start) / width + ")";
    marker.append(el("span", "", "now " + CLOCK.format(new Date(now))));
    timeline.append(marker);
  }
  timeline.setAttribute("aria-label", "Schedule, state and adherence from " + CLOCK.format(new Date(start)) +
    " to " + CLOCK.format(new Date(end)) + "; the table below lists every stretch");
  drawSpansTable();
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const group = (title, entries) => {
    const g = el("div", "group");
    g.append(el("b", "", title));
    for (const [cls, text] of entries) {
      const item = el("span");
      item.append(el("span", "swatch " + cls), document.createTextNode(text));
      g.append(item);
    }
    legend.append(g);
  };
  group("Schedule:", [["outline-schedule WORK", "work"], ["outline-schedule MANDATORY_BREAK", "break"]]);
  group("State:", ["READY", "ON_CONTACT", "ACW", "NOT_READY", "PAUSED", "IDLE", "LOGGED_OUT"]
    .map((s) => ["fill-state s-" + s, s]));
  group("Adherence:", ["in", "out", "neutral", "authorised", "unobserved"]
    .map((v) => ["fill-verdict v-" + v, VERDICTS[v]]));
}

// `table`'s head row of column headers `titles` (an empty title is read out as `hidden`).
function tableHead(table, titles, hidden) {
  const head = table.createTHead().insertRow();
  for (const title of titles) {
    const th = el("th", "", title);
    th.scope = "col";
    if (!title) th.append(el("span", "visually-hidden", hidden));
    head.append(th);
  }
}

function drawSpansTable() {
  const table = $("spans");
  table.replaceChildren();
  tableHead(table, ["From", "To", "Scheduled", "State", "Reason", "Adherence"]);
  const body = table.createTBody();
  for (const s of A.spans) {
    if (s.expected === "OFF_SHIFT" && !s.state) continue;
    const row = body.insertRow();
    row.dataset.judged = s.judged;
    for (const text of [clock(s.start), clock(s.end), s.title || EXPECTED[s.expected] || s.expected,
      s.state || "–", s.reason || "", VERDICTS[s.judged] || s.judged]) row.insertCell().textContent = text;
  }
}

function drawFigures(f) {
  const figures = $("figures");
  figures.replaceChildren();
  if (!f) return;
  for (const [label, value] of [
    ["Adherence", percent(f.adherence_pct)], ["Scheduled", hm(f.scheduled_seconds)],
    ["In", hm(f.in_adherence_seconds)], ["Out", hm(f.out_of_adherence_seconds)],
    ["Authorised", hm(f.authorised_seconds)], ["Neutral", hm(f.neutral_seconds)],
    ["Unobserved", hm(f.unobserved_seconds)], ["Exceptions", String(f.exceptions)],
  ]) figures.append(el("dt", "", label), el("dd", "", value));
}

function sayDay(text, ok) {
  $("day-message").textContent = text;
  $("day-message").className = "message " + (ok === false ? "error" : "");
}

// Shows the day the field names (a bad one is said, and what is shown stays).
async function showDay() {
  const day = chosenDay();
  if (day.error) {
    sayDay(day.error + " Nothing else changed.", false);
    return;
  }
  A.day = day;
  const q = new URLSearchParams(location.search);
  if (isoDate(day.from) === isoDate(today())) q.delete("day");
  else q.set("day", isoDate(day.from));
  const text = q.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
  $("day-next").disabled = day.from >= today();
  $("day-prev").disabled = day.from <= oldest();
  sayDay("loading…");
  const load = ++A.dayLoads;
  const path = BASE + "/agents/" + encodeURIComponent(AGENT_ID);
  const [drawing, historyAnswer, exceptions, authorisations] = await Promise.all([
    call(path + "/adherence?" + dayQuery({ tz: ZONE, format: "json" })),
    call(path + "/history?" + dayQuery()),
    call(BASE + "/adherence/exceptions?" + dayQuery({ state: "all" })),
    call(BASE + "/adherence/authorisations?" + dayQuery()),
  ]);
  if (load !== A.dayLoads) return;
  if (drawing.ok) {
    A.spans = drawing.body.spans;
    drawDay();
    drawFigures(drawing.body.figures);
    sayDay("");
  } else {
    A.spans = [];
    $("timeline").replaceChildren();
    $("spans").replaceChildren();
    drawFigures(null);
    sayDay(drawing.status === 404 ? "No shift of this agent is stored around " + isoDate(day.from) + "." :
      "Cannot load the day: " + problemText(drawing), drawing.status === 404 ? undefined : false);
  }
  drawHistory(historyAnswer);
  drawExceptions(exceptions);
  drawAuthorisations(authorisations);
}

function drawHistory(answer) {
  const table = $("history");
  table.replaceChildren();
  if (!answer.ok) {
    $("history-totals").textContent = "Cannot load the history: " + problemText(answer);
    return;
  }
  const h = answer.body;
  const totals = Object.entries(h.time_in_state_ms || {}).filter(([, ms]) => ms > 0)
    .map(([state, ms]) => state + " " + hm(ms / 1000));
  $("history-totals").textContent = h.intervals.length
    ? "Time in each state: " + totals.join(" · ") + "; idle " + hm(h.idle_ms / 1000) + "."
    : "No state was recorded for this agent on this day.";
  if (!h.intervals.length) return;
  tableHead(table, ["From", "To", "State", "Reason", "By", "Lasted"]);
  const body = table.createTBody();
  for (const i of h.intervals) {
    const row = body.insertRow();
    row.insertCell().textContent = dateTime(i.started_at);
    row.insertCell().textContent = i.ended_at ? dateTime(i.ended_at) : "now";
    row.insertCell().append(stateName(i.state));
    row.insertCell().textContent = i.reason || "";
    row.insertCell().textContent = i.origin;
    const lasted = ((i.ended_at ? Date.parse(i.ended_at) : Date.now()) - Date.parse(i.started_at)) / 1000;
    const cell = row.insertCell();
    cell.className = "num";
    cell.textContent = mss(lasted);
  }
}

function drawExceptions(answer) {
  const box = $("exceptions");
  if (!answer.ok) {
    // Without the list of exceptions (an older wfmd), the open ones the feed knows.
    const open = (A.agent && A.agent.exceptions) || [];
    box.replaceChildren(el("p", "note", answer.status === 404
      ? "This wfmd lists no exceptions; open now: " + (open.length ? open.map((e) => e.kind).join(", ") : "none") + "."
      : "Cannot load the exceptions: " + problemText(answer)));
    return;
  }
  const mine = (answer.body.exceptions || []).filter((e) => e.agent_id === AGENT_ID);
  if (!mine.length) {
    box.replaceChildren(el("p", "note", "None on this day."));
    return;
  }
  const table = el("table", "grid");
  tableHead(table, ["Kind", "Opened", "Closed", "Severe", "Review"]);
  const body = table.createTBody();
  for (const e of mine) {
    const row = body.insertRow();
    row.dataset.exception = e.id;
    row.insertCell().textContent = e.kind.replace(/_/g, " ");
    row.insertCell().textContent = dateTime(e.opened_at);
    row.insertCell().textContent = e.closed_at ? dateTime(e.closed_at) : "open";
    const severe = row.insertCell();
    if (e.severe_at) severe.append(el("span", "severe-mark", "SEVERE"), document.createTextNode(" " + clock(e.severe_at)));
    row.insertCell().textContent = e.review ? e.review.decision + " by " + e.review.by + (e.review.note ? ": " + e.review.note : "") : "pending";
  }
  box.replaceChildren(table);
}

function drawAuthorisations(answer) {
  const box = $("authorisations");
  if (!answer.ok) {
    box.replaceChildren(el("p", "note", "Cannot load the authorisations: " + problemText(answer)));
    return;
  }
  const mine = answer.body.authorisations.filter((a) => a.agents.includes(AGENT_ID));
  box.replaceChildren(mine.length ? authorisationsTable(mine, (done) => { if (done.ok) showDay(); }) : el("p", "note", "None."));
}

// Authorises the agent for the range of the form, past or future; its day is then shown,
// with the new authorisation among those covering it.
async function authoriseAgent(event) {
  event.preventDefault();
  const button = $("auth-send");
  button.disabled = true;
  try {
    const done = await authorise({ agents: [AGENT_ID] });
    if (done.ok) {
      $("day").value = isoDate(new Date(done.body.from));
      await showDay();
    }
  } finally {
    button.disabled = false;
  }
}

// Today's day changes as the agent works: drawn again after a change, at most twice a
// minute; the now marker moves every 30 s in any case.
function redrawSoon() {
  if (!A.day || isoDate(A.day.from) !== isoDate(today()) || A.redrawDue) return;
  A.redrawDue = setTimeout(() => {
    A.redrawDue = null;
    showDay();
  }, 30000);
}

// ---- the feed ------------------------------------------------------------------------

function handle(message) {
  const data = message.data;
  switch (message.type) {
    case "snapshot": {
      const agent = data.agents.find((a) => a.id === AGENT_ID);
      if (agent) {
        A.agent = agent;
        showNow();
      }
      break;
    }
    case "agent.state_changed":
      if (data.agentId !== AGENT_ID || !A.agent) break;
      Object.assign(A.agent, { state: data.to, reason: data.reasonCode || null,
        since: data.changedAt || message.timestamp });
      if (A.deferred && data.deferredId === A.deferred.deferred_id) A.deferred = null;
      showNow();
      redrawSoon();
      break;
    case "transition.deferred":
      if (data.agentId !== AGENT_ID) break;
      A.deferred = { deferred_id: data.deferredId, to: data.to, reason: data.reasonCode, expires_at: data.expiresAt };
      showWaiting();
      break;
    case "transition.expired":
    case "transition.cancelled":
    case "transition.rejected":
      if (data.agentId !== AGENT_ID || !A.deferred || data.deferredId !== A.deferred.deferred_id) break;
      A.deferred = null;
      showWaiting();
      break;
    case "adherence.exception":
    case "adherence.changed":
      if ((data.agentId || data.id) === AGENT_ID) redrawSoon();
      break;
  }
}

const FEED = new Feed(handle);

async function main() {
  const q = new URLSearchParams(location.search);
  $("day").min = isoDate(oldest());
  $("day").max = isoDate(today());
  $("day").value = q.get("day") || isoDate(today());
  $("day-zone").textContent = "times in " + ZONE;
  drawLegend();
  const live = await call(BASE + "/live");
  if (live.status === 400 && live.body && live.body.tenants) {
    chooseTenant($("content"), live.body.tenants, "This agent's page");
    return markReady();
  }
  if (live.status === 404) {
    $("message").textContent = "No tenant " + TENANT + " here.";
    $("message").className = "message error";
    return markReady();
  }
  A.agent = live.ok ? live.body.agents.find((a) => a.id === AGENT_ID) || null : null;
  if (!A.agent) {
    // An unknown agent: said, and nothing else is asked for it.
    $("agent-name").textContent = AGENT_ID;
    $("message").textContent = "wfmd keeps no agent " + AGENT_ID + " (not among the agents it manages).";
    $("message").className = "message error";
    for (const id of ["now", "day-section"]) $(id).hidden = true;
    return markReady();
  }
  showNow();
  $("change").onclick = () => openAct({ id: AGENT_ID, name: A.agent.name, state: A.agent.state,
    reason: A.agent.reason, deferred: A.deferred }, (result) => {
    tellAct(result);
    if (result.deferred) A.deferred = result.deferred;
    if (result.cancelled) A.deferred = null;
    showWaiting();
  });
  const go = (days) => {
    const day = chosenDay();
    const from = day.error ? today() : day.from;
    $("day").value = isoDate(addDays(from, days));
    showDay();
  };
  $("day-prev").onclick = () => go(-1);
  $("day-next").onclick = () => go(1);
  $("day-today").onclick = () => { $("day").value = isoDate(today()); showDay(); };
  $("day").onchange = showDay;
  $("whole-day").onchange = () => { if (A.spans.length) drawDay(); };
  $("day-form").onsubmit = (event) => { event.preventDefault(); showDay(); };
  $("authorise").onsubmit = authoriseAgent;
  setInterval(() => { if (A.spans.length && A.day && isoDate(A.day.from) === isoDate(today())) drawDay(); }, 30000);
  FEED.start();
  await Promise.all([loadDeferred(), showDay()]);
  markReady();
}

main();
