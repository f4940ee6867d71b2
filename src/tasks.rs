//! The tenant a task works for, and the one way wfmd spawns tasks.
//!
//! Each tenant's work (its workers, the requests `/v1/tenants/{id}/…` hands to its
//! routes, the bodies those answer with) runs in the tenant's scope: a task-local that
//! [`crate::telemetry`]'s recorder reads to put a `tenant` label on what the work
//! records. Whatever a task spawns must stay in that scope, so every spawn goes through
//! [`spawn`], [`spawn_in`] or [`spawn_blocking`], which carry the spawner's scope (or
//! its absence) into the new task. `clippy.toml` refuses the plain spawns of tokio and
//! std, so a spawn that would drop the scope fails the lint rather than silently
//! recording a tenant's metrics unlabelled.
//!
//! Only configured tenant ids ever enter a scope: the app sets it from the
//! configuration, never from a request, which keeps the label's values bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::domain::tenant::TenantId;

tokio::task_local! {
    /// `None` in a scope that is explicitly no tenant's (the process's own tasks).
    static TENANT: Option<Arc<str>>;
}

/// The tenant the current task works for, if any.
pub fn current_tenant() -> Option<Arc<str>> {
    TENANT.try_with(Clone::clone).ok().flatten()
}

/// `future`, run in the scope of `tenant` (also while it is dropped).
pub fn in_tenant<F: Future>(tenant: &TenantId, future: F) -> impl Future<Output = F::Output> {
    TENANT.scope(Some(Arc::from(tenant.as_str())), future)
}

/// Runs `f` in the scope of `tenant`.
pub fn sync_in_tenant<R>(tenant: &TenantId, f: impl FnOnce() -> R) -> R {
    TENANT.sync_scope(Some(Arc::from(tenant.as_str())), f)
}

/// `future` in the scope of the current task, wherever it is polled or dropped.
fn carried<F: Future>(future: F) -> impl Future<Output = F::Output> {
    TENANT.scope(current_tenant(), future)
}

/// `tokio::spawn`, keeping the spawner's tenant scope.
#[allow(clippy::disallowed_methods)] // The one place the plain spawn is right.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(carried(future))
}

/// `set.spawn(future)`, keeping the spawner's tenant scope.
#[allow(clippy::disallowed_methods)] // The one place the plain spawn is right.
pub fn spawn_in<T, F>(set: &mut JoinSet<T>, future: F) -> AbortHandle
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    set.spawn(carried(future))
}

/// `tokio::task::spawn_blocking`, keeping the spawner's tenant scope.
#[allow(clippy::disallowed_methods)] // The one place the plain spawn is right.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let tenant = current_tenant();
    tokio::task::spawn_blocking(move || TENANT.sync_scope(tenant, f))
}

/// A response body polled and dropped in the scope of the tenant that made it: the
/// server polls bodies on the connection's task, outside the scope of the request's
/// handler, and a streaming body (the live feed) records metrics while it streams and
/// when it is dropped.
pub struct InScope<B> {
    tenant: Option<Arc<str>>,
    /// `None` once dropped.
    inner: Option<B>,
    /// Counts the body among its tenant's requests under way until it is dropped.
    _request: Option<TaskTrackerToken>,
}

impl<B> InScope<B> {
    /// `body`, in the current task's tenant scope.
    pub fn current(body: B) -> InScope<B> {
        InScope {
            tenant: current_tenant(),
            inner: Some(body),
            _request: None,
        }
    }

    /// The body, counted as a request under way (`request`) until it is dropped: a
    /// stream such as the live feed is one until its client goes.
    pub fn counted(mut self, request: TaskTrackerToken) -> InScope<B> {
        self._request = Some(request);
        self
    }
}

impl<B: Body + Unpin> Body for InScope<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match this.inner.as_mut() {
            Some(inner) => {
                TENANT.sync_scope(this.tenant.clone(), || Pin::new(inner).poll_frame(cx))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for InScope<B> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // Dropped through tokio's scoped future, which sets the scope while it drops
            // what it holds and, unlike `sync_scope`, does not panic when the thread's
            // locals are already gone (a runtime shutting down).
            drop(TENANT.scope(self.tenant.take(), async move { drop(inner) }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;

    fn alpha() -> TenantId {
        "alpha".parse().unwrap()
    }

    fn seen() -> Option<String> {
        current_tenant().map(|t| t.to_string())
    }

    #[tokio::test]
    async fn tasks_spawned_in_a_tenants_scope_work_in_it_and_others_in_none() {
        let (spawned, in_set, blocking) = in_tenant(&alpha(), async {
            let spawned = spawn(async { seen() }).await.unwrap();
            let mut set = JoinSet::new();
            spawn_in(&mut set, async { seen() });
            let in_set = set.join_next().await.unwrap().unwrap();
            let blocking = spawn_blocking(seen).await.unwrap();
            (spawned, in_set, blocking)
        })
        .await;
        let alpha = Some("alpha".to_owned());
        assert_eq!(
            (spawned, in_set, blocking),
            (alpha.clone(), alpha.clone(), alpha)
        );
        assert_eq!(spawn(async { seen() }).await.unwrap(), None);
        assert_eq!(seen(), None, "the scope ends with its future");
    }

    /// A body that notes the tenant it is polled and dropped in.
    struct Noting(Arc<Mutex<Vec<Option<String>>>>);

    impl Body for Noting {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.lock().unwrap().push(seen());
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    impl Drop for Noting {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(seen());
        }
    }

    #[tokio::test]
    async fn a_body_is_polled_and_dropped_in_the_scope_it_was_made_in() {
        let noted = Arc::new(Mutex::new(Vec::new()));
        let body = sync_in_tenant(&alpha(), || InScope::current(Noting(noted.clone())));
        let mut body = Box::pin(body);
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "x");
        drop(body);
        let alpha = Some("alpha".to_owned());
        assert_eq!(*noted.lock().unwrap(), [alpha.clone(), alpha]);
    }
}
