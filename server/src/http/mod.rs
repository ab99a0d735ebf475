//! The HTTP edge, below every other layer: the one error type ([`error::ApiError`]), JSON
//! bodies, cookies, origin and same-site checks, security headers, HTML escaping, and the
//! per-address connection limits. Imports nothing else of the server.

pub mod cookies;
pub mod error;
pub mod headers;
pub mod html;
pub mod limits;
pub mod origin;
