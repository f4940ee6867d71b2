//! The role names of the HTTP API, as handlers write them in `security(...)` and the
//! access table reads them back from the document.

/// Name of the security scheme in the document; handlers write
/// `security(("bearer" = [VIEWER]))`.
pub const BEARER: &str = "bearer";
/// The role names, as handlers write them in `security(...)`: each is the least role
/// the operation needs.
pub const VIEWER: &str = "viewer";
pub const SUPERVISOR: &str = "supervisor";
pub const ADMIN: &str = "admin";
