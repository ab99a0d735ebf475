//! The HTTP edge: the error type, JSON bodies, and connection limits.
pub mod error;
pub mod limits;
