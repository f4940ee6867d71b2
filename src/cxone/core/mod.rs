//! The HTTP core both platform dialects sit on: the call pipeline (`http`), what an
//! answer means (`classify`) and the 401 circuit breaker (`circuit`). A dialect keeps
//! only its paths, wire types and mappings; how it gets a token (`token`) and reads an
//! error body are all it plugs in.

pub(crate) mod circuit;
pub(crate) mod classify;
pub(crate) mod http;
pub(crate) mod token;
