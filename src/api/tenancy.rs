//! Several tenants behind one listener.
//!
//! Each tenant has routes of its own (its [`ApiState`], and a gate that answers 404 to
//! a token that does not hold it). The dispatcher in front picks them by path:
//! - `/v1/tenants/{tenant}/…` is the tenant's `/v1/…`;
//! - `/v1/…` is the only tenant's, or, with several, a 400 naming the choices;
//! - `/v1/tenants` (the list), `/v1/cluster` and everything outside `/v1` (health,
//!   metrics, the OpenAPI document, the wallboard's files) are the process's.
//!
//! Only configured ids are ever looked up: a request names a tenant, it never makes
//! one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Object, RefOr, Required, Response as ApiResponse, Type};

use super::ApiState;
use super::error::{Problem, problem_answers};
use crate::domain::tenant::TenantId;

/// Where the tenants' routes are prefixed; the list of tenants is this path itself.
pub(super) const PREFIX: &str = "/v1/tenants";

/// The routes under `/v1` that are the process's, not a tenant's: they read every
/// tenant the caller holds, and have no copy under `PREFIX`.
pub const PROCESS_PATHS: [&str; 2] = [PREFIX, "/v1/cluster"];

/// The routes under `/v1` that are every tenant's alike (a browser's session stands for
/// a token, whatever tenants it holds): with several tenants, the unprefixed path is
/// the process's rather than a `tenant-required` 400, each tenant has its copy too, and
/// under a tenant that is not served the path is answered as the process's.
const SHARED_PATHS: [&str; 1] = ["/v1/session"];

/// Where a tenant's copy of the `/v1` route `path` (a route template) is addressed:
/// `/v1/tenants/{tenant}/…`; `None` for a route that is the process's, not a tenant's
/// (outside `/v1`, and [`PROCESS_PATHS`]).
pub(super) fn tenant_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/")?;
    (!PROCESS_PATHS.contains(&path)).then(|| format!("{PREFIX}/{{tenant}}/{rest}"))
}

/// One tenant as the API serves it.
#[derive(Clone)]
pub struct ServedTenant {
    pub id: TenantId,
    pub name: String,
    /// `v2` or `incontact`.
    pub dialect: &'static str,
    pub state: ApiState,
    /// The tenant's requests under way (responses being streamed included), so a
    /// tenant removed on reload closes its database only after they finished.
    pub requests: TaskTracker,
}

/// Every tenant, in configuration order: what `GET /v1/tenants` lists and `/readyz`
/// checks.
#[derive(Clone)]
pub struct Directory(pub Arc<[ServedTenant]>);

/// One tenant's routes, and its requests under way.
pub(super) struct TenantRoutes {
    pub id: TenantId,
    pub router: Router,
    pub requests: TaskTracker,
}

/// The routers the dispatcher picks from.
pub(super) struct Dispatch {
    /// Each tenant's routes, in [`Directory`] order.
    pub tenants: Vec<TenantRoutes>,
    /// The process's routes (no tenant check).
    pub process: Router,
}

/// Builds a [`Dispatch`] over a set of tenants; see [`super::router`].
pub(super) type BuildDispatch = dyn Fn(&[ServedTenant]) -> Dispatch + Send + Sync;

/// The tenants the API serves, replaceable while it serves (a SIGHUP adds or removes
/// tenants): the next request is dispatched over the new set, and one under way
/// finishes on the routes it started on.
#[derive(Clone)]
pub struct Routing {
    build: Arc<BuildDispatch>,
    current: Arc<watch::Sender<Arc<Dispatch>>>,
}

impl Routing {
    /// Serves `tenants` (at least one) over `build`'s routes.
    pub(super) fn new(build: Arc<BuildDispatch>, tenants: &[ServedTenant]) -> Routing {
        let (current, _) = watch::channel(Arc::new(build(tenants)));
        Routing {
            build,
            current: Arc::new(current),
        }
    }

    /// From the next request on, serves `tenants` (in this order) instead.
    ///
    /// # Panics
    /// When `tenants` is empty: a daemon serves at least one.
    pub fn serve(&self, tenants: &[ServedTenant]) {
        self.current.send_replace(Arc::new((self.build)(tenants)));
    }

    /// What a request is dispatched over now.
    fn now(&self) -> Arc<Dispatch> {
        self.current.borrow().clone()
    }
}

/// Hands `request` to the routes its path names; see the module's doc.
pub(super) async fn dispatch(State(routing): State<Routing>, request: Request) -> Response {
    let dispatch = routing.now();
    let path = request.uri().path().to_owned();
    let target = if let Some(rest) = path
        .strip_prefix(PREFIX)
        .filter(|rest| rest.starts_with('/'))
    {
        let (id, rest) = rest[1..].split_once('/').unwrap_or((&rest[1..], ""));
        let inner = format!("/v1/{rest}");
        match dispatch
            .tenants
            .iter()
            .find(|tenant| tenant.id.as_str() == id)
        {
            Some(tenant) if !PROCESS_PATHS.contains(&inner.as_str()) => {
                let request = match with_path(request, &inner) {
                    Ok(request) => request,
                    Err(problem) => return problem.into_response(),
                };
                return answer_in(tenant, request).await;
            }
            // Every tenant's alike: answered the same under a tenant that is not served,
            // which tells a stranger nothing either.
            None if SHARED_PATHS.contains(&inner.as_str()) => {
                let request = match with_path(request, &inner) {
                    Ok(request) => request,
                    Err(problem) => return problem.into_response(),
                };
                return dispatch
                    .process
                    .clone()
                    .oneshot(request)
                    .await
                    .into_response();
            }
            // The process's routes have no such path (nor a copy of their own under a
            // tenant): like any path under /v1 that no route has, it is answered 404
            // only to a caller with a token, so a stranger cannot tell a tenant that is
            // served from one that is not (401 for both).
            _ => &dispatch.process,
        }
    } else if (path == "/v1" || path.starts_with("/v1/")) && !PROCESS_PATHS.contains(&path.as_str())
    {
        match dispatch.tenants.as_slice() {
            [only] => return answer_in(only, request).await,
            _ if SHARED_PATHS.contains(&path.as_str()) => &dispatch.process,
            several => {
                let ids: Vec<&str> = several.iter().map(|t| t.id.as_str()).collect();
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "tenant-required",
                    "Name the tenant",
                    format!(
                        "several tenants are served: use {PREFIX}/{{tenant}}{} with one of {}",
                        &path[3..],
                        ids.join(", ")
                    ),
                )
                .with("tenants", &ids)
                .into_response();
            }
        }
    } else {
        &dispatch.process
    };
    target.clone().oneshot(request).await.into_response()
}

/// `request` answered by a tenant's routes in the tenant's scope, which the body keeps
/// while the server streams it: what the tenant's work records carries its `tenant`
/// label (see [`crate::tasks`]).
async fn answer_in(tenant: &TenantRoutes, request: Request) -> Response {
    // Counted from here until the response body is dropped.
    let request_under_way = tenant.requests.token();
    crate::tasks::in_tenant(&tenant.id, async {
        let response = tenant.router.clone().oneshot(request).await.into_response();
        response
            .map(|body| Body::new(crate::tasks::InScope::current(body).counted(request_under_way)))
    })
    .await
}

/// `request` with its path replaced (the query kept).
fn with_path(mut request: Request, path: &str) -> Result<Request, Problem> {
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| Problem::internal(&"a tenant's path did not rewrite to a valid URI"))?;
    *request.uri_mut() = uri;
    Ok(request)
}

/// The 404 of [`super::error::no_such_tenant`], for the `responses(...)` of a route
/// with a `{tenant}`.
pub(super) struct NoSuchTenant;

impl utoipa::IntoResponses for NoSuchTenant {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        problem_answers(&[(404, "No tenant has this id")])
    }
}

/// The `{tenant}` of a route of one tenant's own (the wallboard's `/t/{tenant}`): its
/// `params(...)`, and what its `PathParams` reads.
#[derive(Debug, Deserialize)]
pub(super) struct TenantPath {
    pub tenant: String,
}

impl utoipa::IntoParams for TenantPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![tenant_parameter()]
    }
}

/// The `tenant` parameter of a route under `/v1/tenants/{tenant}` (or `/t/{tenant}`).
pub(super) fn tenant_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("tenant")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("A tenant's id, as `GET /v1/tenants` lists it"))
        .schema(Some(Object::with_type(Type::String)))
        .build()
}
