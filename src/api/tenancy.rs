//! Several tenants behind one listener.
//!
//! One set of routes, with its middleware, serves every tenant and the process: the
//! dispatcher in front picks whose request it is by path and hands the routes that
//! choice with the request ([`TenantScope`]: the tenant's [`ApiState`], which handlers
//! take as [`TenantState`], and the tenant the gate answers 404 for to a token that
//! does not hold it). Built once per process rather than once per tenant: a copy of
//! the routes and their layers (each layer cloned onto each of the 100-odd routes) cost
//! an idle tenant about 0.17 MB, and a reload rebuilt every copy.
//! - `/v1/tenants/{tenant}/…` is the tenant's `/v1/…`;
//! - `/v1/…` is the only tenant's, or, with several, a 400 naming the choices;
//! - `/v1/tenants` (the list), `/v1/cluster` and everything outside `/v1` (health,
//!   metrics, the OpenAPI document, the wallboard's files) are the process's, which
//!   see the first tenant's state and check no tenant.
//!
//! Only configured ids are ever looked up: a request names a tenant, it never makes
//! one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode, Uri};
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

/// Whose request the routes answer: what the dispatcher puts in a request's
/// extensions before handing it to the routes that every tenant shares.
pub struct TenantScope {
    /// The tenant the gate checks the caller holds; `None` on the process's routes.
    pub tenant: Option<TenantId>,
    /// The tenant's state (the first tenant's on the process's routes).
    pub state: ApiState,
}

impl TenantScope {
    /// The scope the dispatcher gave the request of `extensions`; `None` before it did
    /// (a router built without the dispatcher, as some tests do).
    pub fn of(extensions: &Extensions) -> Option<&Arc<TenantScope>> {
        extensions.get::<Arc<TenantScope>>()
    }
}

/// The chosen tenant's [`ApiState`], for a handler: what `State<ApiState>` was when
/// each tenant had routes of its own.
pub struct TenantState(pub ApiState);

impl<S: Send + Sync> FromRequestParts<S> for TenantState {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        TenantScope::of(&parts.extensions)
            .map(|scope| TenantState(scope.state.clone()))
            // Only the dispatcher serves these routes; reaching one without it is a bug.
            .ok_or_else(|| Problem::internal(&"the request reached the routes without a tenant"))
    }
}

/// One tenant as the dispatcher hands it on, and its requests under way.
struct TenantEntry {
    id: TenantId,
    scope: Arc<TenantScope>,
    requests: TaskTracker,
}

/// Which tenants the dispatcher picks from.
struct Dispatch {
    /// Each tenant, in [`Directory`] order.
    tenants: Vec<TenantEntry>,
    /// The process's scope: no tenant check, the first tenant's state.
    process: Arc<TenantScope>,
    directory: Directory,
}

impl Dispatch {
    /// The dispatch over `tenants`, in this order.
    ///
    /// # Panics
    /// When `tenants` is empty: a daemon serves at least one.
    fn over(tenants: &[ServedTenant]) -> Dispatch {
        let first = tenants
            .first()
            .expect("a daemon serves at least one tenant");
        Dispatch {
            tenants: tenants
                .iter()
                .map(|t| TenantEntry {
                    id: t.id.clone(),
                    scope: Arc::new(TenantScope {
                        tenant: Some(t.id.clone()),
                        state: t.state.clone(),
                    }),
                    requests: t.requests.clone(),
                })
                .collect(),
            process: Arc::new(TenantScope {
                tenant: None,
                state: first.state.clone(),
            }),
            directory: Directory(tenants.into()),
        }
    }
}

/// The tenants the API serves, replaceable while it serves (a SIGHUP adds or removes
/// tenants): the next request is dispatched over the new set, and one under way
/// finishes with the tenant it started with. The routes stay the same throughout.
#[derive(Clone)]
pub struct Routing {
    /// Every tenant's and the process's, middleware included (see [`super::router`]).
    routes: Router,
    current: Arc<watch::Sender<Arc<Dispatch>>>,
}

impl Routing {
    /// Serves `tenants` (at least one) over `routes`.
    pub(super) fn new(routes: Router, tenants: &[ServedTenant]) -> Routing {
        let (current, _) = watch::channel(Arc::new(Dispatch::over(tenants)));
        Routing {
            routes,
            current: Arc::new(current),
        }
    }

    /// From the next request on, serves `tenants` (in this order) instead.
    ///
    /// # Panics
    /// When `tenants` is empty: a daemon serves at least one.
    pub fn serve(&self, tenants: &[ServedTenant]) {
        self.current.send_replace(Arc::new(Dispatch::over(tenants)));
    }

    /// What a request is dispatched over now.
    fn now(&self) -> Arc<Dispatch> {
        self.current.borrow().clone()
    }

    /// `request` answered by the routes in `scope`.
    async fn answer(
        &self,
        scope: &Arc<TenantScope>,
        directory: &Directory,
        mut request: Request,
    ) -> Response {
        let extensions = request.extensions_mut();
        extensions.insert(scope.clone());
        extensions.insert(directory.clone());
        self.routes.clone().oneshot(request).await.into_response()
    }
}

/// Hands `request` to the routes, in the scope its path names; see the module's doc.
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
                return answer_in(&routing, tenant, &dispatch.directory, request).await;
            }
            // Every tenant's alike: answered the same under a tenant that is not served,
            // which tells a stranger nothing either.
            None if SHARED_PATHS.contains(&inner.as_str()) => {
                let request = match with_path(request, &inner) {
                    Ok(request) => request,
                    Err(problem) => return problem.into_response(),
                };
                return routing
                    .answer(&dispatch.process, &dispatch.directory, request)
                    .await;
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
            [only] => return answer_in(&routing, only, &dispatch.directory, request).await,
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
    routing.answer(target, &dispatch.directory, request).await
}

/// `request` answered in a tenant's scope, which the body keeps while the server
/// streams it: what the tenant's work records carries its `tenant` label (see
/// [`crate::tasks`]).
async fn answer_in(
    routing: &Routing,
    tenant: &TenantEntry,
    directory: &Directory,
    request: Request,
) -> Response {
    // Counted from here until the response body is dropped.
    let request_under_way = tenant.requests.token();
    crate::tasks::in_tenant(&tenant.id, async {
        let response = routing.answer(&tenant.scope, directory, request).await;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::auth::{ApiTokens, Credentials};
    use crate::api::cluster::ThisInstance;
    use crate::api::{Limits, router};
    use crate::config::Config;

    /// A tenant's state over a fresh SQLite file in `dir`; nothing here calls its
    /// platform.
    async fn state(dir: &std::path::Path) -> ApiState {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.join("wfmd.db").display());
        let services = crate::app::Services::start(&config).await.unwrap();
        let (store, engine) = (services.store, services.engine);
        let judging =
            crate::engine::compliance::JudgingHandle::new(config.compliance.judging().unwrap());
        let bulk_settings = crate::engine::bulk::BulkSettings {
            concurrency: 1,
            agent_list_ttl: Duration::ZERO,
        };
        ApiState {
            engine: engine.clone(),
            store: store.clone(),
            metrics: crate::telemetry::prometheus().build_recorder().handle(),
            sync: None,
            sync_interval: Duration::from_secs(1),
            bulk: crate::engine::bulk::BulkJobs::new(engine.clone(), bulk_settings),
            judging: judging.clone(),
            deferred: crate::engine::deferred::DeferredChanges::new(engine, Duration::ZERO),
            deferrals: super::super::deferrals::DeferralLimit::new(1),
            live: crate::live::Live::new(
                TenantId::default_tenant(),
                store.clone(),
                Default::default(),
            ),
            board: crate::engine::metrics::board_channel().1,
            analytics: crate::engine::analytics::AnalyticsJobs::new(store, judging),
            exports: super::super::exports::Exports::new(&Default::default()),
            forwarding: None,
        }
    }

    fn tenants(state: &ApiState, count: usize) -> Vec<ServedTenant> {
        (1..=count)
            .map(|n| ServedTenant {
                id: format!("t{n}").parse().unwrap(),
                name: format!("Tenant {n}"),
                dialect: "v2",
                state: state.clone(),
                requests: TaskTracker::new(),
            })
            .collect()
    }

    /// Every copy of the routes' middleware holds the credentials (the bearer check's
    /// and the sign-in's), so how many hold them tells how many copies there are.
    #[tokio::test]
    async fn one_set_of_routes_serves_every_tenant_and_every_reload() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let serve = |count: usize| {
            let credentials = Arc::new(Credentials::new(
                ApiTokens::from_config(&[]).unwrap(),
                Duration::from_secs(60),
                &[],
            ));
            let served = router(
                &tenants(&state, count),
                credentials.clone(),
                &Limits::default(),
                ThisInstance::from_config(None),
            );
            (credentials, served)
        };
        let (one, _served) = serve(1);
        let held_for_one = Arc::strong_count(&one);
        assert!(held_for_one > 1, "the routes hold the credentials");

        let (three, (_router, routing)) = serve(3);
        assert_eq!(
            Arc::strong_count(&three),
            held_for_one,
            "three tenants are served by the routes one tenant is"
        );
        routing.serve(&tenants(&state, 6));
        assert_eq!(
            Arc::strong_count(&three),
            held_for_one,
            "a reload keeps the routes"
        );
    }
}
