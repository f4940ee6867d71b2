//! The supervisor console's pages over HTTP: the wallboard at `/`, and `/rta`,
//! `/agents/{agent_id}`, `/jobs`, `/exceptions`, `/reports`, `/sign-in` and
//! `/sign-out`, each also under `/t/{tenant}/…` for one tenant of several (the page
//! then reads `/v1/tenants/{tenant}/…` where the other reads `/v1/…`). The pages
//! themselves are [`crate::web`]'s.
//!
//! Pages are open: they hold no data, and their scripts ask the API, which checks the
//! caller. What a page's request proves of its caller (a session cookie, or every
//! caller where no tokens are configured) only decides whether the page shows the
//! controls that change states, and the API refuses a role too weak anyway. Whether a
//! tenant's page is served tells a stranger nothing of which tenants exist (see
//! [`page_served`]).

use axum::Extension;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Routes;
use super::agents::AgentPath;
use super::auth::Caller;
use super::error::{no_such_route, no_such_tenant};
use super::extract::PathParams;
use super::tenancy::{Directory, NoSuchTenant, TenantPath};
use super::validate::valid_agent_id;
use crate::domain::tenant::TenantId;
use crate::web::Page;

/// Whether tokens are configured, so that the pages' callers sign in.
#[derive(Debug, Clone, Copy)]
pub struct SignInNeeded(pub bool);

/// The `[[boards]]` the wallboard page is served with (see
/// [`crate::config::boards::page_definitions`]): the page draws the one its
/// `?board=` names, without asking the API for it.
#[derive(Debug, Clone)]
pub struct Boards(pub std::sync::Arc<str>);

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(wallboard),
        utoipa_axum::routes!(tenant_wallboard),
        utoipa_axum::routes!(tenant_wallboard_slash),
        utoipa_axum::routes!(rta),
        utoipa_axum::routes!(tenant_rta),
        utoipa_axum::routes!(agent),
        utoipa_axum::routes!(tenant_agent),
        utoipa_axum::routes!(jobs),
        utoipa_axum::routes!(tenant_jobs),
        utoipa_axum::routes!(exceptions),
        utoipa_axum::routes!(tenant_exceptions),
        utoipa_axum::routes!(reports),
        utoipa_axum::routes!(tenant_reports),
        utoipa_axum::routes!(sign_in_page),
        utoipa_axum::routes!(tenant_sign_in_page),
        utoipa_axum::routes!(sign_out_page),
        utoipa_axum::routes!(tenant_sign_out_page),
    ]
}

/// `page` as the answer to a request of `caller` (at `tenant`'s address, if given).
fn page_response(
    page: Page,
    tenant: Option<&str>,
    caller: Option<&Caller>,
    SignInNeeded(tokens): SignInNeeded,
) -> Response {
    respond(page, page.render(tenant, caller.map(|c| c.role), tokens))
}

/// `html`, the rendering of `page`, as the answer.
fn respond(page: Page, html: String) -> Response {
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page says whose it is (the role in <body>): one cached for another caller
    // would show the wrong controls.
    headers.insert(header::VARY, HeaderValue::from_static("cookie"));
    // Its own scripts and styles by hash, the API and feed from its own origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page.content_security_policy()),
    );
    response
}

/// Whether `tenant`'s page is served to `caller`. The page is open (it holds no data;
/// its script asks the API, which checks the caller), as `/` is, but whether it is
/// served must not tell a stranger which tenants exist. A caller the API knows (every
/// caller when no tokens are configured) gets it for a tenant served that it holds, and
/// the 404 of an unknown route otherwise, as from the API. A caller without a
/// credential (a browser not signed in) gets it for every well-formed id alike; the
/// page sends it to sign in before it shows anything, and once signed in the API
/// answers 404 for an id the caller does not hold, which the page says.
fn page_served(directory: &Directory, caller: Option<&Caller>, tenant: &str) -> bool {
    match caller {
        Some(caller) => directory
            .0
            .iter()
            .any(|t| t.id.as_str() == tenant && caller.holds(&t.id)),
        None => tenant.parse::<TenantId>().is_ok(),
    }
}

/// `page` at `tenant`'s address, or the 404 of [`page_served`].
fn tenant_page(
    page: Page,
    directory: &Directory,
    caller: Option<&Caller>,
    tenant: &str,
    settings: SignInNeeded,
) -> Response {
    if !page_served(directory, caller, tenant) {
        return no_such_tenant();
    }
    page_response(page, Some(tenant), caller, settings)
}

/// A console page's two handlers: `$name` at `$path`, and `$tenant_name` at
/// `$tenant_path` (`/t/{tenant}/…`) for one tenant, each with its `#[utoipa::path]`
/// (which needs its path as a literal), the page's `$doc` on both.
macro_rules! console_page {
    (
        $(#[doc = $doc:literal])*
        $name:ident at $path:literal,
        $tenant_name:ident at $tenant_path:literal => $page:expr
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path(
            get,
            path = $path,
            tag = "console",
            security(()),
            responses((status = 200, description = "The page", content_type = "text/html", body = String))
        )]
        pub async fn $name(
            Extension(settings): Extension<SignInNeeded>,
            caller: Option<Extension<Caller>>,
        ) -> Response {
            page_response($page, None, caller.as_deref(), settings)
        }

        $(#[doc = $doc])*
        ///
        /// This is the page for one tenant, reading `/v1/tenants/{tenant}/…`; a tenant not
        /// served or not held is answered as for the wallboard of `/t/{tenant}/`.
        #[utoipa::path(
            get,
            path = $tenant_path,
            tag = "console",
            security(()),
            params(TenantPath),
            responses(
                (status = 200, description = "The page", content_type = "text/html", body = String),
                NoSuchTenant,
            )
        )]
        pub async fn $tenant_name(
            Extension(directory): Extension<Directory>,
            Extension(settings): Extension<SignInNeeded>,
            caller: Option<Extension<Caller>>,
            PathParams(TenantPath { tenant }): PathParams<TenantPath>,
        ) -> Response {
            tenant_page($page, &directory, caller.as_deref(), &tenant, settings)
        }
    };
}

/// The wallboard: skill and queue tiles, agents by state, supervisor actions.
///
/// One self-contained page (no external scripts, styles or fonts), the console's
/// first. Where tokens are configured it sends a caller without a session to
/// `/sign-in`, and opens the feed with a ticket. `?kiosk=1` hides the controls and
/// enlarges the type.
#[utoipa::path(
    get,
    path = "/",
    tag = "live",
    security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub async fn wallboard(
    Extension(settings): Extension<SignInNeeded>,
    Extension(boards): Extension<Boards>,
    caller: Option<Extension<Caller>>,
) -> Response {
    wallboard_page(None, caller.as_deref(), settings, &boards)
}

/// One tenant's wallboard: the page of `/`, reading `/v1/tenants/{tenant}/…`.
///
/// `?kiosk=1` works as on `/`. A tenant not served (or not held by the caller) is the
/// 404 of an unknown route; where tokens are configured, a caller without a credential
/// gets the page for any well-formed id, so it learns nothing of which are served.
#[utoipa::path(
    get,
    path = "/t/{tenant}/",
    tag = "live",
    security(()),
    params(TenantPath),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        NoSuchTenant,
    )
)]
pub async fn tenant_wallboard(
    Extension(directory): Extension<Directory>,
    Extension(settings): Extension<SignInNeeded>,
    Extension(boards): Extension<Boards>,
    caller: Option<Extension<Caller>>,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
) -> Response {
    if !page_served(&directory, caller.as_deref(), &tenant) {
        return no_such_tenant();
    }
    wallboard_page(Some(&tenant), caller.as_deref(), settings, &boards)
}

/// The wallboard with the boards' definitions in it.
fn wallboard_page(
    tenant: Option<&str>,
    caller: Option<&Caller>,
    SignInNeeded(tokens): SignInNeeded,
    Boards(boards): &Boards,
) -> Response {
    let html = Page::Wallboard.render_with_boards(tenant, caller.map(|c| c.role), tokens, boards);
    respond(Page::Wallboard, html)
}

/// `/t/{tenant}` without the slash: redirects to the tenant's wallboard, the query
/// (`?kiosk=1`) kept, so the page's own relative addresses resolve under it.
#[utoipa::path(
    get,
    path = "/t/{tenant}",
    tag = "live",
    security(()),
    params(TenantPath),
    responses(
        (status = 308, description = "To `/t/{tenant}/`, the query kept"),
        NoSuchTenant,
    )
)]
pub async fn tenant_wallboard_slash(
    Extension(directory): Extension<Directory>,
    caller: Option<Extension<Caller>>,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    uri: Uri,
) -> Response {
    if !page_served(&directory, caller.as_deref(), &tenant) {
        return no_such_tenant();
    }
    // A well-formed id is a-z, 0-9 and '-': nothing in it leaves this path.
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::permanent(&format!("/t/{tenant}/{query}")).into_response()
}

console_page! {
    /// Real-time adherence: one row per agent, out of adherence first (longest out first),
    /// live from the feed; filters `?team=&skill=&verdict=out|severe|in|all&q=`.
    rta at "/rta",
    tenant_rta at "/t/{tenant}/rta" => Page::Rta
}

console_page! {
    /// Bulk jobs: the list with live progress, one job's items (`?job=ID`), a new job,
    /// cancel and revert.
    jobs at "/jobs",
    tenant_jobs at "/t/{tenant}/jobs" => Page::Jobs
}

console_page! {
    /// Adherence exceptions to review.
    exceptions at "/exceptions",
    tenant_exceptions at "/t/{tenant}/exceptions" => Page::Exceptions
}

console_page! {
    /// The compliance report and analytics results, shown and downloaded.
    reports at "/reports",
    tenant_reports at "/t/{tenant}/reports" => Page::Reports
}

console_page! {
    /// Sign in where tokens are configured: a token given once becomes a session cookie
    /// (`POST /v1/session`); `?next=` is the page to go back to.
    sign_in_page at "/sign-in",
    tenant_sign_in_page at "/t/{tenant}/sign-in" => Page::SignIn
}

console_page! {
    /// Sign out: ends the session (`DELETE /v1/session`).
    sign_out_page at "/sign-out",
    tenant_sign_out_page at "/t/{tenant}/sign-out" => Page::SignIn
}

/// The `{tenant}` and `{agent_id}` of a tenant's agent page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct TenantAgentPath {
    /// A tenant's id, as `GET /v1/tenants` lists it
    tenant: String,
    /// The platform user id, e.g. u_001
    agent_id: String,
}

/// The 404 of an agent page whose id no agent could have.
struct NoSuchAgentPage;

impl utoipa::IntoResponses for NoSuchAgentPage {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        super::error::problem_answers(&[(
            404,
            "No agent could have this id (an id the platform might have gets the page, \
             which says whether the agent is known)",
        )])
    }
}

/// One agent: schedule against actual for a chosen day of the last 31, the history,
/// the waiting deferred change, exceptions and authorisations, and the actions.
#[utoipa::path(
    get,
    path = "/agents/{agent_id}",
    tag = "console",
    security(()),
    params(AgentPath),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        NoSuchAgentPage,
    )
)]
pub async fn agent(
    Extension(settings): Extension<SignInNeeded>,
    caller: Option<Extension<Caller>>,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
) -> Response {
    if !valid_agent_id(&agent_id) {
        return no_such_route().into_response();
    }
    page_response(Page::Agent, None, caller.as_deref(), settings)
}

/// One agent of one tenant: the page of `/agents/{agent_id}`, reading
/// `/v1/tenants/{tenant}/…`.
#[utoipa::path(
    get,
    path = "/t/{tenant}/agents/{agent_id}",
    tag = "console",
    security(()),
    params(TenantAgentPath),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        NoSuchAgentPage,
    )
)]
pub async fn tenant_agent(
    Extension(directory): Extension<Directory>,
    Extension(settings): Extension<SignInNeeded>,
    caller: Option<Extension<Caller>>,
    PathParams(TenantAgentPath { tenant, agent_id }): PathParams<TenantAgentPath>,
) -> Response {
    if !valid_agent_id(&agent_id) {
        return no_such_route().into_response();
    }
    tenant_page(
        Page::Agent,
        &directory,
        caller.as_deref(),
        &tenant,
        settings,
    )
}
