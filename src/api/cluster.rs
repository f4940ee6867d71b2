//! `GET /v1/cluster`: which instances serve the tenants and which one leads each, as
//! the tenants' databases say (their lease rows and the instances' notes, see
//! [`crate::cluster::lease`]).
//!
//! A process route, like `GET /v1/tenants`: it is not copied under
//! `/v1/tenants/{tenant}/…`, and it reads every tenant the caller's token holds. On
//! SQLite (or before any instance took a tenant's lease) there is no row to read: a
//! tenant whose store is its sole instance's is led by this instance, without a term or
//! an expiry, and this instance is the only one listed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::{Extension, Json};
use chrono::DateTime;
use serde::Serialize;
use utoipa::ToSchema;

use super::Routes;
use super::auth::Caller;
use super::roles::ADMIN;
use super::tenancy::{Directory, ServedTenant};
use crate::cluster::lease;
use crate::config::ha::HaConfig;
use crate::store::{Backend, InstanceRole};

/// This instance as the cluster knows it: its id (`ha.instance_id`, by default the host
/// name and process id) and how the others reach it (`ha.advertise_url`). Computed once
/// per process: the default id holds the process id, and every part of the daemon must
/// name the instance alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisInstance {
    pub id: Arc<str>,
    pub advertise_url: Option<String>,
}

impl ThisInstance {
    /// This instance as `[ha]` names it; without the section (the sole instance), by
    /// the section's default id.
    pub fn from_config(ha: Option<&HaConfig>) -> ThisInstance {
        let default = HaConfig::default();
        let ha = ha.unwrap_or(&default);
        ThisInstance {
            id: Arc::from(ha.instance_id()),
            advertise_url: ha.advertise_url.clone(),
        }
    }
}

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(cluster)]
}

/// An instance serving the tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub instance_id: String,
    /// How the other instances reach it (`ha.advertise_url`); null without one.
    pub advertise_url: Option<String>,
    /// When it last noted itself in a tenant's database (RFC 3339, the database's
    /// clock); the latest over the tenants. Null for this instance before it first did
    /// (always on SQLite, which has no other instances).
    pub last_seen_at: Option<String>,
}

/// A tenant and who leads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantLeaderView {
    /// The tenant's id, as `GET /v1/tenants` lists it.
    pub id: String,
    /// The instance holding the tenant's lease (or the last one to hold it, when
    /// `lease_current` is false); this instance when it is the tenant's sole one (no
    /// lease); null when no instance has taken the lease yet.
    pub leader: Option<String>,
    /// The lease's term: one more at each change of leader. Null without a lease.
    pub term: Option<i64>,
    /// When the lease runs out unless its holder renews it (RFC 3339, the database's
    /// clock). Null without a lease.
    pub lease_expires_at: Option<String>,
    /// Whether `leader` leads the tenant now: its lease has not run out (always true
    /// for a sole instance, which needs none).
    pub lease_current: bool,
    /// Why the tenant's lease could not be read (its database is unreachable, say);
    /// absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The cluster as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The instance that answered.
    pub instance_id: String,
    /// Every instance that noted itself in the tenants' databases (this one always),
    /// by id.
    pub instances: Vec<InstanceView>,
    /// The tenants the caller's token holds, in configuration order.
    pub tenants: Vec<TenantLeaderView>,
}

/// The instances serving the tenants and each tenant's leader.
///
/// Read from each tenant's database: instances there that stopped long ago stay listed
/// with their `last_seen_at`, and a lease shows its holder until it runs out
/// (`lease_current`).
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "operations",
    security(("bearer" = [ADMIN])),
    responses((status = 200, description = "This instance, the instances and each tenant's leader", body = ClusterView))
)]
pub async fn cluster(
    Extension(directory): Extension<Directory>,
    Extension(this): Extension<ThisInstance>,
    caller: Caller,
) -> Json<ClusterView> {
    let visible = directory.0.iter().filter(|t| caller.holds(&t.id));
    let reads = visible.map(|tenant| crate::tasks::in_tenant(&tenant.id, read(tenant, &this)));
    let read = futures::future::join_all(reads).await;

    // The union over the tenants' databases, by id: the latest note of each.
    let mut instances: BTreeMap<String, InstanceView> = BTreeMap::new();
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for seen in read.iter().flat_map(|(_, seen)| seen) {
        if latest
            .get(&seen.instance_id)
            .is_some_and(|at| *at >= seen.last_seen)
        {
            continue;
        }
        latest.insert(seen.instance_id.clone(), seen.last_seen);
        instances.insert(
            seen.instance_id.clone(),
            InstanceView {
                instance_id: seen.instance_id.clone(),
                advertise_url: seen.advertise_url.clone(),
                last_seen_at: instant(seen.last_seen),
            },
        );
    }
    instances
        .entry(this.id.to_string())
        .or_insert_with(|| InstanceView {
            instance_id: this.id.to_string(),
            advertise_url: this.advertise_url.clone(),
            last_seen_at: None,
        });
    Json(ClusterView {
        instance_id: this.id.to_string(),
        instances: instances.into_values().collect(),
        tenants: read.into_iter().map(|(tenant, _)| tenant).collect(),
    })
}

/// One tenant's leader, and the instances its database lists.
async fn read(
    tenant: &ServedTenant,
    this: &ThisInstance,
) -> (TenantLeaderView, Vec<lease::Instance>) {
    let store = &tenant.state.store;
    let mut view = TenantLeaderView {
        id: tenant.id.to_string(),
        leader: None,
        term: None,
        lease_expires_at: None,
        lease_current: false,
        error: None,
    };
    // SQLite has no other instances, and its tables stay empty: nothing to read (the
    // lease's queries read the clock as only PostgreSQL has it).
    let (leadership, instances) = match store.backend() {
        Backend::Sqlite => (Ok(None), Ok(Vec::new())),
        Backend::Postgres => {
            tokio::join!(lease::leadership(store), lease::instances(store))
        }
    };
    match leadership {
        Ok(Some(held)) => {
            view.lease_current = held.current();
            view.leader = Some(held.holder);
            view.term = Some(held.term);
            view.lease_expires_at = instant(held.expires_at);
        }
        Ok(None) => {
            if store.role() == InstanceRole::Sole {
                view.leader = Some(this.id.to_string());
                view.lease_current = true;
            }
        }
        Err(error) => {
            // As with every failure answered, the cause goes to the log only.
            tracing::warn!(%error, "cannot read the tenant's lease for GET /v1/cluster");
            view.error = Some("the tenant's database could not be read; the log says why".into());
        }
    }
    let instances = instances.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read the tenant's instances for GET /v1/cluster");
        Vec::new()
    });
    (view, instances)
}

/// Unix milliseconds (the database's clock) as RFC 3339.
fn instant(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(crate::time::rfc3339)
}
