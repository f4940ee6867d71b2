//! Several wfmd instances on one PostgreSQL database, each serving every tenant, with
//! one leader per tenant at a time: the only instance that calls the tenant's platform
//! and writes its records.
//!
//! - [`schema`]: the `wfmd_cluster` schema the instances share across the database's
//!   tenants (the leases, the instances), with its own migrations.
//! - [`lease`]: each tenant's lease (in the shared schema) and term (in the tenant's
//!   own), which every write of a leader proves current (the fence, see
//!   [`crate::store::InstanceRole`]).
//! - [`liveness`]: the session whose end tells the others at once that an instance died.
//! - [`tick`]: the one statement an instance sends at each look at the leases.
//! - [`leadership`]: the keeper of an instance's leases, for all its tenants, saying
//!   to each tenant's worker when the instance leads it.
//! - [`spread`]: the shares of the tenants each instance leads.
//!
//! No statement touches two tenants' schemas: what crosses tenants is in the shared
//! schema alone, and a tenant's term is started in its own schema by a statement of
//! its own. With SQLite, or without `[ha]`, an instance is its tenants' sole one and
//! none of this runs.

pub mod leadership;
pub mod lease;
pub mod liveness;
pub mod schema;
pub mod spread;
pub mod tick;
