// The console's shared script, the first of each page's two: what every page does alike.
// - Where it is: `/` or `/t/{tenant}/…` (wfmd writes the root, the tenant, the caller's
//   role and whether tokens are configured into <body>'s data attributes), and so which
//   API it reads (`/v1` or `/v1/tenants/{tenant}`).
// - The API client: the session cookie goes with every request (the page never holds a
//   token); a 401 sends the browser to the sign-in page, which brings it back here.
// - The live feed: WebSocket first, Server-Sent Events when the upgrade fails,
//   reconnecting with backoff and resuming after the last event seen; the connection
//   state is always shown, and a feed that hears nothing is dropped and opened again.
// - Formatting, and the words for states, verdicts, violations and outcomes.
// - The dialog that changes one agent's state, now or when its call ends, and cancels a
//   change waiting for it.
// - Authorising a range of time (checked before sending) and the table of
//   authorisations with their Withdraw.
// Its top-level names are the page scripts' to use; a page script defines none of them.
"use strict";

const PAGE = document.body.dataset;
const ROOT = PAGE.root || "";
const TENANT = PAGE.tenant || null;
const BASE = TENANT ? "/v1/tenants/" + TENANT : "/v1";
// The role of the caller the page's own request proved ("" when it proved none yet).
const ROLE = PAGE.role || "";
// Tokens are configured: the API wants a session, and the feed a ticket.
const SIGN_IN = PAGE.auth === "tokens";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
};

// ---- who may act ---------------------------------------------------------------------

function mayAct() {
  return document.body.classList.contains("can-act");
}

// A 403 to an action means the role is too weak, whatever the page thought: the action
// controls go.
function noActions() {
  document.body.classList.remove("can-act");
}

// ---- the API -------------------------------------------------------------------------

// Where a request that needs a session goes: the sign-in page, told to come back here.
function signIn() {
  const here = location.pathname + location.search + location.hash;
  location.assign(ROOT + "/sign-in?next=" + encodeURIComponent(here));
}

// `fetch` of an API path with the session cookie; `json` (when given) is sent as the
// body. A 401 leaves for the sign-in page (the promise then never settles).
async function api(path, options = {}) {
  const init = { method: options.method || "GET", credentials: "same-origin", headers: { accept: "application/json" } };
  Object.assign(init.headers, options.headers || {});
  if (options.json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  if (options.body !== undefined) init.body = options.body;
  if (options.signal) init.signal = options.signal;
  const response = await fetch(path, init);
  if (response.status === 401) {
    signIn();
    return new Promise(() => {});
  }
  if (response.status === 403 && init.method !== "GET") noActions();
  return response;
}

// `api`, its answer read: `{status, ok, body}` with the parsed JSON (or null).
async function call(path, options) {
  const response = await api(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  return { status: response.status, ok: response.ok, body };
}

// What an answer that is not a success says, in words for the page.
function problemText(answer) {
  const body = answer.body || {};
  if (answer.status === 403) return "Your role may not do this (" + (body.detail || "forbidden") + ").";
  if (answer.status === 409 && body.violation) return "Refused: " + violationText(body.violation) + ".";
  if (answer.status === 400 && body.tenants) return "Choose a tenant first.";
  const detail = body.detail || body.title || "";
  return "HTTP " + answer.status + (detail ? ": " + detail : "");
}

// At `/` with several tenants the API asks which: the page offers the same page for each.
function chooseTenant(container, tenants, what) {
  const list = el("ul", "chooser");
  const path = location.pathname.replace(/^\/+/, "");
  for (const t of tenants) {
    const item = el("li");
    const link = el("a", "", what + " of " + t);
    link.href = "/t/" + encodeURIComponent(t) + "/" + path + location.search;
    item.append(link);
    list.append(item);
  }
  container.replaceChildren(el("p", "", "wfmd serves several tenants here; choose one:"), list);
}

// ---- words ---------------------------------------------------------------------------

const SETTABLE = ["READY", "NOT_READY", "PAUSED", "IDLE", "LOGGED_OUT"];

// Why a change was refused: the violation's name and what it means.
const VIOLATIONS = {
  AGENT_NOT_SCHEDULED: "the agent is not scheduled now; only LOGGED_OUT is allowed",
  MANDATORY_BREAK_VIOLATION: "the agent is in a mandatory break and may not be made READY",
  STATE_CONFLICT: "the agent's current state does not allow it (on a contact or in after-contact work)",
  AGENT_LOGGED_OUT: "the agent is logged out on the platform; no state can be set until it logs in",
};

function violationText(violation) {
  return (VIOLATIONS[violation] || "refused") + " (" + violation + ")";
}

const VERDICTS = {
  in: "in adherence",
  out: "out of adherence",
  neutral: "neutral",
  authorised: "authorised",
  unscheduled: "not scheduled",
  unobserved: "no state recorded",
  off_shift: "off shift",
  out_off_shift: "logged in off shift",
};

function verdictBadge(verdict) {
  return el("span", "verdict v-" + (verdict || "unscheduled"), VERDICTS[verdict] || verdict || "–");
}

function stateName(state, reason) {
  const span = el("span", "state-name s-" + (state || "UNKNOWN"), state || "unknown");
  if (reason) span.append(el("span", "dim", " " + reason));
  return span;
}

const OUTCOMES = {
  pending: "waiting to start",
  deferred: "waiting for the call to end",
  succeeded: "changed",
  unchanged: "already so",
  rejected: "refused",
  failed: "failed",
  cancelled: "cancelled",
};

// ---- formatting ----------------------------------------------------------------------

// A duration in seconds as m:ss, or h:mm:ss from an hour on.
function mss(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return "–";
  secs = Math.max(0, Math.floor(secs));
  const h = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = String(secs % 60).padStart(2, "0");
  return h ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
}

// A duration in seconds as h:mm h.
function hm(secs) {
  const m = Math.round((secs || 0) / 60);
  return Math.floor(m / 60) + ":" + String(m % 60).padStart(2, "0") + " h";
}

function percent(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + " %";
}

// Formatters made once: `toLocale…String` with options builds one per call, which
// costs seconds over thousands of rows.
const CLOCK = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat([], { dateStyle: "short", timeStyle: "short" });

function clock(at) {
  return at ? CLOCK.format(new Date(at)) : "–";
}

function dateTime(at) {
  return at ? DATE_TIME.format(new Date(at)) : "–";
}

function secondsSince(at) {
  return at ? (Date.now() - Date.parse(at)) / 1000 : null;
}

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

// ---- the live feed -------------------------------------------------------------------

// One connection to the tenant's feed; `onMessage` gets each message, `onOpen` runs on
// every (re)connection, before the messages it brings.
class Feed {
  constructor(onMessage, onOpen) {
    this.onMessage = onMessage;
    this.onOpen = onOpen || (() => {});
    this.lastId = null;
    this.lastHeard = 0;
    this.connected = false;
    this.delay = 1000;
    this.nextTry = 0;
    this.socket = null;
    this.sse = null;
    // The feed's heartbeat period; a snapshot says what it is.
    this.heartbeatSecs = 15;
  }

  start() {
    this.connect();
    setInterval(() => this.check(), 1000);
  }

  show(state, text) {
    const conn = $("conn");
    if (!conn) return;
    conn.dataset.state = state;
    conn.textContent = text;
  }

  async ticket() {
    // Without tokens the API is open (loopback) and needs no ticket.
    if (!SIGN_IN) return null;
    const response = await api(BASE + "/live/tickets", { method: "POST" });
    if (!response.ok) throw new Error("no ticket: " + response.status);
    return (await response.json()).ticket;
  }

  query(ticket) {
    const q = new URLSearchParams();
    if (ticket) q.set("ticket", ticket);
    if (this.lastId) q.set("last_event_id", this.lastId);
    const text = q.toString();
    return text ? "?" + text : "";
  }

  opened() {
    this.connected = true;
    this.delay = 1000;
    this.lastHeard = Date.now();
    this.show("live", "live");
    try { this.onOpen(); } catch (e) { console.error(e); }
  }

  lost(why) {
    if (!this.connected && this.nextTry > Date.now()) return;
    this.connected = false;
    this.socket = null;
    this.sse = null;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, 30000);
    this.nextTry = Date.now() + wait;
    console.info("feed lost:", why, "next try in", wait, "ms");
    setTimeout(() => this.connect(), wait);
    this.showReconnecting();
  }

  drop() {
    const socket = this.socket;
    const sse = this.sse;
    this.socket = null;
    this.sse = null;
    if (socket) socket.close();
    if (sse) sse.abort();
  }

  showReconnecting() {
    if (this.connected) return;
    const left = Math.max(0, Math.ceil((this.nextTry - Date.now()) / 1000));
    this.show("reconnecting", "reconnecting — next try in " + left + " s");
  }

  deliver(message) {
    this.lastHeard = Date.now();
    if (message.id) this.lastId = message.id;
    if (message.type === "snapshot") {
      if (message.data.last_event_id) this.lastId = message.data.last_event_id;
      if (message.data.periods) this.heartbeatSecs = message.data.periods.heartbeat_secs || 15;
    }
    try { this.onMessage(message); } catch (e) { console.error(e); }
  }

  async connect() {
    this.nextTry = 0;
    this.show("reconnecting", "reconnecting — trying now");
    let first;
    try {
      first = await this.ticket();
    } catch (e) {
      return this.lost(e.message);
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(scheme + "//" + location.host + BASE + "/ws" + this.query(first));
    } catch (e) {
      return this.openSse();
    }
    this.socket = socket;
    let wasOpen = false;
    socket.onopen = () => { wasOpen = true; this.opened(); };
    socket.onmessage = (event) => {
      this.lastHeard = Date.now();
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return console.error(e); }
      this.deliver(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      if (!wasOpen) return this.openSse();
      this.lost("websocket closed " + event.code + " " + event.reason);
    };
  }

  // Server-Sent Events through fetch, so the ticket and Last-Event-ID are ours to send
  // and heartbeat comments count as signs of life.
  async openSse() {
    let second;
    try {
      second = await this.ticket();
    } catch (e) {
      return this.lost(e.message);
    }
    const controller = new AbortController();
    this.sse = controller;
    const headers = {};
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let response;
    try {
      response = await fetch(BASE + "/events" + this.query(second), { headers, signal: controller.signal });
    } catch (e) {
      return this.lost("events: " + e.message);
    }
    if (!response.ok || !response.body) return this.lost("events: " + response.status);
    this.opened();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.lastHeard = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, cut).replace(/\r$/, "");
          buffer = buffer.slice(cut + 1);
          if (line === "") {
            if (data.length) {
              let message = null;
              try { message = JSON.parse(data.join("\n")); } catch (e) { console.error(e); }
              if (message) this.deliver(message);
            }
            data = [];
          } else if (line.startsWith("data:")) {
            data.push(line.slice(5).replace(/^ /, ""));
          }
        }
      }
    } catch (e) {
      // The connection dropped.
    }
    if (this.sse === controller) this.lost("events ended");
  }

  // Once a second: a connection that stays silent is dead however it looks (a
  // half-open TCP connection, a proxy holding the stream), so it is dropped and
  // opened again; before that it is shown as stale.
  check() {
    const now = Date.now();
    if (this.connected) {
      const silent = now - this.lastHeard;
      if (silent > 3 * this.heartbeatSecs * 1000) {
        this.drop();
        this.lost("nothing heard for " + Math.round(silent / 1000) + " s");
      } else if (silent > 2 * this.heartbeatSecs * 1000) {
        this.show("stale", "stale — nothing heard for " + mss(silent / 1000));
      } else {
        this.show("live", "live");
      }
    } else if (this.nextTry) {
      this.showReconnecting();
    }
  }
}

// ---- changing one agent's state ------------------------------------------------------

// How long a change may wait for the call to end, as the API takes it.
const WAITS = [["5m", "5 minutes"], ["15m", "15 minutes"], ["30m", "30 minutes"], ["1h", "1 hour"], ["2h", "2 hours"]];

function describeWaiting(deferred) {
  return "waits for the call to end: " + deferred.to + (deferred.reason ? " (" + deferred.reason + ")" : "") +
    ", until " + clock(deferred.expires_at || deferred.expiresAt);
}

// The change waiting for `agent` (with `deferred` set) and its Cancel button: `after` is
// told the answer to a cancellation, `{ok, text}`.
function waitingBadge(agent, after) {
  const box = el("span", "waiting");
  box.dataset.deferred = agent.deferred.deferred_id || "";
  box.append(el("span", "", describeWaiting(agent.deferred)));
  const cancel = el("button", "action cancel-deferred", "Cancel");
  cancel.type = "button";
  cancel.setAttribute("aria-label", "Cancel the waiting change of " + (agent.name || agent.id));
  cancel.onclick = async () => {
    cancel.disabled = true;
    after(await cancelDeferred(agent.id));
    cancel.disabled = false;
  };
  box.append(cancel);
  return box;
}

async function cancelDeferred(agentId) {
  const answer = await call(BASE + "/agents/" + encodeURIComponent(agentId) + "/deferred", { method: "DELETE" });
  if (answer.status === 204) return { ok: true, cancelled: true, text: "The waiting change is cancelled." };
  if (answer.status === 404) return { ok: false, text: "No change waits for this agent any more." };
  return { ok: false, text: problemText(answer) };
}

// The answer to a change, in words: `{ok, text, deferred?}`.
function describeChange(answer) {
  const body = answer.body || {};
  if (answer.status === 200) {
    return { ok: true, text: "Done: now " + body.to + " (" + body.reason + ")" +
      (body.replayed ? ", as asked before." : ", in " + body.latency_ms + " ms.") };
  }
  if (answer.status === 202) {
    return { ok: true, deferred: body, text: "The agent is busy: the change " + describeWaiting(body) + "." };
  }
  if (answer.status === 404) return { ok: false, text: "No such agent: " + (body.detail || "the platform does not know it") + "." };
  return { ok: false, text: problemText(answer) };
}

const REASON = /^[A-Za-z0-9_-]{1,64}$/;

let actDialog = null;

// Opens the dialog that changes `agent`'s state (`{id, name, state, deferred}`); `after`
// is told each answer (`{ok, text, deferred?}`) once shown in the dialog.
function openAct(agent, after) {
  if (!actDialog) actDialog = buildAct();
  const d = actDialog;
  d.agent = agent;
  d.after = after || (() => {});
  d.heading.textContent = "Change the state of " + (agent.name || agent.id);
  d.current.replaceChildren(el("span", "dim", "Now: "), stateName(agent.state, agent.reason));
  d.answer.textContent = "";
  d.answer.className = "message";
  d.showWaiting();
  if (!d.dialog.open) d.dialog.showModal();
  d.state.focus();
}

function buildAct() {
  const dialog = el("dialog", "act");
  dialog.id = "act";
  dialog.setAttribute("aria-labelledby", "act-heading");
  const form = el("form");
  form.method = "dialog";
  const heading = el("h2", "", "Change the state");
  heading.id = "act-heading";
  const current = el("p");
  const waiting = el("p");
  waiting.id = "act-waiting";
  const state = el("select");
  state.id = "act-state";
  for (const s of SETTABLE) state.append(new Option(s, s));
  state.value = "NOT_READY";
  const reason = el("input");
  reason.id = "act-reason";
  reason.placeholder = "the state's default";
  reason.maxLength = 64;
  reason.autocomplete = "off";
  const stateLabel = el("label", "", "State ");
  stateLabel.append(state);
  const reasonLabel = el("label", "", "Reason ");
  reasonLabel.append(reason);
  const when = el("fieldset");
  when.append(el("legend", "", "When"));
  const radio = (value, text, checked) => {
    const label = el("label");
    const input = el("input");
    input.type = "radio";
    input.name = "act-when";
    input.value = value;
    input.checked = checked;
    label.append(input, document.createTextNode(text));
    return label;
  };
  const now = radio("now", "Now (refused while on a contact)", true);
  const later = radio("defer", "When the call ends", false);
  const wait = el("select");
  wait.id = "act-wait";
  for (const [value, text] of WAITS) wait.append(new Option(text, value));
  wait.value = "15m";
  const waitLabel = el("label", "", "waiting at most ");
  waitLabel.append(wait);
  when.append(now, el("br"), later, waitLabel);
  const answer = el("p", "message");
  answer.id = "act-answer";
  answer.setAttribute("role", "status");
  answer.setAttribute("aria-live", "polite");
  const submit = el("button", "primary", "Change");
  submit.type = "submit";
  submit.value = "change";
  const close = el("button", "", "Close");
  close.type = "button";
  close.onclick = () => dialog.close();
  const buttons = el("div", "buttons");
  buttons.append(close, submit);
  form.append(heading, current, waiting, stateLabel, reasonLabel, when, answer, buttons);
  dialog.append(form);
  document.body.append(dialog);
  const d = { dialog, heading, current, state, reason, wait, answer, agent: null, after: null };
  const say = (result) => {
    answer.textContent = result.text;
    answer.className = "message " + (result.ok ? "ok" : "error");
    d.after(result);
  };
  d.showWaiting = () => {
    waiting.replaceChildren();
    if (d.agent.deferred) {
      waiting.append(waitingBadge(d.agent, (result) => {
        if (result.ok) d.agent.deferred = null;
        say(result);
        d.showWaiting();
      }));
    }
  };
  form.onsubmit = async (event) => {
    event.preventDefault();
    const text = reason.value.trim();
    if (text && !REASON.test(text)) {
      say({ ok: false, text: "A reason code is 1 to 64 letters, digits, _ or -; nothing was changed." });
      reason.focus();
      return;
    }
    const body = { state: state.value };
    if (text) body.reason = text;
    if (form.querySelector("input[name=act-when]:checked").value === "defer") {
      body.when_busy = "defer";
      body.defer_for = wait.value;
    }
    submit.disabled = true;
    answer.textContent = "sending…";
    answer.className = "message";
    try {
      const result = describeChange(await call(BASE + "/agents/" + encodeURIComponent(d.agent.id) + "/transitions",
        { method: "POST", json: body }));
      if (result.deferred) d.agent.deferred = result.deferred;
      say(result);
      d.showWaiting();
    } catch (e) {
      say({ ok: false, text: "Cannot reach wfmd: " + e.message });
    } finally {
      submit.disabled = false;
    }
  };
  return d;
}

// ---- authorising time ----------------------------------------------------------------

// The authorisation form every page that has one shares (`auth-from`, `auth-to` as
// datetime-local fields, `auth-reason`, `auth-message`): its range checked here first,
// so a range that ends before it begins is said and nothing is sent. `target` is
// `{agents: [...]}` or `{team}`; the answer is `{ok, body?}`, already said in the page.
async function authorise(target) {
  const say = (text, ok) => {
    $("auth-message").textContent = text;
    $("auth-message").className = "message " + (ok ? "ok" : "error");
    return { ok };
  };
  const fromText = $("auth-from").value;
  const toText = $("auth-to").value;
  const reason = $("auth-reason").value.trim();
  if (!fromText || !toText) return say("Give when the authorised time begins and when it ends; nothing was sent.", false);
  const from = new Date(fromText);
  const to = new Date(toText);
  if (isNaN(from) || isNaN(to)) return say("Give each time as a day and an hour; nothing was sent.", false);
  if (to <= from) {
    $("auth-to").focus();
    return say("The time ends (" + dateTime(to) + ") before it begins (" + dateTime(from) + "): " +
      "give an end after the beginning; nothing was sent.", false);
  }
  if (!reason || reason.length > 500) {
    $("auth-reason").focus();
    return say("Say why in 1 to 500 characters; nothing was sent.", false);
  }
  const answer = await call(BASE + "/adherence/authorisations", { method: "POST",
    json: Object.assign({ from: from.toISOString(), to: to.toISOString(), reason }, target) });
  if (!answer.ok) return say(problemText(answer) + " Nothing was authorised.", false);
  say("Authorised " + answer.body.agents.length + " agent(s) from " + dateTime(answer.body.from) +
    " to " + dateTime(answer.body.to) + ": that time counts as authorised in every report.", true);
  return { ok: true, body: answer.body };
}

// The authorisations `list` as a table, each one in force with its **Withdraw**; `after`
// is told each withdrawal's answer once said in `auth-message`.
function authorisationsTable(list, after) {
  const table = el("table", "grid authorisations");
  const head = table.createTHead().insertRow();
  for (const title of ["From", "To", "Who", "Reason", "By", ""]) {
    const th = el("th", "", title);
    th.scope = "col";
    if (!title) th.append(el("span", "visually-hidden", "Withdraw"));
    head.append(th);
  }
  const body = table.createTBody();
  for (const a of list) {
    const row = body.insertRow();
    row.dataset.authorisation = a.id;
    if (a.withdrawn_at) row.className = "withdrawn";
    row.insertCell().textContent = dateTime(a.from);
    row.insertCell().textContent = dateTime(a.to);
    row.insertCell().textContent = a.team ? "team " + a.team + " (" + a.agents.length + ")" :
      a.agents.length === 1 ? a.agents[0] : a.agents.length + " agents";
    row.insertCell().textContent = a.reason;
    row.insertCell().textContent = a.created_by +
      (a.withdrawn_at ? "; withdrawn by " + a.withdrawn_by + " " + dateTime(a.withdrawn_at) : "");
    const cell = row.insertCell();
    if (a.withdrawn_at) continue;
    const withdraw = el("button", "action withdraw", "Withdraw");
    withdraw.type = "button";
    withdraw.setAttribute("aria-label", "Withdraw the authorisation from " + dateTime(a.from) + " to " + dateTime(a.to));
    withdraw.onclick = async () => {
      withdraw.disabled = true;
      const done = await call(BASE + "/adherence/authorisations/" + encodeURIComponent(a.id), { method: "DELETE" });
      $("auth-message").textContent = done.ok ? "Withdrawn: it counts no more, for the past too." : problemText(done);
      $("auth-message").className = "message " + (done.ok ? "ok" : "error");
      if (!done.ok) withdraw.disabled = false;
      after(done);
    };
    cell.append(withdraw);
  }
  return table;
}

// ---- the page's frame ----------------------------------------------------------------

// Says the page has drawn what it first loaded (`<body data-ready="1">`), and when, for
// whoever waits for it or measures it (the browser tests).
function markReady() {
  document.body.dataset.ready = "1";
  // Milliseconds from the start of the navigation: how long the first drawing took.
  document.body.dataset.readyMs = String(Math.round(performance.now()));
}

// The tenants the caller may see (`GET /v1/tenants`).
async function tenants() {
  const response = await api("/v1/tenants");
  return response.ok ? response.json() : [];
}

// Marks the page's own link, says who is signed in, offers signing out, and shows the
// action controls to a role that may use them.
function frame() {
  const current = document.querySelector('.console-nav a[data-nav="' + PAGE.page + '"]');
  if (current) current.setAttribute("aria-current", "page");
  if (ROLE === "supervisor" || ROLE === "admin") document.body.classList.add("can-act");
  if (SIGN_IN && ROLE) {
    $("who").textContent = "signed in: " + ROLE;
    $("sign-out").hidden = false;
  } else if (ROLE === "viewer") {
    $("who").textContent = "viewer";
  }
  if (TENANT) {
    $("nav-tenant").textContent = TENANT;
    fetch("/v1/tenants", { credentials: "same-origin", headers: { accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : []))
      .then((tenants) => {
        const t = tenants.find((t) => t.id === TENANT);
        if (t) $("nav-tenant").textContent = t.name;
      })
      .catch(() => {});
  }
}

frame();
