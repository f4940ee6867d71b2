// Adherence exceptions to review (`/exceptions`): the list from GET …/adherence/exceptions
// with its filters (which, team, review, a window of days) kept in the URL query; each
// exception excused or upheld with a note through POST …/exceptions/{id}/review, where
// an exception reviewed already offers to replace its review (the API's 409 says so,
// and only an explicit `replace` changes it). The list is read again when the feed says
// an exception opened, changed or was reviewed (`adherence.exception`,
// `adherence.exception_reviewed`), so it never polls: the route is the list's one
// source, which keeps filters, order and reviews exactly as the API has them.
// Below, the authorisations overlapping the same window, each with its Withdraw, and a
// form authorising a range of a team's time (agents are authorised one by one on their
// own pages).
"use strict";

const X = {
  agents: new Map(), // id -> { id, name, team_id, team } from the live snapshot
  shown: new Map(), // id -> the exception as last listed
  reviewing: null, // the exception the dialog reviews
  loads: 0,
  due: null,
};

const NOTE_LIMIT = 1000;
const FILTERS = ["state", "team", "review", "from", "to"];
const KINDS = {
  working_in_mandatory_break: "working in a mandatory break",
  logged_in_outside_shift: "logged in outside the shift",
  not_working_in_shift: "not working in the shift",
  out_of_rule: "refused by an adherence rule",
};

function tell(id, text, ok) {
  $(id).textContent = text;
  $(id).className = "message" + (ok === undefined ? "" : ok ? " ok" : " error");
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function dayAfter(day) {
  return isoDay(new Date(Date.parse(day + "T00:00:00Z") + 86400000));
}

// ---- the filters ---------------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  $("f-state").value = q.get("state") || "all";
  $("f-review").value = q.get("review") || "";
  $("f-from").value = q.get("from") || isoDay(new Date(Date.now() - 6 * 86400000));
  $("f-to").value = q.get("to") || isoDay(new Date());
  X.team = q.get("team") || "";
}

function fillTeams() {
  const teams = new Map();
  for (const a of X.agents.values()) if (a.team_id) teams.set(a.team_id, a.team || a.team_id);
  const sorted = [...teams].sort((a, b) => a[1].localeCompare(b[1]));
  const select = $("f-team");
  select.replaceChildren(new Option("every team", ""));
  for (const [id, name] of sorted) select.append(new Option(name, id));
  if (X.team && !teams.has(X.team)) select.append(new Option(X.team, X.team));
  select.value = X.team;
  const target = $("auth-team");
  const keep = target.value;
  target.replaceChildren(new Option("choose…", ""));
  for (const [id, name] of sorted) target.append(new Option(name, id));
  target.value = keep;
}

// The filters as the API takes them, or `{error}` for a window that is no window.
function chosen() {
  const from = $("f-from").value;
  const to = $("f-to").value;
  if (!from || !to) return { error: "Choose both days of the window; nothing was loaded." };
  if (to < from) return { error: "The window ends (" + to + ") before it begins (" + from + "); nothing was loaded." };
  return { state: $("f-state").value, team: $("f-team").value, review: $("f-review").value, from, to };
}

// ---- the list ------------------------------------------------------------------------

async function load() {
  const f = chosen();
  if (f.error) {
    tell("list-message", f.error, false);
    $("f-to").focus();
    return;
  }
  X.team = f.team;
  const url = new URLSearchParams();
  for (const name of FILTERS) if (f[name] && !(name === "state" && f[name] === "all")) url.set(name, f[name]);
  history.replaceState(null, "", location.pathname + (url.toString() ? "?" + url : ""));
  const api = new URLSearchParams({ state: f.state, from: f.from, to: dayAfter(f.to) });
  if (f.team) api.set("team", f.team);
  if (f.review) api.set("review", f.review);
  const load = ++X.loads;
  const answer = await call(BASE + "/adherence/exceptions?" + api);
  if (load !== X.loads) return;
  if (!answer.ok) {
    tell("list-message", "Cannot load the exceptions: " + problemText(answer), false);
    return;
  }
  draw(answer.body.exceptions);
  await loadAuthorisations(api);
}

async function loadAuthorisations(window) {
  const answer = await call(BASE + "/adherence/authorisations?" +
    new URLSearchParams({ from: window.get("from"), to: window.get("to") }));
  const box = $("authorisations");
  if (!answer.ok) {
    box.replaceChildren(el("p", "note", "Cannot load the authorisations: " + problemText(answer)));
    return;
  }
  const list = answer.body.authorisations;
  box.replaceChildren(list.length ? authorisationsTable(list, (done) => { if (done.ok) load(); })
    : el("p", "note", "None in this window."));
}

async function authoriseTeam(event) {
  event.preventDefault();
  if (!$("auth-team").value) {
    $("auth-message").textContent = "Choose the team to authorise; nothing was sent.";
    $("auth-message").className = "message error";
    $("auth-team").focus();
    return;
  }
  $("auth-send").disabled = true;
  try {
    if ((await authorise({ team: $("auth-team").value })).ok) await load();
  } finally {
    $("auth-send").disabled = false;
  }
}

// Lists again once the feed has said what changed, at most once a second.
function loadSoon() {
  if (X.due) return;
  X.due = setTimeout(() => {
    X.due = null;
    load();
  }, 1000);
}

function agentLink(id) {
  const a = X.agents.get(id);
  const link = el("a", "", a && a.name ? a.name : id);
  link.href = ROOT + "/agents/" + encodeURIComponent(id);
  return link;
}

function reviewText(review) {
  if (!review) return el("span", "dim", "not reviewed");
  const span = el("span");
  span.append(el("span", "decision-" + review.decision, review.decision), document.createTextNode(
    " by " + review.by + ", " + dateTime(review.at) + (review.note ? ": " + review.note : "")));
  return span;
}

function draw(list) {
  X.shown = new Map(list.map((e) => [e.id, e]));
  const body = $("rows");
  const fragment = document.createDocumentFragment();
  for (const e of list) {
    const row = el("tr");
    row.dataset.exception = e.id;
    row.dataset.review = e.review ? e.review.decision : "pending";
    row.insertCell().append(agentLink(e.agent_id));
    row.insertCell().textContent = KINDS[e.kind] || e.kind;
    row.insertCell().textContent = dateTime(e.started_at || e.opened_at);
    row.insertCell().textContent = e.closed_at ? dateTime(e.closed_at) : "open";
    const severe = row.insertCell();
    if (e.severe_at) severe.append(el("span", "severe-mark", "SEVERE"), document.createTextNode(" " + clock(e.severe_at)));
    row.insertCell().append(reviewText(e.review));
    const act = row.insertCell();
    act.className = "action";
    const button = el("button", "action review", e.review ? "Review again…" : "Review…");
    button.type = "button";
    button.dataset.exception = e.id;
    button.setAttribute("aria-label", (e.review ? "Review again" : "Review") + " the exception of " +
      (X.agents.get(e.agent_id) || {}).name + " begun " + dateTime(e.started_at || e.opened_at));
    act.append(button);
    fragment.append(row);
  }
  body.replaceChildren(fragment);
  tell("list-message", list.length ? list.length + " exception(s)" + (list.length >= 1000 ? " (the newest 1,000)" : "") + "."
    : "No exception matches.");
}

// ---- reviewing -----------------------------------------------------------------------

function openReview(id) {
  const e = X.shown.get(id);
  if (!e) return;
  X.reviewing = e;
  const who = X.agents.get(e.agent_id);
  $("review-what").textContent = (who && who.name ? who.name : e.agent_id) + ": " + (KINDS[e.kind] || e.kind) +
    ", from " + dateTime(e.started_at || e.opened_at) + (e.closed_at ? " to " + dateTime(e.closed_at) : ", still open") + ".";
  $("review-note").value = "";
  $("review-replace").hidden = true;
  tell("review-answer", "");
  countNote();
  $("review").showModal();
  $("review-form").querySelector("input[name=decision]:checked").focus();
}

function countNote() {
  const length = $("review-note").value.length;
  $("review-count").textContent = length + " of 1,000 characters" +
    (length > NOTE_LIMIT ? ": " + (length - NOTE_LIMIT) + " too many" : "");
  $("review-count").className = length > NOTE_LIMIT ? "error" : "dim";
}

async function sendReview(replace) {
  const e = X.reviewing;
  const note = $("review-note").value;
  if (note.length > NOTE_LIMIT) {
    tell("review-answer", "The note has " + note.length + " characters, over its limit of 1,000; nothing was sent.", false);
    $("review-note").focus();
    return;
  }
  const decision = $("review-form").querySelector("input[name=decision]:checked").value;
  const body = { decision, note };
  if (replace) body.replace = true;
  $("review-send").disabled = true;
  tell("review-answer", "sending…");
  try {
    const answer = await call(BASE + "/adherence/exceptions/" + encodeURIComponent(e.id) + "/review", { method: "POST", json: body });
    if (answer.ok) {
      $("review-replace").hidden = true;
      tell("review-answer", decision === "excused"
        ? "Excused: its time counts as authorised in every report from now on." : "Upheld: it counts as out of adherence.", true);
      X.shown.set(e.id, answer.body);
      load();
    } else if (answer.status === 409 && answer.body && answer.body.exception) {
      const had = answer.body.exception.review;
      tell("review-answer", "Reviewed already: " + had.decision + " by " + had.by + " " + dateTime(had.at) +
        ". Replace that review with this one?", false);
      $("review-replace").hidden = false;
      $("review-replace").focus();
    } else {
      tell("review-answer", (answer.status === 404 ? "No such exception any more." : problemText(answer)) + " Nothing was changed.", false);
    }
  } catch (err) {
    tell("review-answer", "Cannot reach wfmd: " + err.message, false);
  } finally {
    $("review-send").disabled = false;
  }
}

// ---- the feed ------------------------------------------------------------------------

function handle(message) {
  switch (message.type) {
    case "snapshot":
      X.agents = new Map(message.data.agents.map((a) => [a.id, a]));
      fillTeams();
      break;
    case "adherence.exception":
    case "adherence.exception_reviewed":
      loadSoon();
      break;
  }
}

// A reconnection may have missed events: the list is read again.
const FEED = new Feed(handle, loadSoon);

async function main() {
  readUrl();
  $("filters").onsubmit = (event) => { event.preventDefault(); load(); };
  for (const id of ["f-state", "f-team", "f-review"]) $(id).onchange = load;
  $("rows").onclick = (event) => {
    const button = event.target.closest("button.review");
    if (button) openReview(button.dataset.exception);
  };
  $("review-note").oninput = countNote;
  $("authorise").onsubmit = authoriseTeam;
  $("review-form").onsubmit = (event) => { event.preventDefault(); sendReview(false); };
  $("review-replace").onclick = () => sendReview(true);
  $("review-close").onclick = () => $("review").close();
  const live = await call(BASE + "/live");
  if (live.status === 400 && live.body && live.body.tenants) {
    chooseTenant($("content"), live.body.tenants, "Exceptions");
    return markReady();
  }
  if (live.ok) handle({ type: "snapshot", data: live.body });
  else fillTeams();
  FEED.start();
  await load();
  markReady();
}

main();
