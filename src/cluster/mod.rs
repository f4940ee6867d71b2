//! Several wfmd instances on one PostgreSQL database, each serving every tenant, with
//! one leader per tenant at a time: the only instance that calls the tenant's platform
//! and writes its records.
//!
//! - [`lease`]: the lease row each tenant's leader holds, in a term, until it expires
//!   by the database's clock; taking it over starts a new term, and every write of a
//!   leader proves its term current (the fence, see [`crate::store::InstanceRole`]).
//! - [`leadership`]: the loop each instance runs per tenant to take, renew and give up
//!   that lease, saying when the instance leads.
//! - [`spread`]: an instance leading more tenants than its share hands some over.
//!
//! With SQLite, or without `[ha]`, an instance is its tenants' sole one and none of
//! this runs.

pub mod leadership;
pub mod lease;
pub mod spread;
