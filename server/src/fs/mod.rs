//! Files: the served root and API paths ([`paths::Root`]), whose files a request works on
//! ([`space::Space`], [`space::Spaces`]), and notebook files written atomically with their
//! owner's rights ([`files::LocalNotebook`]). One error enum, [`Error`], for a path refused or
//! a file whose space is not found.
//!
//! Uses `storage` (a rewritten notebook keeps its entry in the file index) and `http`.

pub mod files;
pub mod paths;
pub mod space;

use crate::http::error::ApiError;

/// Why a path or a file cannot be placed: a path refused, or a file whose space is not found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid path {0:?}: {1}")]
    InvalidPath(String, &'static str),
    #[error("path {0:?} is outside the served directory")]
    Outside(String),
    #[error("cannot open the owner's home directory")]
    OwnerHome(#[source] std::io::Error),
    #[error("this file is in no one's home directory")]
    NoOnesHome,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidPath(..) => ApiError::bad_request(e.to_string()),
            Error::Outside(..) | Error::NoOnesHome => ApiError::not_found(e.to_string()),
            Error::OwnerHome(ref cause) => ApiError::internal(&e.to_string(), cause),
        }
    }
}
