// Reports (`/reports`), first part: the compliance report of a window of days, in the
// time zone chosen, to download as CSV, JSON or HTML (GET …/reports/compliance; the
// links carry the session cookie like any page request). A window that ends before it
// starts, or spans more than the API takes, is said and the links stay as they were.
"use strict";

// The longest window the compliance report takes.
const MOST_DAYS = 366;

function localMidnight(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  return match ? new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : null;
}

function isoDay(date) {
  return date.getFullYear() + "-" + String(date.getMonth() + 1).padStart(2, "0") + "-" +
    String(date.getDate()).padStart(2, "0");
}

function tell(text, ok) {
  $("message").textContent = text;
  $("message").className = "message " + (ok ? "ok" : "error");
}

function makeLinks(event) {
  if (event) event.preventDefault();
  const from = localMidnight($("from").value);
  const last = localMidnight($("to").value);
  const tz = $("tz").value.trim() || ZONE;
  if (!from || !last) return tell("Pick the first and the last day; the downloads stay as they were.", false);
  if (last < from) return tell("The last day is before the first; the downloads stay as they were.", false);
  const to = new Date(last);
  to.setDate(to.getDate() + 1);
  if ((to - from) / 86400000 > MOST_DAYS + 1) {
    return tell("At most " + MOST_DAYS + " days at once; the downloads stay as they were.", false);
  }
  const list = $("downloads");
  list.replaceChildren();
  for (const [format, label] of [["csv", "CSV"], ["json", "JSON"], ["html", "HTML"]]) {
    const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), tz, format });
    const item = el("li");
    const link = el("a", "", label);
    link.href = BASE + "/reports/compliance?" + q;
    link.dataset.format = format;
    item.append(link);
    list.append(item);
  }
  tell("The report of " + isoDay(from) + " to " + isoDay(last) + " (" + tz + "):", true);
}

function main() {
  const today = new Date();
  $("to").value = isoDay(today);
  const week = new Date(today);
  week.setDate(week.getDate() - 6);
  $("from").value = isoDay(week);
  $("tz").value = ZONE;
  $("window").onsubmit = makeLinks;
  makeLinks();
  markReady();
}

main();
