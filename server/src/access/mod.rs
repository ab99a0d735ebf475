//! Who is asking.
pub mod auth;
pub mod login;
pub mod pam;
