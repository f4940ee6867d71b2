//! `GET /v1/cluster`: which instances serve the tenants and which one leads each, as
//! the database says (the leases and the instances the instances share, see
//! [`crate::cluster::lease`]): two reads for all the tenants, on any tenant's connection.
//!
//! A process route, like `GET /v1/tenants`: it is not copied under
//! `/v1/tenants/{tenant}/…`, and it shows every tenant the caller's token holds. On
//! SQLite (or before any instance took a tenant's lease) there is no lease to read: a
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
    /// When it last noted itself in the database (RFC 3339, the database's clock). Null
    /// for this instance before it first did (always on SQLite, which has no other
    /// instances).
    pub last_seen_at: Option<String>,
    /// How many of the tenants listed it leads now (`lease_current`).
    pub tenants_led: usize,
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
    /// Whether `leader` leads the tenant now: its lease has not run out and its
    /// holder's process is alive (always true for a sole instance, which needs none).
    pub lease_current: bool,
    /// Why the tenant's lease could not be read (the database is unreachable, say);
    /// absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The cluster as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The instance that answered.
    pub instance_id: String,
    /// Every instance that noted itself in the database (this one always), by id.
    pub instances: Vec<InstanceView>,
    /// The tenants the caller's token holds, in configuration order.
    pub tenants: Vec<TenantLeaderView>,
}

/// The instances serving the tenants and each tenant's leader.
///
/// Read from the database: instances that stopped long ago stay listed with their
/// `last_seen_at` (for a day), and a lease shows its holder until it runs out or its
/// holder's process is gone (`lease_current`).
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
    let visible: Vec<&ServedTenant> = directory.0.iter().filter(|t| caller.holds(&t.id)).collect();
    // Every tenant is in the one database `database.url` names: any of their
    // PostgreSQL stores reads what the instances share. SQLite has no other instances.
    let shared = visible
        .iter()
        .map(|t| &t.state.store)
        .find(|store| store.backend() == Backend::Postgres);
    let (leases, seen) = match shared {
        None => (Ok(BTreeMap::new()), Vec::new()),
        Some(store) => {
            let keys: Vec<String> = visible
                .iter()
                .filter_map(|t| t.state.store.schema().map(str::to_owned))
                .collect();
            match lease::leases_and_instances(store.reader(), &keys).await {
                Ok((leases, seen)) => (Ok(leases.into_iter().collect()), seen),
                Err(error) => {
                    // As with every failure answered, the cause goes to the log only.
                    tracing::warn!(%error, "cannot read the leases and instances for GET /v1/cluster");
                    (Err(()), Vec::new())
                }
            }
        }
    };
    let tenants: Vec<TenantLeaderView> = visible
        .iter()
        .map(|tenant| leader_of(tenant, leases.as_ref().ok(), &this))
        .collect();

    let mut instances: BTreeMap<String, InstanceView> = seen
        .into_iter()
        .map(|seen| {
            let view = InstanceView {
                instance_id: seen.instance_id.clone(),
                advertise_url: seen.advertise_url,
                last_seen_at: instant(seen.last_seen),
                tenants_led: 0,
            };
            (seen.instance_id, view)
        })
        .collect();
    instances
        .entry(this.id.to_string())
        .or_insert_with(|| InstanceView {
            instance_id: this.id.to_string(),
            advertise_url: this.advertise_url.clone(),
            last_seen_at: None,
            tenants_led: 0,
        });
    for tenant in tenants.iter().filter(|t| t.lease_current) {
        if let Some(view) = tenant.leader.as_ref().and_then(|id| instances.get_mut(id)) {
            view.tenants_led += 1;
        }
    }
    Json(ClusterView {
        instance_id: this.id.to_string(),
        instances: instances.into_values().collect(),
        tenants,
    })
}

/// One tenant's leader, from the `leases` read (by the tenant's schema); `None`: they
/// could not be read.
fn leader_of(
    tenant: &ServedTenant,
    leases: Option<&BTreeMap<String, lease::Lease>>,
    this: &ThisInstance,
) -> TenantLeaderView {
    let store = &tenant.state.store;
    let mut view = TenantLeaderView {
        id: tenant.id.to_string(),
        leader: None,
        term: None,
        lease_expires_at: None,
        lease_current: false,
        error: None,
    };
    let held = match (store.backend(), leases) {
        (Backend::Sqlite, _) => None,
        (Backend::Postgres, None) => {
            view.error = Some("the tenant's lease could not be read; the log says why".into());
            return view;
        }
        (Backend::Postgres, Some(leases)) => store.schema().and_then(|key| leases.get(key)),
    };
    match held {
        Some(held) => {
            view.lease_current = held.current();
            view.leader = Some(held.holder.clone());
            view.term = Some(held.term);
            view.lease_expires_at = instant(held.expires_at);
        }
        None if store.role() == InstanceRole::Sole => {
            view.leader = Some(this.id.to_string());
            view.lease_current = true;
        }
        None => {}
    }
    view
}

/// Unix milliseconds (the database's clock) as RFC 3339.
fn instant(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(crate::time::rfc3339)
}
