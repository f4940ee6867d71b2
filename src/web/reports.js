// Reports (`/reports`): the compliance report of a window of days, in the time zone
// chosen, for every team or one (`team`, an id or a name), shown in the page as a table
// per team (worst adherence first, sortable, each agent linked to its page) and offered
// for download as CSV, JSON or HTML (GET …/reports/compliance; the links carry the
// session cookie like any page request). Analytics: the jobs (GET …/analytics/queries),
// a completed job's results drawn as a chart with names (inline SVG) and offered in each
// format, and a supervisor's new query (POST …/analytics/queries), whose status is
// followed until it finishes. Bad input (a window that ends before it starts, one past
// what the API takes, a zone the browser does not know) is said and nothing is sent.
"use strict";

// The longest window the compliance report and a history query take.
const MOST_DAYS = 366;
// How often a job that is still running is asked about, at first and at most.
const FOLLOW_MS = [500, 5000];

function localMidnight(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  return match ? new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : null;
}

function isoDay(date) {
  return date.getFullYear() + "-" + String(date.getMonth() + 1).padStart(2, "0") + "-" +
    String(date.getDate()).padStart(2, "0");
}

function tell(id, text, ok) {
  $(id).textContent = text;
  $(id).className = "message " + (ok ? "ok" : "error");
}

function knownZone(tz) {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch (e) {
    return false;
  }
}

// The window of the days from `fromId` to `toId` (the last day included), or why not.
function chosenWindow(fromId, toId) {
  const from = localMidnight($(fromId).value);
  const last = localMidnight($(toId).value);
  if (!from || !last) return { error: "Pick the first and the last day" };
  if (last < from) return { error: "The last day is before the first" };
  const to = new Date(last);
  to.setDate(to.getDate() + 1);
  if ((to - from) / 86400000 > MOST_DAYS) return { error: "At most " + MOST_DAYS + " days at once" };
  return { from, to, last };
}

// Why the API refused, in words (its problem+json's detail).
async function refusal(response) {
  let body = {};
  try {
    body = await response.json();
  } catch (e) {
    // Not JSON: the status says enough.
  }
  return problemText({ status: response.status, body });
}

// ---- the compliance report -----------------------------------------------------------

// RFC 4180 rows: quoted fields may hold commas, quotes and line breaks.
function parseCsv(text) {
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n") { row.push(field); rows.push(row); row = []; field = ""; }
    else if (c !== "\r") field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

const REPORT_COLUMNS = [
  ["adherence_pct", "Adherence %"],
  ["transitions", "Transitions"],
  ["rejections", "Rejections"],
  ["idle_seconds", "Idle"],
  ["authorised_seconds", "Authorised"],
  ["unobserved_seconds", "Unobserved"],
];

function cellText(key, value) {
  if (value === "") return "–";
  if (key === "adherence_pct") return Number(value).toFixed(1) + "%";
  if (key.endsWith("_seconds")) return hm(Number(value));
  return value;
}

// Worst first; agents without the figure last (whichever way), then by name.
function sortRows(rows, key, ascending) {
  const figure = (r) => (r[key] === "" ? null : Number(r[key]));
  rows.sort((a, b) => {
    const x = figure(a), y = figure(b);
    if (x === null || y === null) {
      if (x !== y) return x === null ? 1 : -1;
    } else if (x !== y) return ascending ? x - y : y - x;
    return (a.name || a.agent_id).localeCompare(b.name || b.agent_id);
  });
}

function teamTable(team, rows) {
  const box = el("section", "team-report");
  box.dataset.team = team.id || "";
  const heading = el("h3", "", (team.name || team.id || "No team known") + " · " + rows.length +
    " agent" + (rows.length === 1 ? "" : "s"));
  const table = el("table", "grid");
  const head = el("thead");
  const tr = el("tr");
  const agentTh = el("th", "", "Agent");
  agentTh.scope = "col";
  tr.append(agentTh);
  const body = el("tbody");
  let sorted = { key: "adherence_pct", ascending: true };
  const draw = () => {
    sortRows(rows, sorted.key, sorted.ascending);
    body.replaceChildren();
    for (const r of rows) {
      const row = el("tr");
      row.dataset.agent = r.agent_id;
      const cell = el("td");
      const link = el("a", "", r.name || r.agent_id);
      link.href = ROOT + "/agents/" + encodeURIComponent(r.agent_id);
      cell.append(link);
      row.append(cell);
      for (const [key] of REPORT_COLUMNS) row.append(el("td", "num", cellText(key, r[key])));
      body.append(row);
    }
    for (const th of tr.querySelectorAll("th[data-key]")) {
      if (th.dataset.key === sorted.key) th.setAttribute("aria-sort", sorted.ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  };
  for (const [key, label] of REPORT_COLUMNS) {
    const th = el("th", "num");
    th.scope = "col";
    th.dataset.key = key;
    const button = el("button", "", label);
    button.type = "button";
    button.onclick = () => {
      // The first click on a column: its worst (lowest adherence, most of the rest) first.
      if (sorted.key === key) sorted.ascending = !sorted.ascending;
      else sorted = { key, ascending: key === "adherence_pct" };
      draw();
    };
    th.append(button);
    tr.append(th);
  }
  head.append(tr);
  table.append(head, body);
  draw();
  box.append(heading, table);
  return box;
}

function showReport(text) {
  const [header, ...lines] = parseCsv(text);
  const rows = lines.filter((l) => l.length === header.length)
    .map((l) => Object.fromEntries(header.map((h, i) => [h, l[i]])));
  const teams = new Map();
  for (const r of rows) {
    const id = r.team_id || "";
    if (!teams.has(id)) teams.set(id, { id, name: r.team, rows: [] });
    teams.get(id).rows.push(r);
  }
  const ordered = [...teams.values()].sort((a, b) => {
    if (!a.id !== !b.id) return a.id ? -1 : 1;
    return (a.name || a.id).localeCompare(b.name || b.id);
  });
  const box = $("report-tables");
  box.replaceChildren(...ordered.map((t) => teamTable(t, t.rows)));
  const list = $("teams");
  for (const t of ordered) {
    if (t.name && !list.querySelector('option[value="' + CSS.escape(t.name) + '"]')) {
      const option = el("option");
      option.value = t.name;
      list.append(option);
    }
  }
  return rows.length;
}

async function makeReport(event) {
  if (event) event.preventDefault();
  const w = chosenWindow("from", "to");
  if (w.error) return tell("message", w.error + "; nothing was asked and the downloads stay as they were.", false);
  const tz = $("tz").value.trim() || ZONE;
  if (!knownZone(tz)) return tell("message", "There is no time zone " + tz + " (try e.g. Europe/Berlin); nothing was asked.", false);
  const team = $("team").value.trim();
  const params = { from: w.from.toISOString(), to: w.to.toISOString(), tz };
  if (team) params.team = team;
  const list = $("downloads");
  list.replaceChildren();
  for (const [format, label] of [["csv", "CSV"], ["json", "JSON"], ["html", "HTML"]]) {
    const item = el("li");
    const link = el("a", "", label);
    link.href = BASE + "/reports/compliance?" + new URLSearchParams(Object.assign({}, params, { format }));
    link.dataset.format = format;
    item.append(link);
    list.append(item);
  }
  const what = "The report of " + isoDay(w.from) + " to " + isoDay(w.last) + " (" + tz + ")" +
    (team ? " for team " + team : "");
  tell("message", what + ": loading…", true);
  const response = await api(BASE + "/reports/compliance?" + new URLSearchParams(Object.assign({}, params, { format: "csv" })));
  if (!response.ok) return tell("message", what + ": " + (await refusal(response)), false);
  const agents = showReport(await response.text());
  tell("message", what + ": " + agents + " agent" + (agents === 1 ? "" : "s") + ". Download:", true);
}

// ---- analytics -----------------------------------------------------------------------

const Q = { jobs: [], following: new Set(), shown: null };

function jobLabel(job) {
  const q = job.query || {};
  const metrics = (q.metrics || []).map((m) => (typeof m === "string" ? m : m.name + ":" + m.aggregation));
  return job.source + ": " + metrics.join(", ") + (q.dimensions && q.dimensions.length ? " by " + q.dimensions.join(", ") : "") +
    (q.bucket ? " per " + q.bucket : "");
}

function resultsLink(job, format, label) {
  const link = el("a", "", label);
  const q = new URLSearchParams({ format });
  if (format === "html") q.set("tz", $("tz").value.trim() || ZONE);
  link.href = BASE + "/analytics/queries/" + encodeURIComponent(job.job_id) + "/results?" + q;
  link.dataset.format = format;
  return link;
}

function drawJobs() {
  const body = $("jobs-body");
  body.replaceChildren();
  for (const job of Q.jobs) {
    const row = el("tr");
    row.dataset.job = job.job_id;
    row.dataset.status = job.status;
    row.append(el("td", "", job.job_id), el("td", "", jobLabel(job)),
      el("td", "", job.status + (job.error ? ": " + job.error : "")), el("td", "", dateTime(job.created_at)));
    const results = el("td");
    if (job.status === "completed") {
      const show = el("button", "", "Show");
      show.type = "button";
      show.onclick = () => showResults(job);
      results.append(show, " ", resultsLink(job, "csv", "CSV"), " ", resultsLink(job, "json", "JSON"), " ",
        resultsLink(job, "html", "HTML"));
    }
    row.append(results);
    body.append(row);
  }
}

async function loadJobs() {
  const response = await api(BASE + "/analytics/queries");
  if (!response.ok) return tell("q-message", "The jobs could not be listed: " + (await refusal(response)), false);
  Q.jobs = await response.json();
  Q.jobs.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  drawJobs();
}

// Asks about job `id` until it has finished, less often the longer it runs.
async function follow(id, wait) {
  Q.following.add(id);
  const response = await api(BASE + "/analytics/queries/" + encodeURIComponent(id));
  if (response.ok) {
    const job = await response.json();
    const at = Q.jobs.findIndex((j) => j.job_id === id);
    if (at >= 0) Q.jobs[at] = job;
    else Q.jobs.unshift(job);
    drawJobs();
    if (job.status === "completed" || job.status === "failed") {
      Q.following.delete(id);
      tell("q-message", "Job " + id + " " + job.status + (job.status === "completed" ? ": " + job.rows + " rows." : "."), job.status === "completed");
      if (job.status === "completed") showResults(job);
      return;
    }
  }
  setTimeout(() => follow(id, Math.min(wait * 2, FOLLOW_MS[1])), wait);
}

const PALETTE = ["#4fa3ff", "#ffb347", "#7bd389", "#ff6f91", "#c39bff", "#3fd0d0", "#e8e85a", "#ff8a5b"];

function svgEl(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A series' title: each dimension's name where one is known, else its id; the metric.
function seriesTitle(series) {
  const dims = Object.entries(series.dimensions || {}).map(([d, v]) => d + " " + ((series.names || {})[d] || v));
  return dims.concat([series.metric]).join(" · ");
}

function drawChart(results) {
  const series = results.series || [];
  const points = series.flatMap((s) => s.points.filter((p) => p.value !== null));
  const box = $("chart");
  box.replaceChildren();
  const title = el("h3", "", "Results of " + results.job_id);
  box.append(title);
  if (!points.length) return box.append(el("p", "note", "No values in this job's window."));
  const W = 900, H = 300, L = 56, B = 28;
  const times = points.map((p) => Date.parse(p.bucket));
  const [t0, t1] = [Math.min(...times), Math.max(...times)];
  const values = points.map((p) => p.value);
  const [v0, v1] = [Math.min(0, ...values), Math.max(...values)];
  const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - L - 10);
  const y = (v) => H - B - (v1 > v0 ? (v - v0) / (v1 - v0) : 0.5) * (H - B - 10);
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
    "aria-label": "Results of job " + results.job_id + ": " + series.map(seriesTitle).join("; ") });
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#a3b0c2" }),
    svgEl("line", { x1: L, y1: 10, x2: L, y2: H - B, stroke: "#a3b0c2" }),
    svgEl("text", { x: L - 6, y: y(v1) + 4, "text-anchor": "end", fill: "#eef2f7", "font-size": 12 }, String(Math.round(v1 * 100) / 100)),
    svgEl("text", { x: L - 6, y: y(v0) + 4, "text-anchor": "end", fill: "#eef2f7", "font-size": 12 }, String(Math.round(v0 * 100) / 100)),
    svgEl("text", { x: L, y: H - 8, fill: "#eef2f7", "font-size": 12 }, dateTime(new Date(t0).toISOString())),
    svgEl("text", { x: W - 10, y: H - 8, "text-anchor": "end", fill: "#eef2f7", "font-size": 12 }, dateTime(new Date(t1).toISOString())));
  const legend = el("ul", "legend");
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const shown = s.points.filter((p) => p.value !== null);
    const path = shown.map((p, j) => (j ? "L" : "M") + x(Date.parse(p.bucket)).toFixed(1) + " " + y(p.value).toFixed(1)).join(" ");
    const g = svgEl("g", { class: "series" });
    g.dataset.title = seriesTitle(s);
    g.append(svgEl("title", {}, seriesTitle(s)),
      svgEl("path", { d: path, fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": i % 2 ? "6 3" : "none" }));
    for (const p of shown) g.append(svgEl("circle", { cx: x(Date.parse(p.bucket)).toFixed(1), cy: y(p.value).toFixed(1), r: 2.5, fill: colour }));
    svg.append(g);
    const item = el("li");
    const swatch = el("span");
    swatch.style.background = colour;
    item.append(swatch, seriesTitle(s));
    legend.append(item);
  });
  box.append(svg, legend);
}

async function showResults(job) {
  Q.shown = job.job_id;
  const response = await api(BASE + "/analytics/queries/" + encodeURIComponent(job.job_id) + "/results?format=json");
  if (!response.ok) return tell("q-message", "The results of " + job.job_id + " could not be read: " + (await refusal(response)), false);
  drawChart(await response.json());
}

async function startQuery(event) {
  event.preventDefault();
  const w = chosenWindow("q-from", "q-to");
  if (w.error) return tell("q-message", w.error + "; no query was started.", false);
  const metric = $("q-metric").value.trim();
  if (!/^[A-Za-z0-9_.]+:[a-z]+$/.test(metric)) {
    return tell("q-message", "A metric is NAME:AGGREGATION, e.g. transitions:sum; no query was started.", false);
  }
  const dimension = $("q-dimension").value.trim();
  const body = { source: $("q-source").value, metrics: [metric], dimensions: dimension ? [dimension] : [],
    from: w.from.toISOString(), to: w.to.toISOString(), bucket: $("q-bucket").value };
  const response = await api(BASE + "/analytics/queries", { method: "POST", json: body });
  if (response.status !== 202) return tell("q-message", "The query was refused: " + (await refusal(response)), false);
  const id = (await response.json()).job_id;
  tell("q-message", "Job " + id + " started; its results show here when it finishes.", true);
  follow(id, FOLLOW_MS[0]);
}

async function main() {
  const today = new Date();
  const week = new Date(today);
  week.setDate(week.getDate() - 6);
  for (const [from, to] of [["from", "to"], ["q-from", "q-to"]]) {
    $(to).value = isoDay(today);
    $(from).value = isoDay(week);
  }
  const params = new URLSearchParams(location.search);
  $("tz").value = params.get("tz") || ZONE;
  $("team").value = params.get("team") || "";
  $("window").onsubmit = makeReport;
  $("new-query").onsubmit = startQuery;
  await Promise.all([makeReport(), loadJobs()]);
  for (const job of Q.jobs) if (job.status === "queued" || job.status === "running") follow(job.job_id, FOLLOW_MS[0]);
  markReady();
}

main();
