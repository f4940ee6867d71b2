// The sign-in page (`/sign-in?next=…`) and the sign-out page (`/sign-out`).
//
// Signing in: the token typed into the password field goes once to POST …/session,
// which answers with the session cookie; the browser then goes back to `next`. The
// token is never stored (no localStorage, no sessionStorage, not kept in the field
// either), and a 401 here means the token was refused, not that a session is missing.
// `next` is followed only to a path of this site, so a link cannot send a freshly
// signed-in browser elsewhere.
"use strict";

const SIGNING_OUT = /\/sign-out$/.test(location.pathname);

// Where to go once signed in: `next` when it is a path of this site, else the
// wallboard of this address.
function nextPage() {
  const next = new URLSearchParams(location.search).get("next");
  if (next && next.startsWith("/") && !next.startsWith("//") && !next.includes("\\")) return next;
  return ROOT + "/";
}

// The session routes answer 401 for a bad token: `fetch` directly, not `api`, which
// would take that for a missing session and come back here.
function sessionRequest(base, method, body) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
  if (body) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(base + "/session", init);
}

async function answerText(response) {
  const problem = await response.json().catch(() => ({}));
  return problem.detail || problem.title || "HTTP " + response.status;
}

function tell(text, ok) {
  const message = $("sign-in-message");
  message.textContent = text;
  message.className = "message " + (ok ? "ok" : "error");
}

async function signInWith(token) {
  let response = await sessionRequest(BASE, "POST", { token });
  if (response.status === 400) {
    // At `/` of a wfmd with several tenants, the session is asked for at a tenant's
    // address; the one the token holds takes it.
    const problem = await response.clone().json().catch(() => ({}));
    for (const tenant of problem.tenants || []) {
      response = await sessionRequest("/v1/tenants/" + encodeURIComponent(tenant), "POST", { token });
      if (response.status !== 404) break;
    }
  }
  return response;
}

async function submit(event) {
  event.preventDefault();
  const field = $("token");
  const token = field.value.trim();
  // Out of the page at once, whatever the answer.
  field.value = "";
  if (!token) {
    tell("Paste a token first; nothing was sent.", false);
    field.focus();
    return;
  }
  $("sign-in").disabled = true;
  tell("Signing in…", true);
  try {
    const response = await signInWith(token);
    if (response.ok) {
      tell("Signed in; going back…", true);
      location.replace(nextPage());
      return;
    }
    if (response.status === 401) tell("That token is not accepted. Nothing was signed in.", false);
    else if (response.status === 404) tell("This wfmd offers no sessions (" + await answerText(response) + ").", false);
    else tell("Cannot sign in: " + await answerText(response), false);
  } catch (e) {
    tell("Cannot reach wfmd: " + e.message, false);
  } finally {
    $("sign-in").disabled = false;
  }
  field.focus();
}

async function signOut() {
  $("signed-out").hidden = false;
  $("heading").textContent = "Sign out";
  document.title = "Sign out · wfmd";
  $("sign-in-again").href = ROOT + "/sign-in?next=" + encodeURIComponent(ROOT + "/");
  try {
    const response = await sessionRequest(BASE, "DELETE");
    $("signed-out-message").textContent = response.ok || response.status === 401
      ? "You are signed out: this browser's session is ended."
      : "Signing out failed: " + await answerText(response);
  } catch (e) {
    $("signed-out-message").textContent = "Cannot reach wfmd: " + e.message;
  }
  markReady();
}

function setup() {
  if (!SIGN_IN) {
    $("no-sign-in").hidden = false;
    $("go-on").href = nextPage();
    markReady();
    return;
  }
  if (SIGNING_OUT) return signOut();
  $("signing-in").hidden = false;
  if (ROLE) {
    $("already").hidden = false;
    $("already").textContent = "This browser is signed in already (as " + ROLE + "); a token given here replaces that session.";
  }
  $("sign-in-form").onsubmit = submit;
  $("token").focus();
  markReady();
}

setup();
